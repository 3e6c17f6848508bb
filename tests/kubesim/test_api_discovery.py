"""Discovery documents as kubectl and client-go read them (kubesim-reference §3.1)."""

from __future__ import annotations

import kubernetes
import pytest

from tests.kubesim.test_api_support import running_server

KUBECTL_DISCOVERY_ACCEPT = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
)


@pytest.fixture
def api():
    """A fresh API server over a stand-in simulation."""
    with running_server() as running:
        yield running


def _resources(api, path):
    status, body, _ = api.request("GET", path)
    assert status == 200
    assert body["kind"] == "APIResourceList"
    return {r["name"]: r for r in body["resources"]}


def test_version_reports_a_1_3x_server(api):
    version = kubernetes.client.VersionApi(api.api_client()).get_code()
    assert version.major == "1"
    assert version.git_version.startswith("v1.3")
    assert int(version.minor) >= 30


def test_api_and_apis_answer_plain_json_even_for_aggregated_accept(api):
    status, body, headers = api.request("GET", "/api", headers={"Accept": KUBECTL_DISCOVERY_ACCEPT})
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert body["kind"] == "APIVersions"
    assert body["versions"] == ["v1"]
    status, body, _ = api.request("GET", "/apis", headers={"Accept": KUBECTL_DISCOVERY_ACCEPT})
    groups = {g["name"]: g for g in body["groups"]}
    assert {"apps", "policy", "metrics.k8s.io", "coordination.k8s.io"} <= set(groups)
    assert groups["apps"]["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    status, body, _ = api.request("GET", "/apis/apps")
    assert (status, body["kind"], body["name"]) == (200, "APIGroup", "apps")


def test_core_resource_list_has_eviction_with_group_and_version(api):
    resources = _resources(api, "/api/v1")
    eviction = resources["pods/eviction"]
    assert eviction == {"name": "pods/eviction", "singularName": "", "namespaced": True, "kind": "Eviction",
                        "verbs": ["create"], "group": "policy", "version": "v1"}
    assert resources["pods"]["shortNames"] == ["po"]
    assert resources["pods"]["categories"] == ["all"]
    assert resources["pods"]["singularName"] == "pod"
    assert "watch" in resources["pods"]["verbs"]
    assert {"pods/status", "pods/log", "nodes/status"} <= set(resources)
    assert resources["nodes"]["namespaced"] is False


def test_deployment_scale_is_autoscaling_v1(api):
    resources = _resources(api, "/apis/apps/v1")
    scale = resources["deployments/scale"]
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert "deployments/status" in resources
    assert resources["deployments"]["shortNames"] == ["deploy"]


def test_python_client_reads_resource_lists(api):
    core = kubernetes.client.CoreV1Api(api.api_client()).get_api_resources()
    assert any(r.name == "pods/eviction" and r.group == "policy" for r in core.resources)
    groups = kubernetes.client.ApisApi(api.api_client()).get_api_versions()
    assert "policy" in [g.name for g in groups.groups]


def test_metrics_discovery_answers_503_when_metrics_are_down(api):
    assert _resources(api, "/apis/metrics.k8s.io/v1beta1")["nodes"]["kind"] == "NodeMetrics"
    api.sim.metrics_available = False
    status, body, _ = api.request("GET", "/apis/metrics.k8s.io/v1beta1")
    assert status == 503
    assert body["reason"] == "ServiceUnavailable"
    status, _, _ = api.request("GET", "/apis/metrics.k8s.io/v1beta1/nodes")
    assert status == 503


def test_openapi_is_absent_and_unknown_paths_are_status_404(api):
    for path in ("/openapi/v2", "/openapi/v3", "/apis/nope/v1", "/api/v1/widgets"):
        status, body, _ = api.request("GET", path)
        assert status == 404, path
        assert body["kind"] == "Status"
        assert body["reason"] == "NotFound"


def test_protobuf_accept_still_gets_json(api):
    status, body, headers = api.request(
        "GET", "/api/v1/namespaces", headers={"Accept": "application/vnd.kubernetes.protobuf,application/json"})
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert body["kind"] == "NamespaceList"


def test_health_endpoints(api):
    for path in ("/healthz", "/readyz", "/livez"):
        status, body, _ = api.request("GET", path)
        assert (status, body) == (200, "ok")
