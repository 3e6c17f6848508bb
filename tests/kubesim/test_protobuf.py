"""Protobuf request bodies (kubectl's typed generators) and the auth self-reviews (`kubectl auth ...`).

The unit tests build bodies with a tiny encoder written here, plus two bodies captured byte for byte
from kubectl 1.37 (`create namespace x`, `create service nodeport np --tcp=80:http --node-port=30080`).
The end-to-end tests run the kubectl commands a new user types first against a SimCluster.
"""

from __future__ import annotations

import json
import struct
import urllib.error
import urllib.request

import pytest

from kubesim import protobuf
from kubesim.protobuf import MalformedProtobufError, UnsupportedKindError, decode_object

# kubectl 1.37 `create namespace x`, as sent on the wire.
CAPTURED_NAMESPACE = bytes.fromhex(
    "6b3873000a0f0a02763112094e616d65737061636512190a110a017812001a0022002a0032003800420012001a020a001a002200")
# kubectl 1.37 `create service nodeport np --tcp=80:http --node-port=30080`.
CAPTURED_NODEPORT_SERVICE = bytes.fromhex(
    "6b3873000a0d0a027631120753657276696365126a0a1d0a026e7012001a0022002a003200380042005a090a0361707012026e7012"
    "450a200a0738302d6874747012035443501850220a080110001a04687474702880eb0112090a0361707012026e701a0022084e6f64"
    "65506f72743a00420052005a00600068001a020a001a002200")


