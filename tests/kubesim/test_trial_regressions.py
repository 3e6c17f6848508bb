"""Regressions found by driving kubesim as a new user would (kubectl sessions, untuned client scripts).

Each test names the real-cluster behaviour that kubesim got wrong.
"""

from __future__ import annotations

import copy
import json
import urllib.request

import pytest

from kubesim.admission import admit, canonical_quantity
from kubesim.clock import parse_rfc3339
from kubesim.controllers.deployment import HASH_LABEL
from kubesim.errors import ApiError
from kubesim.resources import BY_PLURAL
from kubesim.sim import Simulation
from kubesim.tables import build_table
from tests.kubesim.test_controllers_support import GPU_TOLERATION, IMAGE, deployment, deployment_ready, pods

# ----------------------------------------------------------------------------- quantities as numbers


def _numeric_quantity_pod(name: str) -> dict:
    """What `kubectl apply` sends for YAML `nvidia.com/gpu: 1` and `cpu: 2`: JSON numbers, not strings."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "tolerations": [dict(GPU_TOLERATION)],
            "containers": [{"name": "vllm", "image": IMAGE,
                            "resources": {"limits": {"nvidia.com/gpu": 1, "cpu": 4, "memory": "32Gi"},
                                          "requests": {"cpu": 0.5}}}],
            "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": 8}}],
        },
    }


@pytest.mark.parametrize(("number", "text"), [(1, "1"), (8, "8"), (0.5, "500m"), (2.25, "2250m"), (0.0000015, "1500n")])
def test_numeric_quantity_is_stored_as_the_apiservers_canonical_string(number: float, text: str) -> None:
    assert canonical_quantity(number) == text


def test_pod_with_numeric_quantities_stores_strings() -> None:
    pod = _numeric_quantity_pod("numeric")
    admit(BY_PLURAL["pods"], pod, None)
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "1", "cpu": "4", "memory": "32Gi"}
    assert resources["requests"] == {"cpu": "500m", "nvidia.com/gpu": "1", "memory": "32Gi"}
    assert pod["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] == "8"


def test_fractional_numeric_gpu_is_still_rejected_with_the_canonical_value() -> None:
    pod = _numeric_quantity_pod("half-gpu")
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 0.5
    with pytest.raises(ApiError) as raised:
        admit(BY_PLURAL["pods"], pod, None)
    assert raised.value.code == 422  # type: ignore[attr-defined]
    assert 'Invalid value: "500m": must be an integer' in raised.value.status()["message"]  # type: ignore[attr-defined]


def test_typed_client_reads_pods_created_with_numeric_gpu_limits(sim_cluster, k8s) -> None:  # type: ignore[no-untyped-def]
    """The official client's models refuse a number where a Quantity string is declared; kubectl (raw JSON)
    is how such numbers arrive."""
    request = urllib.request.Request(
        f"{sim_cluster.url}/api/v1/namespaces/default/pods", method="POST",
        data=json.dumps(_numeric_quantity_pod("typed-read")).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 201
    listed = k8s.core.list_namespaced_pod("default").items
    pod = next(p for p in listed if p.metadata.name == "typed-read")
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"


# ----------------------------------------------------------------------------- probe defaults


def test_probes_get_the_apiserver_defaults() -> None:
    pod = _numeric_quantity_pod("probed")
    container = pod["spec"]["containers"][0]
    container["readinessProbe"] = {"httpGet": {"port": 8000}, "periodSeconds": 5}
    container["livenessProbe"] = {"tcpSocket": {"port": 8000}}
    admit(BY_PLURAL["pods"], pod, None)
    assert container["readinessProbe"] == {
        "httpGet": {"port": 8000, "path": "/", "scheme": "HTTP"},
        "periodSeconds": 5, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3,
    }
    assert container["livenessProbe"]["periodSeconds"] == 10
    assert container["livenessProbe"]["failureThreshold"] == 3


# ----------------------------------------------------------------------------- rollout undo


def _replicasets(sim: Simulation, name: str) -> list[dict]:
    return [rs for rs in sim.store.list("replicasets", "default")[0]
            if rs["metadata"]["name"].startswith(f"{name}-")]


def test_rollout_undo_reuses_the_old_replicaset_even_with_creation_timestamp_null(sim: Simulation) -> None:
    """kubectl rollout undo copies the old RS template back (with `creationTimestamp: null`, as Go marshals
    it); the controller's EqualIgnoreHash lookup must find that RS instead of creating a third one."""
    sim.store.create("deployments", deployment("undo", replicas=1, gpus=1), "default")
    assert sim.run_until(lambda: deployment_ready(sim, "undo"), timeout=600)
    first = _replicasets(sim, "undo")
    assert len(first) == 1

    def change_template(obj: dict) -> None:
        obj["spec"]["template"]["metadata"].setdefault("annotations", {})["restartedAt"] = "now"

    sim.store.mutate("deployments", "default", "undo", change_template)
    assert sim.run_until(lambda: deployment_ready(sim, "undo") and len(_replicasets(sim, "undo")) == 2
                         and all(p["metadata"]["labels"][HASH_LABEL] != first[0]["metadata"]["labels"][HASH_LABEL]
                                 for p in pods(sim, app="undo")), timeout=600)

    old_template = copy.deepcopy(first[0]["spec"]["template"])
    del old_template["metadata"]["labels"][HASH_LABEL]
    old_template["metadata"]["creationTimestamp"] = None

    def undo(obj: dict) -> None:
        obj["spec"]["template"] = old_template

    sim.store.mutate("deployments", "default", "undo", undo)
    assert sim.run_until(lambda: deployment_ready(sim, "undo")
                         and all(p["metadata"]["labels"][HASH_LABEL] == first[0]["metadata"]["labels"][HASH_LABEL]
                                 for p in pods(sim, app="undo")), timeout=600)
    replicasets = _replicasets(sim, "undo")
    assert len(replicasets) == 2
    reused = next(rs for rs in replicasets if rs["metadata"]["uid"] == first[0]["metadata"]["uid"])
    assert reused["spec"]["replicas"] == 1
    assert reused["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"


# ----------------------------------------------------------------------------- kubectl get endpoints


def _endpoints(ips: list[str], ports: list[int]) -> dict:
    return {"metadata": {"name": "llama", "namespace": "ml", "creationTimestamp": "2026-11-27T10:00:00Z"},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips], "ports": [{"port": p} for p in ports]}]}


