"""pods/eviction exactly as eviction.go behaves (kubesim-reference §3.8)."""

from __future__ import annotations

import json

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.kubesim.test_api_support import add_node, pod_body, run_pod, running_server


@pytest.fixture
def api():
    """A fresh API server over a stand-in simulation."""
    with running_server() as running:
        yield running

PATH = "/api/v1/namespaces/default/pods/{}/eviction"


def _eviction(name: str, api_version: str = "policy/v1") -> dict:
    return {"apiVersion": api_version, "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}}


def _running_pod(api, name: str, labels: dict | None = None, ready: bool = True) -> None:
    api.store.create("pods", pod_body(name, labels=labels or {"app": "web"}, node="n1"), "default")
    run_pod(api.store, "default", name, ready=ready)


def _pdb(api, name: str, allowed: int, desired: int = 2, current: int = 2, observed: int = 1,
         selector: dict | None = None) -> None:
    api.store.create("poddisruptionbudgets", {
        "metadata": {"name": name},
        "spec": {"minAvailable": desired, "selector": selector if selector is not None else {"matchLabels":
                                                                                             {"app": "web"}}},
    }, "default")

    def status(pdb: dict) -> None:
        pdb["status"] = {"observedGeneration": observed, "disruptionsAllowed": allowed, "desiredHealthy": desired,
                         "currentHealthy": current, "expectedPods": current}

    api.store.mutate("poddisruptionbudgets", "default", name, status)


@pytest.fixture
def node(api):
    add_node(api.store, "n1")


def test_eviction_without_pdb_deletes_and_returns_201(api, node):
    _running_pod(api, "p")
    v1 = kubernetes.client.CoreV1Api(api.api_client())
    result = v1.create_namespaced_pod_eviction("p", "default", _eviction("p"))
    assert result is not None  # the client deserialises the Success Status into an empty V1Eviction
    status, body, _ = api.request("POST", PATH.format("p"), _eviction("p", "policy/v1beta1"))
    assert status == 201
    assert body["status"] == "Success"
    assert api.store.get("pods", "default", "p")["metadata"]["deletionTimestamp"]


def test_eviction_blocked_by_pdb_is_429_with_budget_message(api, node):
    _running_pod(api, "p")
    _pdb(api, "web-pdb", allowed=0, desired=2, current=1)
    v1 = kubernetes.client.CoreV1Api(api.api_client())
    with pytest.raises(ApiException) as caught:
        v1.create_namespaced_pod_eviction("p", "default", _eviction("p"))
    assert caught.value.status == 429
    body = json.loads(caught.value.body)
    assert body["reason"] == "TooManyRequests"
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"] == [{"reason": "DisruptionBudget",
                                          "message": "The disruption budget web-pdb needs 2 healthy pods and has "
                                                     "1 currently"}]
    assert "deletionTimestamp" not in api.store.get("pods", "default", "p")["metadata"]


def test_allowed_eviction_consumes_budget_and_marks_pod(api, node):
    _running_pod(api, "p")
    _pdb(api, "web-pdb", allowed=1, desired=1, current=2)
    status, _, _ = api.request("POST", PATH.format("p"), _eviction("p"))
    assert status == 201
    pdb = api.store.get("poddisruptionbudgets", "default", "web-pdb")
    assert pdb["status"]["disruptionsAllowed"] == 0
    assert "p" in pdb["status"]["disruptedPods"]
    pod = api.store.get("pods", "default", "p")
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 30
    target = [c for c in pod["status"]["conditions"] if c["type"] == "DisruptionTarget"]
    assert target[0]["reason"] == "EvictionByEvictionAPI"


def test_pending_pods_skip_the_pdb_check(api, node):
    api.store.create("pods", pod_body("pending", labels={"app": "web"}), "default")
    _pdb(api, "web-pdb", allowed=0)
    status, _, _ = api.request("POST", PATH.format("pending"), _eviction("pending"))
    assert status == 201
    assert api.store.try_get("pods", "default", "pending") is None


def test_unprocessed_pdb_is_429_and_two_pdbs_are_500(api, node):
    _running_pod(api, "p")
    _pdb(api, "a", allowed=1, observed=0)
    status, body, _ = api.request("POST", PATH.format("p"), _eviction("p"))
    assert status == 429
    assert "still being processed" in body["details"]["causes"][0]["message"]
    _pdb(api, "b", allowed=1)
    status, body, _ = api.request("POST", PATH.format("p"), _eviction("p"))
    assert status == 500
    assert body["message"] == ("This pod has more than one PodDisruptionBudget, which the eviction subresource "
                               "does not support.")


def test_name_mismatch_is_400_and_missing_pod_404(api, node):
    _running_pod(api, "p")
    status, body, _ = api.request("POST", PATH.format("p"), _eviction("q"))
    assert (status, body["message"]) == (400, "name in URL does not match name in Eviction object")
    status, body, _ = api.request("POST", PATH.format("ghost"), _eviction("ghost"))
    assert status == 404


def test_unready_pod_is_evicted_when_budget_is_healthy(api, node):
    _running_pod(api, "sick", ready=False)
    _pdb(api, "web-pdb", allowed=0, desired=1, current=1)
    status, _, _ = api.request("POST", PATH.format("sick"), _eviction("sick"))
    assert status == 201
    assert api.store.get("poddisruptionbudgets", "default", "web-pdb")["status"]["disruptionsAllowed"] == 0