# ---------------------------------------------------------------------- a tiny protobuf encoder


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64 travel as 10-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def num(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def raw(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def text(number: int, value: str) -> bytes:
    return raw(number, value.encode())


def msg(number: int, *parts: bytes) -> bytes:
    return raw(number, b"".join(parts))


def entry(number: int, map_key: str, value: str) -> bytes:
    return msg(number, text(1, map_key), text(2, value))


def quantity_entry(number: int, map_key: str, value: str) -> bytes:
    return msg(number, text(1, map_key), msg(2, text(1, value)))


def int_or_string(number: int, value: int | str) -> bytes:
    if isinstance(value, str):
        return msg(number, num(1, 1), num(2, 0), text(3, value))
    return msg(number, num(1, 0), num(2, value), text(3, ""))


def envelope(api_version: str, kind: str, *object_parts: bytes) -> bytes:
    return protobuf.MAGIC + msg(1, text(1, api_version), text(2, kind)) + msg(2, *object_parts) \
        + text(3, "") + text(4, "")


def object_meta(name: str, *extra: bytes) -> bytes:
    # Go writes every non-pointer field: the empty strings and zero generation are on the wire too.
    return msg(1, text(1, name), text(2, ""), text(3, ""), text(4, ""), text(5, ""), text(6, ""), num(7, 0),
               msg(8), *extra)


# ---------------------------------------------------------------------- decoding


def test_captured_namespace_body_decodes_like_the_json_path():
    assert decode_object(CAPTURED_NAMESPACE) == {"kind": "Namespace", "apiVersion": "v1",
                                                 "metadata": {"name": "x"}, "spec": {}}


def test_captured_nodeport_service_keeps_string_target_port_and_node_port():
    service = decode_object(CAPTURED_NODEPORT_SERVICE)
    assert service["metadata"] == {"name": "np", "labels": {"app": "np"}}
    assert service["spec"] == {"ports": [{"name": "80-http", "protocol": "TCP", "port": 80, "targetPort": "http",
                                          "nodePort": 30080}],
                               "selector": {"app": "np"}, "type": "NodePort"}


def test_deployment_with_every_tabled_field():
    container = msg(
        2, text(1, "vllm"), text(2, "vllm/vllm-openai:v0.6"), text(3, "python"), text(3, "-m"), text(4, "--port"),
        text(4, "8000"), text(5, ""), msg(6, text(1, "http"), num(2, 0), num(3, 8000), text(4, "TCP"), text(5, "")),
        msg(7, text(1, "MODEL"), text(2, "llama")), msg(7, text(1, "EMPTY"), text(2, "")),
        msg(8, quantity_entry(1, "nvidia.com/gpu", "1"), quantity_entry(2, "cpu", "500m"),
            quantity_entry(2, "memory", "16Gi")),
        num(16, 0),  # stdin=false: a zero that JSON's omitempty would not send
    )
    body = envelope(
        "apps/v1", "Deployment",
        object_meta("web", entry(11, "app", "web"), entry(12, "note", "n")),
        msg(2,
            num(1, 0),  # replicas is a pointer: an explicit 0 must survive
            msg(2, entry(1, "app", "web"), msg(2, text(1, "tier"), text(2, "In"), text(3, "a"), text(3, "b"))),
            msg(3, msg(1, entry(11, "app", "web")), msg(2, container, text(3, "Always"))),
            msg(4, text(1, "RollingUpdate"), msg(2, int_or_string(1, 0), int_or_string(2, "25%"))),
            num(6, (1 << 64) - 1),  # revisionHistoryLimit = -1 as a 10-byte varint
            num(99, 7), key(98, 5) + struct.pack("<I", 1), key(97, 1) + struct.pack("<Q", 2),  # unknown: skipped
            ),
        msg(3),  # status: not tabled, skipped
    )
    deployment = decode_object(body)
    assert deployment["metadata"] == {"name": "web", "labels": {"app": "web"}, "annotations": {"note": "n"}}
    spec = deployment["spec"]
    assert spec["replicas"] == 0
    assert spec["revisionHistoryLimit"] == -1
    assert spec["selector"] == {"matchLabels": {"app": "web"},
                                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}}
    assert spec["template"]["metadata"] == {"labels": {"app": "web"}}
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    assert spec["template"]["spec"]["containers"] == [{
        "name": "vllm", "image": "vllm/vllm-openai:v0.6", "command": ["python", "-m"], "args": ["--port", "8000"],
        "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
        "env": [{"name": "MODEL", "value": "llama"}, {"name": "EMPTY"}],
        "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "500m", "memory": "16Gi"}},
    }]
    assert "status" not in deployment


def test_pdb_int_or_string_zero_is_kept():
    body = envelope("policy/v1", "PodDisruptionBudget", object_meta("p"),
                    msg(2, int_or_string(1, 0), msg(2, entry(1, "app", "x"))))
    assert decode_object(body)["spec"] == {"minAvailable": 0, "selector": {"matchLabels": {"app": "x"}}}


@pytest.mark.parametrize(("body", "message"), [
    (b"\x0a\x00", "prefix"),
    (protobuf.MAGIC + b"\x0a\x05\x0a\x02v1", "past the end"),
    (protobuf.MAGIC + b"\x0a\x80", "truncated varint"),
    (protobuf.MAGIC + b"\x0b\x0c", "wire type 3"),
    (protobuf.MAGIC + b"\x0a\x02\x08\x01", "expected a length-delimited string"),
    (protobuf.MAGIC + msg(1, text(1, "v1")) + msg(2), "no kind"),
    (envelope("v1", "Namespace", msg(1, raw(1, b"\xff\xfe"))), "invalid UTF-8"),
    (envelope("v1", "Namespace", b"\x00"), "field number 0"),
    (envelope("policy/v1", "PodDisruptionBudget", msg(2, msg(1, num(1, 2)))), "IntOrString type 2"),
    (protobuf.MAGIC + msg(1, text(1, "v1"), text(2, "Namespace")) + text(3, "gzip"), "contentEncoding"),
])
def test_malformed_bodies_are_rejected_with_a_reason(body, message):
    with pytest.raises(MalformedProtobufError, match=message):
        decode_object(body)


def test_kind_without_a_table_is_unsupported():
    with pytest.raises(UnsupportedKindError) as caught:
        decode_object(envelope("v1", "ConfigMap", object_meta("c")))
    assert (caught.value.api_version, caught.value.kind) == ("v1", "ConfigMap")


# ---------------------------------------------------------------------- over HTTP


def post(url: str, body: bytes, content_type: str = protobuf.MEDIA_TYPE) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": content_type, "Accept": f"{protobuf.MEDIA_TYPE},application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_protobuf_create_answers_json_and_stores_the_object(sim_cluster):
    code, body = post(f"{sim_cluster.url}/api/v1/namespaces", CAPTURED_NAMESPACE)
    assert code == 201
    assert body["kind"] == "Namespace"
    assert body["metadata"]["name"] == "x"
    assert body["metadata"]["uid"]
    assert sim_cluster.store.get("namespaces", "", "x")["status"]["phase"] == "Active"


def test_malformed_protobuf_is_a_bad_request_status(sim_cluster):
    code, body = post(f"{sim_cluster.url}/api/v1/namespaces", CAPTURED_NAMESPACE[:-5])
    assert code == 400
    assert body["kind"] == "Status"
    assert body["reason"] == "BadRequest"
    assert "protobuf" in body["message"]


def test_body_without_the_protobuf_prefix_is_an_unknown_format(sim_cluster):
    code, body = post(f"{sim_cluster.url}/api/v1/namespaces", CAPTURED_NAMESPACE[len(protobuf.MAGIC):])
    assert code == 415
    assert body["reason"] == "UnsupportedMediaType"


def test_unsupported_protobuf_kind_is_415(sim_cluster):
    code, body = post(f"{sim_cluster.url}/apis/apps/v1/namespaces/default/replicasets",
                      envelope("apps/v1", "ReplicaSet", object_meta("rs")))
    assert code == 415
    assert body["reason"] == "UnsupportedMediaType"
    assert "ReplicaSet" in body["message"]


def test_protobuf_kind_must_match_the_url(sim_cluster):
    code, body = post(f"{sim_cluster.url}/api/v1/namespaces/default/services", CAPTURED_NAMESPACE)
    assert code == 400
    assert body["reason"] == "BadRequest"


# ---------------------------------------------------------------------- kubectl end to end


def test_kubectl_create_namespace_and_deployment(sim_cluster, kubectl, k8s):
    assert "namespace/team-a created" in kubectl("create", "namespace", "team-a").stdout
    out = kubectl("create", "deployment", "web", "--image=nginx", "--replicas=3", "--port=8080", "-n", "team-a")
    assert "deployment.apps/web created" in out.stdout
    deployment = k8s.apps.read_namespaced_deployment("web", "team-a")
    assert deployment.spec.replicas == 3
    assert deployment.spec.selector.match_labels == {"app": "web"}
    container = deployment.spec.template.spec.containers[0]
    assert (container.name, container.image, container.ports[0].container_port) == ("nginx", "nginx", 8080)
    sim_cluster.settle()
    pods = k8s.core.list_namespaced_pod("team-a", label_selector="app=web").items
    assert len(pods) == 3


def test_kubectl_create_deployment_with_a_command_and_server_dry_run(sim_cluster, kubectl, k8s):
    kubectl("create", "deployment", "sleeper", "--image=busybox", "--", "sleep", "3600")
    container = k8s.apps.read_namespaced_deployment("sleeper", "default").spec.template.spec.containers[0]
    assert container.command == ["sleep", "3600"]
    out = kubectl("create", "deployment", "ghost", "--image=nginx", "--dry-run=server")
    assert "created (server dry run)" in out.stdout
    assert sim_cluster.store.try_get("deployments", "default", "ghost") is None


@pytest.mark.parametrize(("kind", "extra", "service_type"), [
    ("clusterip", ["--tcp=80:8080"], "ClusterIP"),
    ("nodeport", ["--tcp=80:8080", "--node-port=30080"], "NodePort"),
    ("loadbalancer", ["--tcp=80:8080"], "LoadBalancer"),
])
def test_kubectl_create_service(sim_cluster, kubectl, k8s, kind, extra, service_type):
    out = kubectl("create", "service", kind, "svc", *extra)
    assert "service/svc created" in out.stdout
    service = k8s.core.read_namespaced_service("svc", "default")
    assert service.spec.type == service_type
    assert service.spec.selector == {"app": "svc"}
    port = service.spec.ports[0]
    assert (port.port, port.target_port, port.protocol) == (80, 8080, "TCP")
    if kind == "nodeport":
        assert port.node_port == 30080
    table = kubectl("get", "service", "svc").stdout
    assert service_type in table


def test_kubectl_create_pdb(sim_cluster, kubectl, k8s):
    kubectl("create", "poddisruptionbudget", "p", "--selector=app=x", "--min-available=1")
    kubectl("create", "pdb", "q", "--selector=app=x,tier notin (a)", "--max-unavailable=50%")
    p = k8s.policy.read_namespaced_pod_disruption_budget("p", "default")
    assert p.spec.min_available == 1
    assert p.spec.selector.match_labels == {"app": "x"}
    q = k8s.policy.read_namespaced_pod_disruption_budget("q", "default")
    assert q.spec.max_unavailable == "50%"
    assert [(e.key, e.operator, e.values) for e in q.spec.selector.match_expressions] == [("tier", "NotIn", ["a"])]


def test_kubectl_auth_can_i(kubectl):
    assert kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "delete", "nodes").stdout.strip() == "yes"
    listing = kubectl("auth", "can-i", "--list").stdout
    assert listing.splitlines()[1].split()[:1] == ["*.*"]


