"""Node lifecycle: NotReady/Unknown taints, readiness loss, taint eviction, cordon, heartbeats, GPU loss, pod GC."""

from __future__ import annotations

import pytest

from kubesim.clock import parse_rfc3339
from tests.kubesim.test_controllers_support import (
    bare_pod,
    condition,
    deployment,
    deployment_ready,
    events,
    is_ready,
)


def _node(sim, name="l40s-0"):
    return sim.store.get("nodes", "", name)


def _taints(sim, name="l40s-0"):
    return {(t["key"], t["effect"]) for t in _node(sim, name)["spec"].get("taints") or []}


def _ready_pod_on(sim, name, node):
    sim.store.create("pods", bare_pod(name, gpus=1, nodeName=node))
    assert sim.run_until(lambda: is_ready(sim.store.get("pods", "default", name)), timeout=400)


def test_not_ready_taints_node_unreadies_pods_and_evicts_after_300s(sim):
    _ready_pod_on(sim, "victim", "l40s-0")
    sim.fail_node("l40s-0", "NotReady")
    sim.settle()
    ready = condition(_node(sim), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "KubeletNotReady")
    assert {("node.kubernetes.io/not-ready", "NoSchedule"), ("node.kubernetes.io/not-ready", "NoExecute")} <= \
        _taints(sim)
    assert not is_ready(sim.store.get("pods", "default", "victim"))
    sim.advance(290)
    assert not sim.store.get("pods", "default", "victim")["metadata"].get("deletionTimestamp")
    sim.advance(15)
    # NotReady means the kubelet still runs: the evicted pod terminates and disappears.
    sim.advance(10)
    assert sim.store.try_get("pods", "default", "victim") is None
    assert events(sim, "TaintManagerEviction")[0]["message"] == "Marking for deletion Pod default/victim"


