"""Deployment and ReplicaSet controllers: hashes, owner references, rolling updates, Recreate, scaling."""

from __future__ import annotations

import json

import pytest

from kubesim.controllers.deployment import template_hash
from kubesim.controllers.replicaset import deletion_rank
from tests.kubesim.test_controllers_support import (
    condition,
    deployment,
    deployment_ready,
    events,
    is_ready,
    pods,
)


def _replicasets(sim, app):
    return [rs for rs in sim.store.list("replicasets", "default")[0] if rs["metadata"]["labels"].get("app") == app]


def test_deployment_creates_hashed_replicaset_and_pods_that_become_ready(sim):
    sim.store.create("deployments", deployment("llama", replicas=2))
    sim.settle()
    (rs,) = _replicasets(sim, "llama")
    pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"llama-{pod_hash}"
    assert rs["spec"]["selector"]["matchLabels"]["pod-template-hash"] == pod_hash
    owner = rs["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Deployment", "llama", True)
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    created = pods(sim, app="llama")
    assert len(created) == 2
    for pod in created:
        assert pod["metadata"]["generateName"] == f"{rs['metadata']['name']}-"
        assert pod["metadata"]["name"].startswith(rs["metadata"]["name"] + "-")
        assert pod["metadata"]["labels"]["pod-template-hash"] == pod_hash
        assert pod["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
    assert not deployment_ready(sim, "llama")
    assert sim.run_until(lambda: deployment_ready(sim, "llama"), timeout=600)
    status = sim.store.get("deployments", "default", "llama")["status"]
    assert status["readyReplicas"] == 2
    assert condition(sim.store.get("deployments", "default", "llama"), "Progressing")["reason"] == \
        "NewReplicaSetAvailable"
    assert condition(sim.store.get("deployments", "default", "llama"), "Available")["status"] == "True"


def test_template_hash_is_stable_and_uses_the_safe_alphabet():
    template = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    first = template_hash(template)
    assert first == template_hash(dict(template))
    assert set(first) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert template_hash(template, collision_count=1) != first


def test_rolling_update_replaces_pods_within_surge_and_unavailability(sim):
    sim.store.create("deployments", deployment("small", replicas=4, gpus=1))
    assert sim.run_until(lambda: deployment_ready(sim, "small"), timeout=600)

    def change(obj):
        obj["spec"]["template"]["spec"]["containers"][0]["image"] = "vllm/vllm-openai:v0.7.0"

    sim.store.mutate("deployments", "default", "small", change)
    sim.settle()
    # replicas 4, 25 %: maxSurge 1, maxUnavailable 1 → at most 5 pods, at least 3 available.
    seen_max = 0
    for _ in range(400):
        active = [p for p in pods(sim, app="small") if not p["metadata"].get("deletionTimestamp")]
        seen_max = max(seen_max, len(active))
        assert sum(1 for p in active if is_ready(p)) >= 3
        if deployment_ready(sim, "small") and len(_replicasets(sim, "small")) == 2:
            break
        sim.advance(5)
    assert deployment_ready(sim, "small")
    assert seen_max <= 5
    new_rs = max(_replicasets(sim, "small"), key=lambda r: r["metadata"]["annotations"][
        "deployment.kubernetes.io/revision"])
    assert new_rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert new_rs["spec"]["replicas"] == 4
    old_rs = next(r for r in _replicasets(sim, "small") if r is not new_rs)
    assert old_rs["spec"]["replicas"] == 0
    dep = sim.store.get("deployments", "default", "small")
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert events(sim, "ScalingReplicaSet")


def test_recreate_removes_old_pods_before_creating_new_ones(sim):
    sim.store.create("deployments", deployment("big", replicas=3, strategy={"type": "Recreate"}))
    assert sim.run_until(lambda: deployment_ready(sim, "big"), timeout=600)

    def restart(obj):
        obj["spec"]["template"]["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "now"}

    sim.store.mutate("deployments", "default", "big", restart)
    sim.settle()
    rss = _replicasets(sim, "big")
    new_rs = max(rss, key=lambda r: r["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
    assert new_rs["spec"]["replicas"] == 0  # old pods are still terminating
    assert all(p["metadata"].get("deletionTimestamp") for p in pods(sim, app="big"))
    sim.advance(10)  # terminationGracePeriodSeconds 30 × 0.2
    assert sim.store.get("replicasets", "default", new_rs["metadata"]["name"])["spec"]["replicas"] == 3
    # The GPU-full cluster fits the three new pods only because the old ones are gone.
    assert sim.run_until(lambda: deployment_ready(sim, "big"), timeout=600)


def test_gpu_rolling_restart_deadlocks_with_default_surge(sim):
    sim.store.create("deployments", deployment("full", replicas=3))
    assert sim.run_until(lambda: deployment_ready(sim, "full"), timeout=600)

    def restart(obj):
        obj["spec"]["template"]["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "t1"}

    sim.store.mutate("deployments", "default", "full", restart)
    sim.advance(900)
    pending = [p for p in pods(sim, app="full") if not p["spec"].get("nodeName")]
    assert len(pending) == 1
    scheduled = condition(pending[0], "PodScheduled")
    assert scheduled["status"] == "False"
    assert scheduled["reason"] == "Unschedulable"
    assert scheduled["message"].startswith("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    failed = events(sim, "FailedScheduling")
    assert failed
    assert failed[0]["involvedObject"]["name"] == pending[0]["metadata"]["name"]
    assert failed[0]["type"] == "Warning"
    assert failed[0]["source"]["component"] == "default-scheduler"
    dep = sim.store.get("deployments", "default", "full")
    assert condition(dep, "Progressing")["reason"] == "ProgressDeadlineExceeded"
    assert condition(dep, "Progressing")["status"] == "False"
    assert dep["status"]["updatedReplicas"] == 1
    assert dep["status"]["availableReplicas"] == 3


def test_max_surge_zero_restarts_a_full_gpu_cluster(sim):
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    sim.store.create("deployments", deployment("safe", replicas=3, strategy=strategy))
    assert sim.run_until(lambda: deployment_ready(sim, "safe"), timeout=600)

    def restart(obj):
        obj["spec"]["template"]["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "t1"}

    sim.store.mutate("deployments", "default", "safe", restart)
    assert sim.run_until(lambda: deployment_ready(sim, "safe") and len(pods(sim, app="safe")) == 3, timeout=1800)
    assert all(p["metadata"]["labels"]["pod-template-hash"] == template_hash(
        sim.store.get("deployments", "default", "safe")["spec"]["template"]) for p in pods(sim, app="safe"))


def test_scale_down_prefers_unscheduled_then_not_ready_then_newest(sim):
    sim.store.create("deployments", deployment("pref", replicas=2))
    assert sim.run_until(lambda: deployment_ready(sim, "pref"), timeout=600)
    # Scale to 4: one more fits (the third node), one stays Pending; both new pods are not ready.
    sim.store.mutate("deployments", "default", "pref", lambda d: d["spec"].__setitem__("replicas", 4))
    sim.advance(5)
    before = pods(sim, app="pref")
    unscheduled = [p["metadata"]["name"] for p in before if not p["spec"].get("nodeName")]
    loading = [p["metadata"]["name"] for p in before if p["spec"].get("nodeName") and not is_ready(p)]
    assert len(unscheduled) == 1
    assert len(loading) == 1
    sim.store.mutate("deployments", "default", "pref", lambda d: d["spec"].__setitem__("replicas", 3))
    sim.settle()
    gone = {p["metadata"]["name"] for p in before} - {
        p["metadata"]["name"] for p in pods(sim, app="pref") if not p["metadata"].get("deletionTimestamp")}
    assert gone == set(unscheduled)
    sim.store.mutate("deployments", "default", "pref", lambda d: d["spec"].__setitem__("replicas", 2))
    sim.settle()
    deleting = [p["metadata"]["name"] for p in pods(sim, app="pref") if p["metadata"].get("deletionTimestamp")]
    assert deleting == loading
    assert events(sim, "SuccessfulDelete")


def test_deletion_rank_orders_by_phase_readiness_and_age():
    def pod(name, node, phase, ready, created, restarts=0):
        conditions = [{"type": "Ready", "status": "True" if ready else "False",
                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        return {"metadata": {"name": name, "creationTimestamp": created},
                "spec": {"nodeName": node} if node else {},
                "status": {"phase": phase, "conditions": conditions,
                           "containerStatuses": [{"restartCount": restarts}]}}

    candidates = [
        pod("ready-old", "n", "Running", True, "2026-01-01T00:00:00Z"),
        pod("ready-new", "n", "Running", True, "2026-01-02T00:00:00Z"),
        pod("unready", "n", "Running", False, "2026-01-01T00:00:00Z"),
        pod("pending", "n", "Pending", False, "2026-01-01T00:00:00Z"),
        pod("unscheduled", None, "Pending", False, "2026-01-01T00:00:00Z"),
    ]
    ordered = [p["metadata"]["name"] for p in sorted(candidates, key=deletion_rank)]
    assert ordered == ["unscheduled", "pending", "unready", "ready-new", "ready-old"]


def test_paused_deployment_does_not_roll_out(sim):
    sim.store.create("deployments", deployment("paused", replicas=1, paused=True))
    sim.settle()
    assert _replicasets(sim, "paused") == []
    dep = sim.store.get("deployments", "default", "paused")
    assert condition(dep, "Progressing")["reason"] == "DeploymentPaused"
    sim.store.mutate("deployments", "default", "paused", lambda d: d["spec"].__setitem__("paused", False))
    sim.settle()
    assert len(_replicasets(sim, "paused")) == 1


def test_revision_history_limit_prunes_old_replicasets(sim):
    sim.store.create("deployments", deployment("hist", replicas=1, gpus=1, revisionHistoryLimit=1))
    sim.settle()
    for revision in range(4):
        def restart(obj, revision=revision):
            obj["spec"]["template"]["metadata"]["annotations"] = {"rev": str(revision)}

        sim.store.mutate("deployments", "default", "hist", restart)
        assert sim.run_until(lambda: deployment_ready(sim, "hist") and len(pods(sim, app="hist")) == 1,
                             timeout=900)
    sim.advance(5)
    rss = _replicasets(sim, "hist")
    assert len(rss) == 2  # the current one and one old revision
    assert max(int(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) for r in rss) == 5


def test_min_ready_seconds_delays_availability(sim):
    sim.store.create("deployments", deployment("slow", replicas=1, gpus=1, minReadySeconds=60))
    assert sim.run_until(lambda: all(is_ready(p) for p in pods(sim, app="slow")), timeout=600)
    status = sim.store.get("deployments", "default", "slow")["status"]
    assert status["readyReplicas"] == 1
    assert "availableReplicas" not in status
    sim.advance(61)
    assert sim.store.get("deployments", "default", "slow")["status"]["availableReplicas"] == 1


@pytest.mark.parametrize(("surge", "unavailable", "replicas", "expected_pods"), [
    ("25%", "25%", 4, 5), ("50%", 0, 3, 5), (0, 1, 2, 2),
])
def test_surge_rounds_up_and_unavailable_rounds_down(sim, surge, unavailable, replicas, expected_pods):
    sim.add_nodes("2xnvidia-l40s:8")
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}
    sim.store.create("deployments", deployment("math", replicas=replicas, gpus=1, strategy=strategy))
    assert sim.run_until(lambda: deployment_ready(sim, "math"), timeout=600)
    sim.store.mutate("deployments", "default", "math", lambda d: d["spec"]["template"]["metadata"].__setitem__(
        "annotations", {"x": "y"}))
    sim.settle()
    active = [p for p in pods(sim, app="math") if not p["metadata"].get("deletionTimestamp")]
    assert len(active) == expected_pods  # replicas + maxSurge, once old pods are counted out


def test_no_stored_version_of_any_object_changes_after_it_is_committed(sim):
    """Controllers write copy-on-write (sharing untouched parts between versions): every version the store ever
    committed must still read as it did then, through a create, a rolling update, a scale and the events."""
    committed: list[tuple[dict, str]] = []
    sim.store.subscribe(lambda event: committed.append((event.obj, json.dumps(event.obj, sort_keys=True))))
    sim.store.create("deployments", deployment("cow", replicas=2, gpus=1))
    assert sim.run_until(lambda: deployment_ready(sim, "cow"), timeout=600)

    def new_image(obj):
        obj["spec"]["template"]["spec"]["containers"][0]["image"] = "vllm/vllm-openai:v0.7.0"

    sim.store.mutate("deployments", "default", "cow", new_image)
    assert sim.run_until(lambda: deployment_ready(sim, "cow") and len(_replicasets(sim, "cow")) == 2, timeout=600)
    sim.store.mutate("deployments", "default", "cow", lambda obj: obj["spec"].update(replicas=3))
    assert sim.run_until(lambda: deployment_ready(sim, "cow"), timeout=600)

    kinds = {obj["kind"] for obj, _ in committed}
    assert {"Deployment", "ReplicaSet", "Pod", "Event"} <= kinds
    changed = [(obj["kind"], obj["metadata"]["name"], obj["metadata"]["resourceVersion"])
               for obj, text in committed if json.dumps(obj, sort_keys=True) != text]
    assert changed == []
