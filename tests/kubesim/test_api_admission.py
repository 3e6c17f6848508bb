"""Apiserver defaulting and validation (kubesim/admission.py), called directly and through the store."""

from __future__ import annotations

import pytest

from kubesim import errors
from kubesim.admission import admit, parse_quantity
from kubesim.resources import BY_PLURAL
from tests.kubesim.test_api_support import deployment_body, pod_body


def _admit(plural: str, obj: dict, old: dict | None = None) -> dict:
    obj.setdefault("metadata", {}).setdefault("name", "x")
    admit(BY_PLURAL[plural], obj, old)
    return obj


def _causes(plural: str, obj: dict, old: dict | None = None) -> list[dict]:
    with pytest.raises(errors.ApiError) as caught:
        _admit(plural, obj, old)
    assert caught.value.code == 422
    return caught.value.details["causes"]


def test_pod_defaults():
    pod = _admit("pods", pod_body("p", gpus=2))
    spec = pod["spec"]
    assert pod["status"]["phase"] == "Pending"
    assert (spec["restartPolicy"], spec["terminationGracePeriodSeconds"], spec["dnsPolicy"],
            spec["schedulerName"]) == ("Always", 30, "ClusterFirst", "default-scheduler")
    assert spec["containers"][0]["resources"]["requests"] == {"nvidia.com/gpu": "2"}
    keys = {(t["key"], t["tolerationSeconds"]) for t in spec["tolerations"]}
    assert keys == {("node.kubernetes.io/not-ready", 300), ("node.kubernetes.io/unreachable", 300)}


def test_existing_toleration_is_not_duplicated():
    body = pod_body("p")
    body["spec"]["tolerations"] = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                    "effect": "NoExecute", "tolerationSeconds": 30}]
    spec = _admit("pods", body)["spec"]
    assert [t["tolerationSeconds"] for t in spec["tolerations"]] == [30, 300]


@pytest.mark.parametrize(("resources", "field", "fragment"), [
    ({"requests": {"nvidia.com/gpu": "1"}}, "spec.containers[0].resources.limits",
     "Limit must be set for non overcommitable resources"),
    ({"limits": {"nvidia.com/gpu": "1500m"}}, "spec.containers[0].resources.limits[nvidia.com/gpu]",
     "must be an integer"),
    ({"limits": {"nvidia.com/gpu": "2"}, "requests": {"nvidia.com/gpu": "1"}},
     "spec.containers[0].resources.requests[nvidia.com/gpu]", "must be equal to nvidia.com/gpu limit of 2"),
    ({"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}, "spec.containers[0].resources.requests",
     "must be less than or equal to cpu limit"),
    ({"limits": {"memory": "lots"}}, "spec.containers[0].resources.limits[memory]", "quantities must match"),
])
def test_resource_validation(resources, field, fragment):
    body = pod_body("p")
    body["spec"]["containers"][0]["resources"] = resources
    causes = _causes("pods", body)
    assert causes[0]["field"] == field
    assert fragment in causes[0]["message"]


def test_container_name_and_image_required():
    body = {"metadata": {"name": "p"}, "spec": {"containers": [{}]}}
    fields = {c["field"] for c in _causes("pods", body)}
    assert fields == {"spec.containers[0].name", "spec.containers[0].image"}
    assert _causes("pods", {"metadata": {"name": "p"}, "spec": {}})[0]["field"] == "spec.containers"


def test_deployment_defaults_and_strategy_rules():
    spec = _admit("deployments", deployment_body("web"))["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    assert (spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (10, 600)
    del_replicas = deployment_body("web")
    del del_replicas["spec"]["replicas"]
    assert _admit("deployments", del_replicas)["spec"]["replicas"] == 1
    both_zero = deployment_body("web")
    both_zero["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}
    assert "may not be 0 when `maxSurge` is 0" in _causes("deployments", both_zero)[0]["message"]
    recreate = deployment_body("web")
    recreate["spec"]["strategy"] = {"type": "Recreate"}
    assert "rollingUpdate" not in _admit("deployments", recreate)["spec"]["strategy"]
    never = deployment_body("web")
    never["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert _causes("deployments", never)[0]["field"] == "spec.template.spec.restartPolicy"
    no_selector = deployment_body("web")
    del no_selector["spec"]["selector"]
    assert _causes("deployments", no_selector)[0] == {"reason": "FieldValueRequired", "message": "Required value",
                                                      "field": "spec.selector"}


def test_selector_is_immutable():
    old = _admit("deployments", deployment_body("web"))
    new = deployment_body("web", labels={"app": "web", "v": "2"})
    assert "field is immutable" in _causes("deployments", new, old)[0]["message"]


@pytest.mark.parametrize(("plural", "name", "fragment"), [
    ("pods", "Upper", "RFC 1123 subdomain"),
    ("services", "1svc", "DNS-1035 label"),
    ("namespaces", "a.b", "RFC 1123 label"),
])
def test_name_rules(plural, name, fragment):
    body: dict = {"metadata": {"name": name}}
    if plural == "pods":
        body = pod_body(name)
    causes = _causes(plural, body)
    assert causes[0]["field"] == "metadata.name"
    assert fragment in causes[0]["message"]


def test_pdb_min_xor_max():
    causes = _causes("poddisruptionbudgets", {"spec": {"minAvailable": 1, "maxUnavailable": 1,
                                                       "selector": {"matchLabels": {"a": "b"}}}})
    assert "cannot be both set" in causes[0]["message"]


def test_quantities():
    assert parse_quantity("1500m") == parse_quantity("1.5")
    assert parse_quantity("1Gi") == 2**30
    assert parse_quantity(2) == 2
    assert parse_quantity("abc") is None


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({}, "BestEffort"),
        ({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1024Mi"}}, "Guaranteed"),
        ({"limits": {"cpu": "2", "memory": "4Gi"}}, "Guaranteed"),
        ({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}, "Burstable"),
        ({"requests": {"cpu": "1"}}, "Burstable"),
    ],
)
def test_qos_class_compares_quantities_by_value(resources, expected):
    """One rule for admission and the kubelet: requests default to limits, ``1`` equals ``1000m``."""
    from kubesim.admission import qos_class

    spec = {"containers": [{"name": "c", "image": "i", "resources": resources}]}
    assert qos_class(spec) == expected


def test_service_ips_continue_after_the_last_one_handed_out_and_wrap_round():
    from kubesim.admission import FIRST_DYNAMIC_IP_OFFSET, SERVICE_CIDR, ServiceIPs

    service = {"metadata": {"name": "svc"}}
    ips = ServiceIPs({"10.96.0.10", "10.96.0.12"})
    assert ips.allocate(service) == "10.96.0.11"
    assert ips.allocate(service) == "10.96.0.13"  # 10.96.0.12 is taken
    ips.used.discard("10.96.0.11")  # a Service deleted below the cursor is not rescanned for
    assert ips.allocate(service) == "10.96.0.14"
    last = SERVICE_CIDR.num_addresses - 2  # the broadcast address is never handed out
    at_the_end = ServiceIPs(set(), last)
    assert at_the_end.allocate(service) == str(SERVICE_CIDR.network_address + last)
    assert at_the_end.allocate(service) == str(SERVICE_CIDR.network_address + FIRST_DYNAMIC_IP_OFFSET)


def test_a_full_service_range_is_an_error_not_a_hang():
    from kubesim.admission import ServiceIPs

    class Everything(set):
        def __contains__(self, item):
            return True

    with pytest.raises(errors.ApiError):
        ServiceIPs(Everything()).allocate({"metadata": {"name": "svc"}})
