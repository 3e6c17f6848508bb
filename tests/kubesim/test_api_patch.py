"""Patches (strategic, merge, JSON), and the /status and /scale subresources (§3.3, §3.5)."""

from __future__ import annotations

import json

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from kubesim import errors
from kubesim.patch import json_patch, merge_patch, strategic_merge_patch
from tests.kubesim.test_api_support import add_node, deployment_body, pod_body, running_server


@pytest.fixture
def api():
    """A fresh API server over a stand-in simulation."""
    with running_server() as running:
        yield running

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSONP = "application/json-patch+json"


def test_merge_patch_rfc7386():
    target = {"a": 1, "b": {"c": 2, "d": 3}, "list": [1, 2]}
    assert merge_patch(target, {"b": {"c": None, "e": 4}, "list": [3]}) == {"a": 1, "b": {"d": 3, "e": 4},
                                                                            "list": [3]}
    assert target["b"] == {"c": 2, "d": 3}  # inputs untouched


def test_strategic_merge_by_key_delete_directive_and_finalizer_union():
    target = {"metadata": {"finalizers": ["a"]},
              "spec": {"containers": [{"name": "vllm", "image": "v1", "env": [{"name": "X", "value": "1"}]},
                                      {"name": "sidecar", "image": "s"}],
                       "tolerations": [{"key": "a"}]}}
    patch = {"metadata": {"finalizers": ["b"]},
             "spec": {"$setElementOrder/containers": [{"name": "vllm"}],
                      "containers": [{"name": "vllm", "image": "v2", "env": [{"name": "Y", "value": "2"}]},
                                     {"name": "sidecar", "$patch": "delete"}],
                      "tolerations": [{"key": "b"}]}}
    result = strategic_merge_patch(target, patch)
    assert result["metadata"]["finalizers"] == ["a", "b"]
    assert result["spec"]["containers"] == [{"name": "vllm", "image": "v2",
                                             "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}]
    assert result["spec"]["tolerations"] == [{"key": "b"}]  # atomic list


def test_json_patch_operations_and_failed_test():
    doc = {"spec": {"replicas": 1, "list": ["a"]}, "metadata": {"labels": {"x": "1"}}}
    result = json_patch(doc, [
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/spec/list/-", "value": "b"},
        {"op": "copy", "from": "/metadata/labels/x", "path": "/metadata/labels/y"},
        {"op": "move", "from": "/metadata/labels/x", "path": "/metadata/labels/z"},
        {"op": "remove", "path": "/spec/list/0"},
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/annotations", "value": {"a~b/c": "1"}},
    ])
    assert result == {"spec": {"replicas": 3, "list": ["b"]}, "metadata": {"labels": {"y": "1", "z": "1"},
                                                                        "annotations": {"a~b/c": "1"}}}
    with pytest.raises(errors.ApiError) as caught:
        json_patch(doc, [{"op": "test", "path": "/spec/replicas", "value": 2}])
    assert caught.value.code == 422
    with pytest.raises(errors.ApiError) as caught:
        json_patch(doc, [{"op": "remove", "path": "/spec/missing"}])
    assert caught.value.code == 422


def test_cordon_with_strategic_patch_and_all_three_client_flavours(api):
    add_node(api.store, "n1")
    v1 = kubernetes.client.CoreV1Api(api.api_client())
    node = v1.patch_node("n1", {"spec": {"unschedulable": True}})  # dict body → strategic merge
    assert node.spec.unschedulable is True
    node = v1.patch_node("n1", [{"op": "add", "path": "/metadata/labels/pool", "value": "a"}])  # list → JSON patch
    assert node.metadata.labels["pool"] == "a"
    status, body, _ = api.request("PATCH", "/api/v1/nodes/n1", {"spec": {"unschedulable": None}},
                                  content_type=MERGE)
    assert status == 200
    assert "unschedulable" not in body["spec"]
    assert node.status.conditions[0].type == "Ready"  # main-resource patches keep status


def test_rollout_restart_patch_bumps_generation(api):
    apps = kubernetes.client.AppsV1Api(api.api_client())
    apps.create_namespaced_deployment("default", deployment_body("web"))
    patched = apps.patch_namespaced_deployment("web", "default", {"spec": {"template": {"metadata": {
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-27T10:00:00Z"}}}}})
    assert patched.metadata.generation == 2
    assert patched.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]
    assert patched.spec.template.metadata.labels == {"app": "web"}


def test_patch_errors(api):
    api.request("POST", "/apis/apps/v1/namespaces/default/deployments", deployment_body("web"))
    path = "/apis/apps/v1/namespaces/default/deployments/web"
    status, body, _ = api.request("PATCH", path, {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 5}},
                                  content_type=MERGE)
    assert (status, body["reason"]) == (409, "Conflict")
    status, body, _ = api.request("PATCH", path, [{"op": "test", "path": "/spec/replicas", "value": 99}],
                                  content_type=JSONP)
    assert status == 422
    status, body, _ = api.request("PATCH", path, raw=b"apiVersion: apps/v1",
                                  content_type="application/apply-patch+yaml")
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")
    status, body, _ = api.request("PATCH", path, {"spec": {}}, content_type="text/plain")
    assert status == 415
    status, body, _ = api.request("PATCH", path.replace("web", "ghost"), {"spec": {}}, content_type=MERGE)
    assert (status, body["reason"]) == (404, "NotFound")
    status, body, _ = api.request("PATCH", path, {"spec": {"selector": {"matchLabels": {"app": "x"}}}},
                                  content_type=MERGE)
    assert status == 422
    assert "field is immutable" in body["message"] or "does not match" in body["message"]


def test_pod_spec_is_immutable_except_image(api):
    api.request("POST", "/api/v1/namespaces/default/pods", pod_body("p"))
    path = "/api/v1/namespaces/default/pods/p"
    status, body, _ = api.request("PATCH", path, {"spec": {"containers": [{"name": "vllm", "image": "v2"}]}},
                                  content_type=SMP)
    assert status == 200
    assert body["spec"]["containers"][0]["image"] == "v2"
    status, body, _ = api.request("PATCH", path, {"spec": {"restartPolicy": "Never"}}, content_type=SMP)
    assert status == 422
    assert "pod updates may not change fields" in body["message"]


def test_status_subresource_changes_only_status(api):
    api.request("POST", "/apis/apps/v1/namespaces/default/deployments", deployment_body("web"))
    apps = kubernetes.client.AppsV1Api(api.api_client())
    result = apps.patch_namespaced_deployment_status(
        "web", "default", {"status": {"readyReplicas": 2, "observedGeneration": 1}, "spec": {"replicas": 9}})
    assert result.status.ready_replicas == 2
    assert result.spec.replicas == 2
    current = apps.read_namespaced_deployment_status("web", "default")
    current.status.replicas = 2
    replaced = apps.replace_namespaced_deployment_status("web", "default", current)
    assert replaced.status.replicas == 2
    assert replaced.metadata.generation == 1


def test_scale_subresource_get_put_and_kubectl_merge_patch(api):
    apps = kubernetes.client.AppsV1Api(api.api_client())
    apps.create_namespaced_deployment("default", deployment_body("web", replicas=2))
    scale = apps.read_namespaced_deployment_scale("web", "default")
    assert scale.spec.replicas == 2
    assert scale.status.selector == "app=web"
    status, body, _ = api.request("PATCH", "/apis/apps/v1/namespaces/default/deployments/web/scale",
                                  {"spec": {"replicas": 4}}, content_type=MERGE)
    assert (status, body["kind"], body["spec"]["replicas"]) == (200, "Scale", 4)
    scale = apps.read_namespaced_deployment_scale("web", "default")
    scale.spec.replicas = 1
    assert apps.replace_namespaced_deployment_scale("web", "default", scale).spec.replicas == 1
    assert apps.read_namespaced_deployment("web", "default").spec.replicas == 1
    status, body, _ = api.request("PATCH", "/apis/apps/v1/namespaces/default/deployments/web/scale",
                                  {"spec": {"replicas": -1}}, content_type=MERGE)
    assert status == 422
    scale.spec.replicas = 3  # still carries the resourceVersion read before the last write
    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_deployment_scale("web", "default", scale)
    assert json.loads(caught.value.body)["reason"] == "Conflict"


def test_strategic_merge_of_service_ports_merges_on_port_not_appends():
    """Re-applying a Service (the worker adopts an existing one with a strategic merge patch) kept one port.

    Regression: `ports` was keyed by containerPort only, so a Service's port (no containerPort) was appended
    on every patch and `kubectl get svc` showed 8000/TCP,8000/TCP.
    """
    service_spec = {"ports": [{"name": "http", "port": 8000, "protocol": "TCP", "targetPort": 8000}]}
    patched = strategic_merge_patch(service_spec, {"ports": [{"name": "http", "port": 8000, "targetPort": 8001}]})
    assert patched == {"ports": [{"name": "http", "port": 8000, "protocol": "TCP", "targetPort": 8001}]}
    added = strategic_merge_patch(service_spec, {"ports": [{"name": "metrics", "port": 9000}]})
    assert [port["port"] for port in added["ports"]] == [8000, 9000]
    # A container's ports still merge on containerPort.
    container = {"ports": [{"containerPort": 8000, "name": "http"}]}
    assert strategic_merge_patch(container, {"ports": [{"containerPort": 8000, "protocol": "TCP"}]}) == {
        "ports": [{"containerPort": 8000, "name": "http", "protocol": "TCP"}]
    }


def test_patching_a_service_twice_through_the_client_keeps_one_port(api):
    core = kubernetes.client.CoreV1Api(api.api_client())
    body = {"metadata": {"name": "svc"}, "spec": {"selector": {"app": "x"},
                                                  "ports": [{"name": "http", "port": 8000, "targetPort": 8000}]}}
    core.create_namespaced_service("default", body)
    for _ in range(2):
        core.patch_namespaced_service("svc", "default", {"spec": body["spec"]})
    ports = core.read_namespaced_service("svc", "default").spec.ports
    assert [(port.name, port.port) for port in ports] == [("http", 8000)]