def test_kubectl_auth_whoami(kubectl):
    rows = [line.split(None, 1) for line in kubectl("auth", "whoami").stdout.splitlines()]
    assert ["Username", "kubesim-admin"] in rows
    assert ["Groups", "[system:masters system:authenticated]"] in rows
    review = json.loads(kubectl("auth", "whoami", "-o", "json").stdout)
    assert review["kind"] == "SelfSubjectReview"
    assert review["status"]["userInfo"]["groups"] == ["system:masters", "system:authenticated"]


def test_review_apis_are_discoverable_and_create_only(sim_cluster, kubectl):
    resources = kubectl("api-resources", "--api-group=authorization.k8s.io", "-o", "name").stdout.split()
    assert "selfsubjectaccessreviews.authorization.k8s.io" in resources
    resources = kubectl("api-resources", "--api-group=authentication.k8s.io", "-o", "name").stdout.split()
    assert "selfsubjectreviews.authentication.k8s.io" in resources
    request = urllib.request.Request(f"{sim_cluster.url}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 405


def test_access_review_in_json_needs_attributes(sim_cluster):
    url = f"{sim_cluster.url}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    code, body = post(url, json.dumps({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                                       "spec": {}}).encode(), "application/json")
    assert code == 422
    assert body["reason"] == "Invalid"
    code, body = post(url, json.dumps({"spec": {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}}})
                      .encode(), "application/json")
    assert code == 201
    assert body["status"] == {"allowed": True, "reason": "kubesim has no RBAC"}
