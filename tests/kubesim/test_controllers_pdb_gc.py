"""PDB status, cascading deletion with all three propagation policies, and namespace deletion."""

from __future__ import annotations

from kubesim.clock import rfc3339
from tests.kubesim.test_controllers_support import (
    bare_pod,
    condition,
    deployment,
    deployment_ready,
    pods,
)


def _pdb(name, selector, **spec):
    return {"metadata": {"name": name}, "spec": {"selector": {"matchLabels": selector}, **spec}}


def _status(sim, name):
    return sim.store.get("poddisruptionbudgets", "default", name)["status"]


def test_pdb_status_with_min_available_and_max_unavailable(sim):
    sim.store.create("deployments", deployment("web", replicas=3, gpus=1))
    assert sim.run_until(lambda: deployment_ready(sim, "web"), timeout=600)
    sim.store.create("poddisruptionbudgets", _pdb("min2", {"app": "web"}, minAvailable=2))
    sim.store.create("poddisruptionbudgets", _pdb("max-pct", {"app": "web"}, maxUnavailable="34%"))
    sim.store.create("poddisruptionbudgets", _pdb("min-pct", {"app": "web"}, minAvailable="100%"))
    sim.settle()
    status = _status(sim, "min2")
    assert (status["expectedPods"], status["currentHealthy"], status["desiredHealthy"],
            status["disruptionsAllowed"]) == (3, 3, 2, 1)
    assert status["observedGeneration"] == 1
    assert condition(sim.store.get("poddisruptionbudgets", "default", "min2"), "DisruptionAllowed")[
        "reason"] == "SufficientPods"
    status = _status(sim, "max-pct")  # 34 % of 3 rounds up to 2 unavailable
    assert (status["expectedPods"], status["desiredHealthy"], status["disruptionsAllowed"]) == (3, 1, 2)
    status = _status(sim, "min-pct")
    assert status["disruptionsAllowed"] == 0
    assert condition(sim.store.get("poddisruptionbudgets", "default", "min-pct"), "DisruptionAllowed")[
        "reason"] == "InsufficientPods"


def test_disrupted_pods_do_not_count_and_expire_after_two_minutes(sim):
    sim.store.create("deployments", deployment("api", replicas=2, gpus=1))
    assert sim.run_until(lambda: deployment_ready(sim, "api"), timeout=600)
    sim.store.create("poddisruptionbudgets", _pdb("budget", {"app": "api"}, minAvailable=1))
    sim.settle()
    victim = pods(sim, app="api")[0]["metadata"]["name"]
    now = sim.clock.now()

    def disrupt(obj):
        obj["status"]["disruptedPods"] = {victim: rfc3339(now)}
        obj["status"]["disruptionsAllowed"] = 0

    sim.store.mutate("poddisruptionbudgets", "default", "budget", disrupt)
    sim.settle()
    status = _status(sim, "budget")
    assert status["currentHealthy"] == 1
    assert status["disruptionsAllowed"] == 0
    assert victim in status["disruptedPods"]
    sim.advance(121)
    status = _status(sim, "budget")
    assert "disruptedPods" not in status
    assert status["currentHealthy"] == 2


def test_background_cascade_deletes_replicasets_and_pods(sim):
    sim.store.create("deployments", deployment("bg", replicas=2, gpus=1))
    sim.advance(200)
    sim.store.delete("deployments", "default", "bg")
    sim.settle()
    assert sim.store.list("replicasets", "default")[0] == []
    assert all(p["metadata"].get("deletionTimestamp") for p in pods(sim, app="bg"))
    sim.advance(10)
    assert pods(sim, app="bg") == []


def test_foreground_cascade_keeps_owner_until_dependents_are_gone(sim):
    sim.store.create("deployments", deployment("fg", replicas=2, gpus=1))
    sim.advance(200)
    sim.store.delete("deployments", "default", "fg", propagation_policy="Foreground")
    sim.settle()
    owner = sim.store.get("deployments", "default", "fg")
    assert "foregroundDeletion" in owner["metadata"]["finalizers"]
    assert sim.store.list("replicasets", "default")[0]  # still waiting for its pods
    sim.advance(10)
    assert pods(sim, app="fg") == []
    assert sim.store.list("replicasets", "default")[0] == []
    assert sim.store.try_get("deployments", "default", "fg") is None


def test_orphan_deletion_keeps_dependents_without_owner(sim):
    sim.store.create("deployments", deployment("orph", replicas=1, gpus=1))
    sim.settle()
    sim.store.delete("deployments", "default", "orph", propagation_policy="Orphan")
    sim.settle()
    assert sim.store.try_get("deployments", "default", "orph") is None
    (rs,) = sim.store.list("replicasets", "default")[0]
    assert "ownerReferences" not in rs["metadata"]
    assert len(pods(sim, app="orph")) == 1


def test_namespace_deletion_empties_then_removes_it(sim):
    sim.store.create("namespaces", {"metadata": {"name": "team"}})
    sim.store.create("deployments", deployment("inside", replicas=1, gpus=1), namespace="team")
    sim.advance(200)
    assert sim.store.list("pods", "team")[0]
    sim.store.delete("namespaces", "", "team")
    sim.settle()
    assert sim.store.get("namespaces", "", "team")["status"]["phase"] == "Terminating"
    sim.advance(10)
    assert sim.store.list("pods", "team")[0] == []
    assert sim.store.try_get("namespaces", "", "team") is None


def test_namespace_with_pods_on_an_unreachable_node_stays_terminating(sim):
    sim.store.create("namespaces", {"metadata": {"name": "stuck"}})
    pod = bare_pod("p", gpus=1, nodeName="l40s-0")
    sim.store.create("pods", pod, namespace="stuck")
    sim.advance(200)
    sim.fail_node("l40s-0", "Unknown")
    sim.advance(60)
    sim.store.delete("namespaces", "", "stuck")
    sim.advance(120)
    assert sim.store.get("namespaces", "", "stuck")["status"]["phase"] == "Terminating"
    sim.recover_node("l40s-0")
    sim.advance(10)
    assert sim.store.try_get("namespaces", "", "stuck") is None
