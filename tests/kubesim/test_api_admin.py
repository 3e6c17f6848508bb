"""The /_sim/ admin API through SimAdminClient, and pod logs / metrics routing."""

from __future__ import annotations

import kubernetes
import pytest

from kubesim.admin_client import SimAdminClient, SimAdminError
from tests.kubesim.test_api_support import START, add_node, pod_body, run_pod, running_server


@pytest.fixture
def api():
    """A fresh API server over a stand-in simulation."""
    with running_server() as running:
        yield running


@pytest.fixture
def admin(api):
    return SimAdminClient(api.url)


def test_clock_advance_and_settle(api, admin):
    assert admin.clock() == {"now": START, "virtual": True}
    assert admin.advance(90)["now"] == START + 90
    admin.settle(2)
    assert ("advance", 90.0) in api.sim.calls
    assert ("settle", 2.0) in api.sim.calls
    with pytest.raises(SimAdminError) as caught:
        admin.advance(-1)
    assert caught.value.status == 400


def test_node_operations(api, admin):
    assert admin.add_nodes("2xnvidia-l40s:8") == ["l40s-0", "l40s-1"]
    admin.fail_node("l40s-0", mode="Unknown")
    admin.recover_node("l40s-0")
    admin.set_node_gpus("l40s-1", 6)
    admin.remove_node("l40s-1")
    assert api.sim.calls == [("fail_node", "l40s-0", "Unknown"), ("recover_node", "l40s-0"),
                             ("set_node_gpus", "l40s-1", 6), ("remove_node", "l40s-1")]
    for call, status in ((lambda: admin.fail_node("l40s-0", mode="Sideways"), 400),
                         (lambda: admin.fail_node("ghost"), 404),
                         (lambda: admin.set_node_gpus("l40s-0", -2), 400),
                         (lambda: admin.add_nodes("nonsense"), 400)):
        with pytest.raises(SimAdminError) as caught:
            call()
        assert caught.value.status == status


def test_load_behaviors_and_metrics_switch(api, admin):
    admin.set_load("default", "llama", {"requests_per_second": 5})
    assert admin.loads() == [{"namespace": "default", "deployment": "llama", "load": {"requests_per_second": 5}}]
    with pytest.raises(SimAdminError):
        admin.set_load("default", "llama", {"requests_per_second": "lots"})
    behavior_id = admin.add_pod_behavior({"selector": {"labels": {"app": "x"}}, "failure": "OOMKilled"})
    assert [b["id"] for b in admin.pod_behaviors()] == [behavior_id]
    admin.remove_pod_behavior(behavior_id)
    assert admin.pod_behaviors() == []
    admin.set_metrics_available(False)
    assert api.sim.metrics_available is False
    with pytest.raises(SimAdminError) as caught:
        admin.set_metrics_available("no")  # type: ignore[arg-type]
    assert caught.value.status == 400


def test_faults_and_requests_round_trip(api, admin):
    fault_id = admin.add_fault({"resource": "pods", "verb": "get", "count": 1, "action": {"status": 503}})
    assert admin.faults()[0]["id"] == fault_id
    status, body, _ = api.request("GET", "/api/v1/namespaces/default/pods/x")
    assert (status, body["reason"]) == (503, "ServiceUnavailable")
    assert admin.faults() == []  # count spent
    recorded = admin.requests(method="GET", path="/pods/")
    assert recorded[-1]["status"] == 503
    assert recorded[-1]["fault"] == fault_id
    admin.clear_requests()
    assert admin.requests() == []
    with pytest.raises(SimAdminError) as caught:
        admin.add_fault({"action": {"status": 299}})
    assert caught.value.status == 400
    with pytest.raises(SimAdminError) as caught:
        admin.remove_fault("fault-999")
    assert caught.value.status == 404


def test_snapshot_restore_reset_and_bad_routes(api, admin):
    snapshot = admin.snapshot()
    api.store.create("pods", pod_body("p"), "default")
    admin.restore(snapshot)
    assert api.store.try_get("pods", "default", "p") is None
    admin.add_fault({"action": {"latency": 0}})
    admin.reset()
    assert ("reset",) in api.sim.calls
    assert admin.faults() == []
    status, body, _ = api.request("GET", "/_sim/nothing")
    assert (status, body["error"]) == (404, "no admin route /_sim/nothing")
    status, body, _ = api.request("POST", "/_sim/clock/advance", raw=b"not json")
    assert status == 400
    status, body, _ = api.request("GET", "/_sim/clock/advance")
    assert status == 405


def test_admin_routes_ignore_api_faults(api, admin):
    admin.add_fault({"action": {"status": 500}})
    assert admin.clock()["virtual"] is True
    status, _, _ = api.request("GET", "/api/v1/namespaces")
    assert status == 500


def test_pod_log_reports_vllm_start_up(api):
    add_node(api.store, "n1")
    api.store.create("pods", pod_body("p", node="n1"), "default")
    status, body, _ = api.request("GET", "/api/v1/namespaces/default/pods/p/log")
    assert status == 400
    assert "is waiting to start" in body["message"]
    run_pod(api.store, "default", "p")
    status, text, headers = api.request("GET", "/api/v1/namespaces/default/pods/p/log?container=vllm")
    assert status == 200
    assert headers["Content-Type"] == "text/plain"
    assert "Application startup complete." in text
    status, _, _ = api.request("GET", "/api/v1/namespaces/default/pods/p/log?container=nope")
    assert status == 400


def test_metrics_and_prometheus_routes_delegate(api):
    add_node(api.store, "n1")
    custom = kubernetes.client.CustomObjectsApi(api.api_client())
    nodes = custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
    assert [n["metadata"]["name"] for n in nodes["items"]] == ["n1"]
    status, body, _ = api.request("GET", "/prometheus/api/v1/query?query=DCGM_FI_DEV_GPU_UTIL")
    assert (status, body["status"]) == (200, "success")
    assert {s["metric"]["Hostname"] for s in body["data"]["result"]} == {"n1"}
    status, body, _ = api.request("POST", "/prometheus/api/v1/query", raw=b"query=sum(vllm:num_requests_running)",
                                  content_type="application/x-www-form-urlencoded")
    assert (status, body["data"]["resultType"]) == (200, "vector")
    status, body, _ = api.request("GET", "/prometheus/api/v1/query_range?query=x")
    assert (status, body["status"]) == (404, "error")