def test_unknown_node_turns_unreachable_after_grace_and_pods_stay_terminating(sim):
    _ready_pod_on(sim, "stuck", "l40s-1")
    sim.fail_node("l40s-1", "Unknown")
    sim.advance(30)
    assert condition(_node(sim, "l40s-1"), "Ready")["status"] == "True"  # within the grace period
    sim.advance(15)
    ready = condition(_node(sim, "l40s-1"), "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "NodeStatusUnknown")
    assert all(c["status"] == "Unknown" for c in _node(sim, "l40s-1")["status"]["conditions"])
    assert ("node.kubernetes.io/unreachable", "NoExecute") in _taints(sim, "l40s-1")
    assert not is_ready(sim.store.get("pods", "default", "stuck"))
    sim.advance(400)
    pod = sim.store.get("pods", "default", "stuck")
    assert pod["metadata"].get("deletionTimestamp")  # evicted …
    sim.advance(600)
    assert sim.store.try_get("pods", "default", "stuck") is not None  # … but nobody confirms the kill
    sim.recover_node("l40s-1")
    sim.advance(10)
    assert sim.store.try_get("pods", "default", "stuck") is None
    assert condition(_node(sim, "l40s-1"), "Ready")["status"] == "True"
    assert not any(k.startswith("node.kubernetes.io/") for k, _ in _taints(sim, "l40s-1"))


def test_recovery_restores_pod_readiness_and_removes_taints(sim):
    _ready_pod_on(sim, "survivor", "h100-80gb-0")
    sim.fail_node("h100-80gb-0", "NotReady")
    sim.advance(60)
    assert not is_ready(sim.store.get("pods", "default", "survivor"))
    sim.recover_node("h100-80gb-0")
    sim.settle()
    assert is_ready(sim.store.get("pods", "default", "survivor"))
    assert _taints(sim, "h100-80gb-0") == {("nvidia.com/gpu", "NoSchedule")}


def test_deployment_loses_availability_on_node_failure(sim):
    sim.store.create("deployments", deployment("svc", replicas=3))
    assert sim.run_until(lambda: deployment_ready(sim, "svc"), timeout=600)
    sim.fail_node("l40s-0", "NotReady")
    sim.settle()
    status = sim.store.get("deployments", "default", "svc")["status"]
    assert status["availableReplicas"] == 2
    assert status["unavailableReplicas"] == 1


def test_cordon_adds_and_uncordon_removes_the_unschedulable_taint(sim):
    sim.store.mutate("nodes", "", "l40s-0", lambda n: n["spec"].__setitem__("unschedulable", True))
    sim.settle()
    taint = next(t for t in _node(sim)["spec"]["taints"] if t["key"] == "node.kubernetes.io/unschedulable")
    assert taint["effect"] == "NoSchedule"
    assert "timeAdded" in taint
    sim.store.mutate("nodes", "", "l40s-0", lambda n: n["spec"].__setitem__("unschedulable", False))
    sim.settle()
    assert _taints(sim) == {("nvidia.com/gpu", "NoSchedule")}


def test_heartbeats_every_40_seconds_not_every_tick(sim):
    before = _node(sim)
    sim.advance(10)
    assert _node(sim)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    sim.advance(35)
    beat = parse_rfc3339(condition(_node(sim), "Ready")["lastHeartbeatTime"])
    assert beat > parse_rfc3339(condition(before, "Ready")["lastHeartbeatTime"])
    sim.fail_node("l40s-0", "Unknown")
    sim.advance(120)
    assert parse_rfc3339(condition(_node(sim), "Ready")["lastHeartbeatTime"]) == beat


def test_gpu_degradation_keeps_running_pods_and_blocks_new_ones(sim):
    _ready_pod_on(sim, "running", "l40s-0")
    sim.set_node_gpus("l40s-0", 1)
    sim.settle()
    node = _node(sim)
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert is_ready(sim.store.get("pods", "default", "running"))
    sim.store.create("pods", bare_pod("new", gpus=1, nodeSelector={"kubernetes.io/hostname": "l40s-0"}))
    sim.settle()
    assert "Insufficient nvidia.com/gpu" in condition(sim.store.get("pods", "default", "new"),
                                                      "PodScheduled")["message"]
    sim.set_node_gpus("l40s-0", 8)
    sim.advance(11)
    assert sim.store.get("pods", "default", "new")["spec"]["nodeName"] == "l40s-0"
    with pytest.raises(ValueError, match="cannot exceed"):
        sim.set_node_gpus("l40s-0", 9)


def test_removed_node_has_its_pods_collected(sim):
    _ready_pod_on(sim, "orphan", "l40s-1")
    sim.remove_node("l40s-1")
    sim.settle()
    assert sim.store.try_get("nodes", "", "l40s-1") is None
    assert sim.store.try_get("pods", "default", "orphan") is None


def test_fail_node_validates_its_arguments(sim):
    with pytest.raises(ValueError, match="mode"):
        sim.fail_node("l40s-0", "Exploded")
    with pytest.raises(Exception, match="not found"):
        sim.fail_node("nope", "NotReady")


def test_node_leases_are_renewed_by_heartbeats_and_go_with_the_node(sim):
    lease = sim.store.get("leases", "kube-node-lease", "l40s-0")
    assert lease["spec"]["holderIdentity"] == "l40s-0"
    assert lease["metadata"]["ownerReferences"][0]["kind"] == "Node"
    first = lease["spec"]["renewTime"]
    sim.advance(41)
    assert sim.store.get("leases", "kube-node-lease", "l40s-0")["spec"]["renewTime"] > first
    sim.remove_node("l40s-0")
    sim.settle()
    assert sim.store.try_get("leases", "kube-node-lease", "l40s-0") is None


def test_node_state_changes_are_recorded_as_events(sim):
    sim.store.mutate("nodes", "", "l40s-0", lambda n: n["spec"].__setitem__("unschedulable", True))
    sim.fail_node("l40s-0", "NotReady")
    sim.settle()
    sim.recover_node("l40s-0")
    sim.settle()
    reasons = [e["reason"] for e in sim.store.list("events", "default")[0]
               if e["involvedObject"]["name"] == "l40s-0"]
    assert reasons.count("NodeNotSchedulable") == 1
    assert "NodeNotReady" in reasons
    assert "NodeReady" in reasons
