"""The HPA arithmetic: per-metric ratio with tolerance, missing-data damping, bounds, windows and step caps."""

from __future__ import annotations

import pytest

from workers.hpa import HpaPolicy, MetricSample, prune_history, recommend, replicas_for_metric, stabilize, step_bounds


def policy(**overrides) -> HpaPolicy:
    values = {"min_replicas": 1, "max_replicas": 10}
    values.update(overrides)
    return HpaPolicy(**values)


def test_ratio_scales_up_with_ceiling():
    result = replicas_for_metric(MetricSample("gpu", 60, [90, 90]), 2, 0.1)
    assert result.ratio == pytest.approx(1.5)
    assert result.replicas == 3


def test_within_tolerance_keeps_current():
    result = replicas_for_metric(MetricSample("gpu", 60, [65, 64]), 2, 0.1)
    assert result.replicas == 2


def test_just_outside_tolerance_changes():
    result = replicas_for_metric(MetricSample("gpu", 50, [56, 56, 56, 56]), 4, 0.1)
    assert result.replicas == 5  # ratio 1.12 -> ceil(4.48)


def test_no_data_cannot_vote():
    assert replicas_for_metric(MetricSample("queue", 5, []), 3, 0.1).replicas is None


def test_unready_pods_damp_scale_up():
    # Ready pods ask for 2x, but two starting pods count as 0: (100+0+0)/3/50 = 0.67 -> flips direction, hold.
    result = replicas_for_metric(MetricSample("gpu", 50, [100], unready_replicas=2), 3, 0.1)
    assert result.replicas == 3


def test_unready_pods_count_as_target_on_scale_down():
    # (10 + 50) / 2 / 50 = 0.6 -> ceil(0.6 * 2) = 2: the unknown pod is assumed busy, so only a mild drop.
    result = replicas_for_metric(MetricSample("gpu", 50, [10], unready_replicas=1), 2, 0.1)
    assert result.replicas == 2


def test_max_of_metrics_wins():
    samples = [MetricSample("gpu", 90, [92, 93]), MetricSample("queue", 5, [20, 20])]
    result = recommend(samples, 2, policy())
    assert result.desired_replicas == 6  # queue: 4x -> 8, capped by step (2 + 4 = 6)
    assert "step_cap" in result.limited_by
    assert result.raw_replicas == 8


def test_bounds_apply():
    result = recommend([MetricSample("gpu", 50, [100] * 4)], 4, policy(max_replicas=5))
    assert result.desired_replicas == 5
    assert "max_replicas" in result.limited_by
    no_window = policy(min_replicas=2, scale_down_stabilization_seconds=0)
    result = recommend([MetricSample("gpu", 50, [1] * 4)], 4, no_window)
    assert result.desired_replicas == 2


def test_no_metrics_holds_current():
    result = recommend([MetricSample("gpu", 50, [])], 3, policy())
    assert result.desired_replicas == 3
    assert result.limited_by == ["no_metrics"]


def test_scale_down_waits_for_the_window():
    p = policy(scale_down_stabilization_seconds=300)
    history = [(0.0, 6), (100.0, 2)]
    # At t=200 the window still holds the 6 from t=0: no scale-down below current 6.
    assert stabilize(2, 6, history, 200.0, p) == 6
    # At t=350 the 6 is out of the window; the highest left is 2.
    assert stabilize(2, 6, history, 350.0, p) == 2


def test_scale_up_window_takes_the_minimum():
    p = policy(scale_up_stabilization_seconds=60)
    assert stabilize(8, 2, [(0.0, 3)], 30.0, p) == 3
    assert stabilize(8, 2, [(0.0, 3)], 90.0, p) == 8


def simulate(demands: list[float], p: HpaPolicy, replicas: int = 2) -> list[int]:
    """Replica changes when a fixed total demand (in GPU-%) is spread evenly over the replicas every 30 s."""
    history: list[tuple[float, int]] = []
    changes = []
    for step, demand in enumerate(demands):
        now = step * 30.0
        per_replica = min(demand / replicas, 100.0)
        result = recommend([MetricSample("gpu", 50, [per_replica] * replicas)], replicas, p, history, now)
        history = prune_history([*history, (now, result.raw_replicas)], now, p)
        if result.desired_replicas != replicas:
            changes.append(result.desired_replicas)
            replicas = result.desired_replicas
    return changes


def test_no_flapping_on_oscillating_load():
    p = policy(scale_down_stabilization_seconds=300)
    # Demand alternates between 4 and 1 replicas' worth every 30 s: one scale-up, and the window holds it.
    assert simulate([200, 40] * 5, p) == [4]


def test_scale_down_after_the_window_once_load_stays_low():
    p = policy(scale_down_stabilization_seconds=300)
    # Peak, then low for 12 sweeps (360 s): down only once the peak's recommendation left the window.
    assert simulate([200] + [40] * 12, p) == [4, 1]


def test_step_bounds():
    assert step_bounds(2, policy()) == (0, 6)
    assert step_bounds(10, policy()) == (0, 20)
    assert step_bounds(4, policy(scale_down_max_percent=50)) == (2, 8)


def test_invalid_policy():
    with pytest.raises(ValueError, match="min_replicas"):
        HpaPolicy(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError, match="target"):
        replicas_for_metric(MetricSample("gpu", 0, [1]), 1, 0.1)


def test_inputs_are_serialisable():
    result = recommend([MetricSample("gpu", 50, [80, 80])], 2, policy())
    inputs = result.inputs()
    assert inputs["metrics"][0]["metric"] == "gpu"
    assert inputs["desired_replicas"] == 4
