"""The scheduler: GPU fit and bin-packing, taints, selectors, affinity, cordon, messages and retries."""

from __future__ import annotations

import pytest

from kubesim.controllers.scheduler import matches_node_affinity, tolerates
from tests.kubesim.test_controllers_support import (
    bare_pod,
    condition,
    events,
    pods,
)


def _node_of(sim, name):
    return sim.store.get("pods", "default", name)["spec"].get("nodeName")


def _message(sim, name):
    return condition(sim.store.get("pods", "default", name), "PodScheduled")["message"]


def test_gpu_pods_bin_pack_onto_the_fullest_node(sim):
    sim.store.create("pods", bare_pod("a", gpus=2))
    sim.settle()
    first = _node_of(sim, "a")
    for name in ("b", "c", "d"):
        sim.store.create("pods", bare_pod(name, gpus=2))
    sim.settle()
    assert {_node_of(sim, n) for n in "abcd"} == {first}  # 4 × 2 GPUs fill one 8-GPU node
    sim.store.create("pods", bare_pod("e", gpus=2))
    sim.settle()
    assert _node_of(sim, "e") != first
    scheduled = condition(sim.store.get("pods", "default", "a"), "PodScheduled")
    assert scheduled["status"] == "True"
    assert any(e["message"] == f"Successfully assigned default/a to {first}" for e in events(sim, "Scheduled"))


def test_cpu_pods_spread_with_least_allocated(sim):
    for name in ("x", "y", "z"):
        sim.store.create("pods", bare_pod(name, gpus=0, cpu="16"))
        sim.settle()
    assert len({_node_of(sim, n) for n in "xyz"}) == 3


def test_gpus_are_never_overcommitted_and_message_is_exact(sim):
    sim.store.create("pods", bare_pod("nine", gpus=9))
    sim.settle()
    pod = sim.store.get("pods", "default", "nine")
    assert pod["spec"].get("nodeName") is None
    scheduled = condition(pod, "PodScheduled")
    assert scheduled["reason"] == "Unschedulable"
    assert scheduled["message"] == (
        "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: "
        "3 No preemption victims found for incoming pod."
    )


def test_mixed_reasons_are_counted_and_sorted(sim):
    sim.add_nodes("3xnvidia-a10g:1")
    nodes = sorted(n["metadata"]["name"] for n in sim.store.list("nodes")[0])
    sim.store.mutate("nodes", "", "l40s-0", lambda n: n["spec"].__setitem__("unschedulable", True))
    sim.settle()
    pod = bare_pod("picky", gpus=2)
    pod["spec"]["tolerations"] = []  # does not tolerate the GPU taint
    sim.store.create("pods", pod)
    sim.settle()
    assert len(nodes) == 6
    assert _message(sim, "picky") == (
        "0/6 nodes are available: 1 node(s) were unschedulable, "
        "5 node(s) had untolerated taint {nvidia.com/gpu: present}. "
        "preemption: 0/6 nodes are available: 6 Preemption is not helpful for scheduling."
    )
    tolerant = bare_pod("tolerant", gpus=2)
    sim.store.create("pods", tolerant)
    sim.settle()
    assert _node_of(sim, "tolerant") in {"l40s-1", "h100-80gb-0"}


def test_failed_scheduling_event_is_aggregated_and_pod_retried_when_cluster_changes(sim):
    sim.store.create("pods", bare_pod("waiting", gpus=16))
    sim.settle()
    (event,) = events(sim, "FailedScheduling")
    assert event["count"] == 1
    assert event["type"] == "Warning"
    assert event["reportingComponent"] == "default-scheduler"
    sim.advance(301)  # the periodic flush retries unschedulable pods
    (event,) = events(sim, "FailedScheduling")
    assert event["count"] == 2
    sim.add_nodes("1xnvidia-h100-80gb:16")
    sim.advance(11)
    assert _node_of(sim, "waiting") == "h100-80gb-1"


def test_retry_after_a_pod_is_deleted(sim):
    for name in ("one", "two", "three"):
        sim.store.create("pods", bare_pod(name, gpus=8))
    sim.store.create("pods", bare_pod("four", gpus=8))
    sim.settle()
    assert _node_of(sim, "four") is None
    sim.store.delete("pods", "default", "one", grace_period_seconds=0)
    sim.advance(2)
    assert _node_of(sim, "four") is not None


