"""Table output as kubectl asks for it (kubesim-reference §3.7)."""

from __future__ import annotations

import pytest

from kubesim.tables import human_duration, pod_status_reason
from tests.kubesim.test_api_support import add_node, deployment_body, pod_body, run_pod, running_server


@pytest.fixture
def api():
    """A fresh API server over a stand-in simulation."""
    with running_server() as running:
        yield running

TABLE_ACCEPT = ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
                "application/json")


@pytest.mark.parametrize(("seconds", "text"), [
    (45, "45s"), (119, "119s"), (200, "3m20s"), (600, "10m"), (1500, "25m"), (5 * 3600 + 600, "5h10m"),
    (20 * 3600, "20h"), (3 * 86400, "3d"), (3 * 86400 + 3600 * 5, "3d5h"), (40 * 86400, "40d"),
    (3 * 365 * 86400, "3y"), (-5, "<invalid>"),
])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def _pod(status: dict, deleting: bool = False, init: int = 0) -> dict:
    meta = {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {"name": "p"}
    spec: dict = {"containers": [{"name": "c"}]}
    if init:
        spec["initContainers"] = [{"name": f"i{n}"} for n in range(init)]
    return {"metadata": meta, "spec": spec, "status": status}


def _cs(state: dict, ready: bool = False, restarts: int = 0) -> dict:
    return {"name": "c", "state": state, "ready": ready, "restartCount": restarts}


@pytest.mark.parametrize(("pod", "reason"), [
    (_pod({"phase": "Pending"}), "Pending"),
    (_pod({"phase": "Pending", "containerStatuses": [_cs({"waiting": {"reason": "ContainerCreating"}})]}),
     "ContainerCreating"),
    (_pod({"phase": "Pending", "containerStatuses": [_cs({"waiting": {"reason": "ImagePullBackOff"}})]}),
     "ImagePullBackOff"),
    (_pod({"phase": "Running", "containerStatuses": [_cs({"waiting": {"reason": "CrashLoopBackOff"}},
                                                          restarts=4)]}), "CrashLoopBackOff"),
    (_pod({"phase": "Running", "containerStatuses": [_cs({"terminated": {"reason": "OOMKilled", "exitCode": 137}})]}),
     "OOMKilled"),
    (_pod({"phase": "Succeeded", "containerStatuses": [_cs({"terminated": {"reason": "Completed",
                                                                           "exitCode": 0}})]}), "Completed"),
    (_pod({"phase": "Running", "containerStatuses": [_cs({"running": {}}, ready=True)]}), "Running"),
    (_pod({"phase": "Running", "containerStatuses": [_cs({"running": {}}, ready=True)]}, deleting=True),
     "Terminating"),
    (_pod({"phase": "Pending", "initContainerStatuses": [
        {"name": "i0", "state": {"terminated": {"exitCode": 0}}, "ready": False, "restartCount": 0},
        {"name": "i1", "state": {"running": {}}, "ready": False, "restartCount": 0}]}, init=2), "Init:1/2"),
])
def test_pod_status_column_follows_print_pod(pod, reason):
    assert pod_status_reason(pod)[0] == reason


def test_node_table_shows_scheduling_disabled_and_roles(api):
    add_node(api.store, "n1")
    add_node(api.store, "n2", ready=False, unschedulable=True)
    status, table, _ = api.request("GET", "/api/v1/nodes?limit=500", headers={"Accept": TABLE_ACCEPT})
    assert status == 200
    assert table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in table["columnDefinitions"]][:5] == ["Name", "Status", "Roles", "Age", "Version"]
    assert {c["name"]: c["priority"] for c in table["columnDefinitions"]}["Internal-IP"] == 1
    rows = {r["cells"][0]: r["cells"] for r in table["rows"]}
    assert rows["n1"][1:3] == ["Ready", "gpu-worker"]
    assert rows["n2"][1] == "NotReady,SchedulingDisabled"
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert table["metadata"]["resourceVersion"] == str(api.store.revision)


def test_pod_table_has_node_column_and_namespace_in_row_object(api):
    add_node(api.store, "n1")
    api.store.create("pods", pod_body("p", node="n1"), "team-a")
    run_pod(api.store, "team-a", "p")
    api.sim.clock.advance_to(api.sim.clock.now() + 200)
    _status, table, _ = api.request("GET", "/api/v1/pods?limit=500", headers={"Accept": TABLE_ACCEPT})
    row = table["rows"][0]
    names = [c["name"] for c in table["columnDefinitions"]]
    cells = dict(zip(names, row["cells"], strict=True))
    assert cells["Ready"] == "1/1"
    assert cells["Status"] == "Running"
    assert cells["Node"] == "n1"
    assert cells["IP"] == "10.244.0.9"
    assert cells["Age"] == "3m20s"
    assert row["object"]["metadata"]["namespace"] == "team-a"


def test_deployment_and_default_tables_and_single_object_table(api):
    api.request("POST", "/apis/apps/v1/namespaces/default/deployments", deployment_body("web", replicas=3))
    status, table, _ = api.request("GET", "/apis/apps/v1/namespaces/default/deployments",
                                   headers={"Accept": TABLE_ACCEPT})
    assert status == 200
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"]
    assert table["rows"][0]["cells"][:4] == ["web", "0/3", 0, 0]
    assert table["rows"][0]["cells"][-1] == "app=web"
    _, single, _ = api.request("GET", "/apis/apps/v1/namespaces/default/deployments/web",
                               headers={"Accept": TABLE_ACCEPT})
    assert (single["kind"], len(single["rows"])) == ("Table", 1)
    _status, default, _ = api.request("GET", "/api/v1/namespaces/default/endpoints", headers={"Accept": TABLE_ACCEPT})
    assert [c["name"] for c in default["columnDefinitions"]] == ["Name", "Endpoints", "Age"]  # printEndpoints
