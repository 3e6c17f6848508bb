"""Best-fit placement: pure function, including fragmentation cases."""

from __future__ import annotations

import pytest

from workers.placement import place_replicas


def test_places_on_the_fullest_node_that_fits():
    placement = place_replicas({"a": 8, "b": 2, "c": 4}, replicas=1, gpus_per_replica=2)
    assert placement.fits
    assert placement.replicas_by_node == {"b": 1}


def test_keeps_whole_nodes_free_for_large_models():
    # Two 1-GPU replicas should fill the partially used node, not break into the empty 8-GPU one.
    placement = place_replicas({"empty": 8, "partial": 3}, replicas=2, gpus_per_replica=1)
    assert placement.replicas_by_node == {"partial": 2}
    # ... so an 8-GPU tensor-parallel replica still fits afterwards.
    after = place_replicas({"empty": 8, "partial": 1}, replicas=1, gpus_per_replica=8)
    assert after.replicas_by_node == {"empty": 1}


def test_spreads_over_nodes_when_one_is_full():
    placement = place_replicas({"a": 4, "b": 4}, replicas=3, gpus_per_replica=2)
    assert placement.fits
    assert sum(placement.replicas_by_node.values()) == 3
    assert sorted(placement.replicas_by_node.values()) == [1, 2]


def test_fragmentation_reports_largest_block():
    # 6 GPUs free in total but no node has 4 together: a 4-GPU replica does not fit.
    placement = place_replicas({"a": 3, "b": 3}, replicas=1, gpus_per_replica=4)
    assert not placement.fits
    assert placement.shortfall is not None
    assert placement.shortfall.free_total == 6
    assert placement.shortfall.largest_block == 3
    assert placement.shortfall.placed_replicas == 0


def test_partial_fit_is_a_shortfall_not_a_partial_placement():
    placement = place_replicas({"a": 8, "b": 1}, replicas=3, gpus_per_replica=4)
    assert not placement.fits
    assert placement.shortfall.placed_replicas == 2
    assert placement.shortfall.replicas == 3


def test_ties_break_on_node_name_for_determinism():
    assert place_replicas({"n2": 4, "n1": 4}, 1, 4).replicas_by_node == {"n1": 1}


def test_zero_replicas_always_fit_and_negative_free_is_treated_as_zero():
    assert place_replicas({"a": -2}, 0, 1).fits
    assert not place_replicas({"a": -2}, 1, 1).fits


def test_rejects_non_positive_gpus():
    with pytest.raises(ValueError, match="gpus_per_replica"):
        place_replicas({"a": 8}, 1, 0)