def test_endpoints_table_has_the_endpoints_column_kubectl_prints() -> None:
    table = build_table("endpoints", [_endpoints(["10.244.0.2", "10.244.0.3"], [8000]),
                                      _endpoints(["10.244.0.2", "10.244.0.3", "10.244.0.4", "10.244.0.5"], [8000]),
                                      {"metadata": {"name": "empty", "creationTimestamp": "2026-11-27T10:00:00Z"}}],
                        now=parse_rfc3339("2026-11-27T10:05:00Z"))
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Endpoints", "Age"]
    assert [row["cells"] for row in table["rows"]] == [
        ["llama", "10.244.0.2:8000,10.244.0.3:8000", "5m"],
        ["llama", "10.244.0.2:8000,10.244.0.3:8000,10.244.0.4:8000 + 1 more...", "5m"],
        ["empty", "<none>", "5m"],
    ]


# ----------------------------------------------------------------------------- default/kubernetes


def test_cluster_has_the_apiserver_service_in_default(k8s, kubectl) -> None:  # type: ignore[no-untyped-def]
    """Every cluster serves `default/kubernetes`; `kubectl get svc` on a fresh cluster shows it."""
    service = k8s.core.read_namespaced_service("kubernetes", "default")
    assert service.spec.cluster_ip == "10.96.0.1"
    assert [(p.name, p.port, p.target_port) for p in service.spec.ports] == [("https", 443, 6443)]
    endpoints = k8s.core.read_namespaced_endpoints("kubernetes", "default")
    assert endpoints.subsets[0].ports[0].port == 6443
    created = k8s.core.create_namespaced_service("default", {"metadata": {"name": "after"},
                                                             "spec": {"ports": [{"port": 80}]}})
    assert created.spec.cluster_ip != "10.96.0.1"
    listing = kubectl("get", "svc", "-n", "default").stdout
    assert "kubernetes   ClusterIP   10.96.0.1" in listing
    assert "443/TCP" in listing


def test_types_without_a_printer_keep_the_name_and_created_at_table() -> None:
    table = build_table("widgets", [{"metadata": {"name": "w", "creationTimestamp": "2026-11-27T10:00:00Z"}}],
                        now=parse_rfc3339("2026-11-27T10:05:00Z"))
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Created At"]
    assert table["rows"][0]["cells"] == ["w", "2026-11-27T10:00:00Z"]
