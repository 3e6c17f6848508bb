"""CRUD codes, Status bodies and list shapes, through the official client and raw HTTP (§3.2–§3.5)."""

from __future__ import annotations

import json

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.kubesim.test_api_support import (
    add_node,
    deployment_body,
    pod_body,
    running_server,
)


@pytest.fixture
def api():
    """A fresh API server over a stand-in simulation."""
    with running_server() as running:
        yield running


def _status(exc: ApiException) -> dict:
    return json.loads(exc.body)


def test_create_get_list_pod_with_client(api):
    v1 = kubernetes.client.CoreV1Api(api.api_client())
    created = v1.create_namespaced_pod("default", pod_body("p1", labels={"app": "x"}))
    assert created.metadata.uid
    assert created.status.phase == "Pending"
    assert created.spec.termination_grace_period_seconds == 30
    fetched = v1.read_namespaced_pod("p1", "default")
    assert fetched.metadata.resource_version == created.metadata.resource_version
    listed = v1.list_namespaced_pod("default")
    assert [p.metadata.name for p in listed.items] == ["p1"]
    assert listed.metadata.resource_version == str(api.store.revision)
    everywhere = v1.list_pod_for_all_namespaces()
    assert [p.metadata.namespace for p in everywhere.items] == ["default"]


def test_create_returns_201_and_list_items_carry_no_kind(api):
    status, body, _ = api.request("POST", "/api/v1/namespaces/default/pods", pod_body("p1"))
    assert status == 201
    assert body["kind"] == "Pod"
    status, body, _ = api.request("GET", "/api/v1/namespaces/default/pods")
    assert status == 200
    assert body["kind"] == "PodList"
    assert body["apiVersion"] == "v1"
    assert "kind" not in body["items"][0]
    assert "apiVersion" not in body["items"][0]
    # the stored object is untouched by the list rendering
    status, body, _ = api.request("GET", "/api/v1/namespaces/default/pods/p1")
    assert body["kind"] == "Pod"


def test_missing_object_is_404_status(api):
    apps = kubernetes.client.AppsV1Api(api.api_client())
    with pytest.raises(ApiException) as caught:
        apps.read_namespaced_deployment("ghost", "default")
    body = _status(caught.value)
    assert caught.value.status == 404
    assert body["reason"] == "NotFound"
    assert body["message"] == 'deployments.apps "ghost" not found'
    assert body["details"] == {"name": "ghost", "group": "apps", "kind": "deployments"}


def test_already_exists_and_stale_update_conflict(api):
    apps = kubernetes.client.AppsV1Api(api.api_client())
    created = apps.create_namespaced_deployment("default", deployment_body("web"))
    with pytest.raises(ApiException) as caught:
        apps.create_namespaced_deployment("default", deployment_body("web"))
    assert caught.value.status == 409
    assert _status(caught.value)["reason"] == "AlreadyExists"
    created.spec.replicas = 3
    updated = apps.replace_namespaced_deployment("web", "default", created)
    assert updated.metadata.generation == 2
    created.spec.replicas = 4  # still carries the old resourceVersion
    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_deployment("web", "default", created)
    assert caught.value.status == 409
    body = _status(caught.value)
    assert body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]