def test_node_selector_and_required_affinity(sim):
    pod = bare_pod("h100-only", gpus=1)
    pod["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": "nvidia-h100-80gb"}
    sim.store.create("pods", pod)
    affinity = bare_pod("big-memory", gpus=1)
    affinity["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "nvidia.com/gpu.memory", "operator": "Gt",
                                                     "values": ["50000"]}]}]}}}
    sim.store.create("pods", affinity)
    nowhere = bare_pod("nowhere", gpus=1)
    nowhere["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": "nvidia-b200"}
    sim.store.create("pods", nowhere)
    sim.settle()
    assert _node_of(sim, "h100-only") == "h100-80gb-0"
    assert _node_of(sim, "big-memory") == "h100-80gb-0"
    assert _message(sim, "nowhere").startswith(
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.")


class _Node:
    def __init__(self, labels, name="n1"):
        self.labels, self.name = labels, name


@pytest.mark.parametrize(("operator", "values", "labels", "expected"), [
    ("In", ["a", "b"], {"k": "a"}, True),
    ("In", ["a"], {"k": "c"}, False),
    ("NotIn", ["a"], {"k": "c"}, True),
    ("NotIn", ["a"], {}, True),
    ("Exists", [], {"k": ""}, True),
    ("DoesNotExist", [], {"k": "x"}, False),
    ("Gt", ["5"], {"k": "8"}, True),
    ("Lt", ["5"], {"k": "8"}, False),
    ("Gt", ["5"], {"k": "eight"}, False),
])
def test_node_affinity_operators(operator, values, labels, expected):
    pod = {"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": operator, "values": values}]}]}}}}}
    assert matches_node_affinity(pod, _Node(labels)) is expected


@pytest.mark.parametrize(("toleration", "taint", "expected"), [
    ({"operator": "Exists"}, {"key": "a", "value": "b", "effect": "NoSchedule"}, True),
    ({"key": "a", "operator": "Equal", "value": "b"}, {"key": "a", "value": "b", "effect": "NoExecute"}, True),
    ({"key": "a", "value": "c"}, {"key": "a", "value": "b", "effect": "NoSchedule"}, False),
    ({"key": "a", "operator": "Exists", "effect": "NoExecute"}, {"key": "a", "effect": "NoSchedule"}, False),
    ({"key": "", "operator": "Equal"}, {"key": "a", "effect": "NoSchedule"}, False),
])
def test_toleration_matching(toleration, taint, expected):
    assert tolerates(toleration, taint) is expected


def test_cordoned_node_gets_no_new_pods_until_uncordoned(sim):
    for name in ("l40s-0", "l40s-1", "h100-80gb-0"):
        sim.store.mutate("nodes", "", name, lambda n: n["spec"].__setitem__("unschedulable", True))
    sim.settle()
    sim.store.create("pods", bare_pod("blocked", gpus=1))
    sim.settle()
    assert _message(sim, "blocked").startswith("0/3 nodes are available: 3 node(s) were unschedulable.")
    sim.store.mutate("nodes", "", "l40s-1", lambda n: n["spec"].__setitem__("unschedulable", False))
    sim.advance(2)
    assert _node_of(sim, "blocked") == "l40s-1"


def test_ties_go_to_the_first_node_by_name(sim):
    sim.add_nodes("3xnvidia-a10g:1")
    sim.store.create("pods", bare_pod("tie", gpus=1, nodeSelector={"nvidia.com/gpu.product": "nvidia-a10g"}))
    sim.settle()
    assert _node_of(sim, "tie") == "a10g-0"


def test_too_many_pods(sim):
    sim.store.mutate("nodes", "", "l40s-0", lambda n: n["status"]["allocatable"].__setitem__("pods", "1"))
    sim.store.mutate("nodes", "", "l40s-1", lambda n: n["status"]["allocatable"].__setitem__("pods", "1"))
    sim.store.mutate("nodes", "", "h100-80gb-0", lambda n: n["status"]["allocatable"].__setitem__("pods", "1"))
    for name in ("p1", "p2", "p3", "p4"):
        sim.store.create("pods", bare_pod(name))
    sim.settle()
    unscheduled = [p for p in pods(sim) if not p["spec"].get("nodeName")]
    assert len(unscheduled) == 1
    assert "3 Too many pods" in condition(unscheduled[0], "PodScheduled")["message"]