def test_put_keeps_status_and_noop_put_keeps_revision(api):
    status, _deployment, _ = api.request("POST", "/apis/apps/v1/namespaces/default/deployments",
                                        deployment_body("web"))
    api.store.mutate("deployments", "default", "web", lambda d: d.__setitem__("status", {"replicas": 2}))
    current = api.request("GET", "/apis/apps/v1/namespaces/default/deployments/web")[1]
    sent = dict(current, status={"replicas": 99})
    status, body, _ = api.request("PUT", "/apis/apps/v1/namespaces/default/deployments/web", sent)
    assert status == 200
    assert body["status"] == {"replicas": 2}
    assert body["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]


def test_gpu_request_without_limit_is_422(api):
    v1 = kubernetes.client.CoreV1Api(api.api_client())
    body = pod_body("gpu")
    body["spec"]["containers"][0]["resources"] = {"requests": {"nvidia.com/gpu": "1"}}
    with pytest.raises(ApiException) as caught:
        v1.create_namespaced_pod("default", body)
    status = _status(caught.value)
    assert caught.value.status == 422
    assert status["reason"] == "Invalid"
    assert status["details"]["causes"][0] == {
        "reason": "FieldValueRequired", "field": "spec.containers[0].resources.limits",
        "message": "Required value: Limit must be set for non overcommitable resources"}


def test_deployment_selector_mismatch_is_422_with_real_message(api):
    body = deployment_body("web")
    body["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    status, result, _ = api.request("POST", "/apis/apps/v1/namespaces/default/deployments", body)
    assert status == 422
    assert result["message"] == (
        'Deployment.apps "web" is invalid: spec.template.metadata.labels: Invalid value: '
        'map[string]string{"app":"other"}: `selector` does not match template `labels`')


def test_bad_names_and_mismatches_are_rejected(api):
    status, body, _ = api.request("POST", "/api/v1/namespaces/default/pods", pod_body("Bad_Name"))
    assert (status, body["reason"]) == (422, "Invalid")
    assert "RFC 1123 subdomain" in body["message"]
    status, body, _ = api.request("POST", "/api/v1/namespaces/default/pods", pod_body("trailing-newline\n"))
    assert (status, body["reason"]) == (422, "Invalid")
    wrong_ns = pod_body("p1")
    wrong_ns["metadata"]["namespace"] = "team-a"
    status, body, _ = api.request("POST", "/api/v1/namespaces/default/pods", wrong_ns)
    assert (status, body["reason"]) == (400, "BadRequest")
    api.request("POST", "/api/v1/namespaces/default/pods", pod_body("p1"))
    status, body, _ = api.request("PUT", "/api/v1/namespaces/default/pods/p1", pod_body("p2"))
    assert status == 400
    assert "does not match the name on the URL" in body["message"]


def test_missing_namespace_wrong_method_and_bad_bodies(api):
    status, body, _ = api.request("POST", "/api/v1/namespaces/nowhere/pods", pod_body("p1"))
    assert (status, body["message"]) == (404, 'namespaces "nowhere" not found')
    status, body, _ = api.request("PUT", "/api/v1/namespaces/default/pods")
    assert (status, body["reason"]) == (405, "MethodNotAllowed")
    status, body, _ = api.request("POST", "/api/v1/namespaces/default/pods", raw=b"{not json")
    assert (status, body["reason"]) == (400, "BadRequest")
    status, body, _ = api.request("POST", "/api/v1/namespaces/default/pods", raw=b"\x0a\x02k8s",
                                  content_type="application/vnd.kubernetes.protobuf")
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")


def test_delete_pod_returns_pod_and_deployment_returns_status(api):
    v1 = kubernetes.client.CoreV1Api(api.api_client())
    add_node(api.store, "l40s-0")
    v1.create_namespaced_pod("default", pod_body("bound", node="l40s-0"))
    deleted = v1.delete_namespaced_pod("bound", "default")
    assert isinstance(deleted, kubernetes.client.V1Pod)
    assert deleted.metadata.deletion_timestamp is not None  # graceful: the kubelet finishes it
    assert deleted.metadata.deletion_grace_period_seconds == 30
    api.request("POST", "/apis/apps/v1/namespaces/default/deployments", deployment_body("web"))
    status, body, _ = api.request("DELETE", "/apis/apps/v1/namespaces/default/deployments/web",
                                  {"propagationPolicy": "Background"})
    assert status == 200
    assert body["kind"] == "Status"
    assert body["status"] == "Success"
    assert body["details"]["name"] == "web"
    assert body["details"]["group"] == "apps"


def test_delete_options_in_query_and_foreground_returns_object(api):
    add_node(api.store, "l40s-0")
    api.request("POST", "/api/v1/namespaces/default/pods", pod_body("bound", node="l40s-0"))
    status, body, _ = api.request("DELETE", "/api/v1/namespaces/default/pods/bound?gracePeriodSeconds=0")
    assert status == 200
    assert api.store.try_get("pods", "default", "bound") is None
    api.request("POST", "/apis/apps/v1/namespaces/default/deployments", deployment_body("web"))
    status, body, _ = api.request("DELETE", "/apis/apps/v1/namespaces/default/deployments/web",
                                  {"propagationPolicy": "Foreground"})
    assert status == 200
    assert body["kind"] == "Deployment"
    assert body["metadata"]["finalizers"] == ["foregroundDeletion"]
    status, body, _ = api.request("DELETE", "/apis/apps/v1/namespaces/default/deployments/web",
                                  {"propagationPolicy": "Sideways"})
    assert status == 400


def test_delete_precondition_uid_mismatch_is_409(api):
    api.request("POST", "/api/v1/namespaces/default/services", {"metadata": {"name": "svc"},
                                                                "spec": {"ports": [{"port": 80}]}})
    status, body, _ = api.request("DELETE", "/api/v1/namespaces/default/services/svc",
                                  {"preconditions": {"uid": "not-the-uid"}})
    assert (status, body["reason"]) == (409, "Conflict")


def test_dry_run_create_writes_nothing(api):
    before = api.store.revision
    status, body, _ = api.request("POST", "/apis/apps/v1/namespaces/default/deployments?dryRun=All",
                                  deployment_body("web"))
    assert status == 201
    assert body["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert api.store.revision == before
    assert api.store.try_get("deployments", "default", "web") is None


def test_delete_collection_by_label(api):
    for name, tier in (("a", "gpu"), ("b", "gpu"), ("c", "cpu")):
        api.request("POST", "/api/v1/namespaces/default/pods", pod_body(name, labels={"tier": tier}))
    status, body, _ = api.request("DELETE", "/api/v1/namespaces/default/pods?labelSelector=tier%3Dgpu")
    assert status == 200
    assert sorted(item["metadata"]["name"] for item in body["items"]) == ["a", "b"]
    remaining = [o["metadata"]["name"] for o in api.store.list("pods")[0]]
    assert remaining == ["c"]


def test_services_get_cluster_ips_and_namespaces_terminate(api):
    v1 = kubernetes.client.CoreV1Api(api.api_client())
    first = v1.create_namespaced_service("default", {"metadata": {"name": "vllm"},
                                                     "spec": {"ports": [{"port": 8000}]}})
    second = v1.create_namespaced_service("default", {"metadata": {"name": "vllm2"},
                                                      "spec": {"ports": [{"port": 8000}]}})
    assert first.spec.type == "ClusterIP"
    assert first.spec.cluster_ip.startswith("10.9")
    assert first.spec.cluster_ip != second.spec.cluster_ip
    v1.create_namespace({"metadata": {"name": "doomed"}})
    v1.delete_namespace("doomed")
    assert v1.read_namespace("doomed").status.phase == "Terminating"
    with pytest.raises(ApiException) as caught:
        v1.create_namespaced_pod("doomed", pod_body("late"))
    assert caught.value.status == 403


def test_load_kube_config_with_written_kubeconfig(tmp_path):
    with running_server() as running:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: kubesim\n  cluster:\n    server: {running.url}\n"
            "users:\n- name: kubesim\n  user:\n    token: kubesim-token\n"
            "contexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    user: kubesim\n"
            "current-context: kubesim\n")
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        namespaces = kubernetes.client.CoreV1Api(client).list_namespace()
        assert {"default", "kube-system"} <= {n.metadata.name for n in namespaces.items}
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        assert configuration.host == running.url
