"""Kubernetes protobuf request bodies → the JSON dicts the JSON path produces (kubesim-reference §3.1).

kubectl's typed generators (`create namespace|deployment|service|poddisruptionbudget`, `auth can-i`,
`auth whoami`) POST `application/vnd.kubernetes.protobuf` and never fall back to JSON, so a JSON-only
server fails a new user's first commands. Only decoding is needed: answers may be JSON, which client-go
accepts whatever it asked for.

A body is the magic `k8s\\x00` followed by a `runtime.Unknown` message whose `raw` field holds the
object. The object is decoded with a generic wire-format reader and one declarative field table per
message type (field numbers from k8s.io/api and k8s.io/apimachinery `generated.proto`). Go's protobuf
marshaller writes every non-pointer field, zero or not, so a zero scalar is dropped unless the field
is a pointer or required in JSON (`keep_zero`), matching what `encoding/json` with `omitempty` would
have sent. Nested messages are kept even when empty, as `encoding/json` keeps non-pointer structs.
Fields missing from the tables are skipped, as protobuf readers skip unknown fields.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class MalformedProtobufError(ValueError):
    """The body is not a well-formed Kubernetes protobuf envelope (answered 400 BadRequest)."""


class UnsupportedKindError(ValueError):
    """Well-formed, but of a kind kubesim has no field table for (answered 415, as before)."""

    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(f"{api_version}, Kind={kind}")
        self.api_version = api_version
        self.kind = kind


# ---------------------------------------------------------------------- wire format


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise MalformedProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise MalformedProtobufError("varint longer than 10 bytes")


def iter_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value): an int for varint/fixed fields, bytes when length-delimited."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise MalformedProtobufError("field number 0")
        value: int | bytes
        if wire_type == VARINT:
            value, pos = _varint(data, pos)
        elif wire_type == LENGTH_DELIMITED:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise MalformedProtobufError(f"field {number} runs past the end of its message")
            value, pos = data[pos:pos + length], pos + length
        elif wire_type == FIXED64:
            if pos + 8 > len(data):
                raise MalformedProtobufError("truncated fixed64")
            value, pos = struct.unpack_from("<Q", data, pos)[0], pos + 8
        elif wire_type == FIXED32:
            if pos + 4 > len(data):
                raise MalformedProtobufError("truncated fixed32")
            value, pos = struct.unpack_from("<I", data, pos)[0], pos + 4
        else:  # 3/4 are proto2 groups, which no Kubernetes type uses; 6/7 do not exist
            raise MalformedProtobufError(f"unsupported wire type {wire_type} for field {number}")
        yield number, wire_type, value


def _signed(value: int) -> int:
    """int32/int64 travel as two's-complement varints: a negative number is a 10-byte varint."""
    return value - (1 << 64) if value >= 1 << 63 else value


# ---------------------------------------------------------------------- field tables

Table = dict[int, "Field"]


@dataclass(frozen=True)
class Field:
    """One message field. kind: string | int | bool | message | map | quantity_map | int_or_string | quantity."""

    name: str
    kind: str
    table: Table | None = None  # for kind == "message"
    repeated: bool = False
    keep_zero: bool = False  # pointer or required field: a zero value is meaningful


def _s(name: str, keep_zero: bool = False) -> Field:
    return Field(name, "string", keep_zero=keep_zero)


def _i(name: str, keep_zero: bool = False) -> Field:
    return Field(name, "int", keep_zero=keep_zero)


def _b(name: str, keep_zero: bool = False) -> Field:
    return Field(name, "bool", keep_zero=keep_zero)


def _m(name: str, table: Table, repeated: bool = False) -> Field:
    return Field(name, "message", table, repeated=repeated)


def _strings(name: str) -> Field:
    return Field(name, "string", repeated=True)


TYPE_META: Table = {1: _s("apiVersion"), 2: _s("kind")}
UNKNOWN: Table = {1: _m("typeMeta", TYPE_META), 2: Field("raw", "bytes"), 3: _s("contentEncoding"),
                  4: _s("contentType")}

OWNER_REFERENCE: Table = {5: _s("apiVersion", True), 1: _s("kind", True), 3: _s("name", True), 4: _s("uid", True),
                          6: _b("controller", True), 7: _b("blockOwnerDeletion", True)}
OBJECT_META: Table = {
    1: _s("name"), 2: _s("generateName"), 3: _s("namespace"), 6: _s("resourceVersion"),
    11: Field("labels", "map"), 12: Field("annotations", "map"),
    13: _m("ownerReferences", OWNER_REFERENCE, repeated=True), 14: _strings("finalizers"),
}

LABEL_SELECTOR_REQUIREMENT: Table = {1: _s("key", True), 2: _s("operator", True), 3: _strings("values")}
LABEL_SELECTOR: Table = {1: Field("matchLabels", "map"),
                         2: _m("matchExpressions", LABEL_SELECTOR_REQUIREMENT, repeated=True)}

CONTAINER_PORT: Table = {1: _s("name"), 2: _i("hostPort"), 3: _i("containerPort", True), 4: _s("protocol"),
                         5: _s("hostIP")}
ENV_VAR: Table = {1: _s("name", True), 2: _s("value")}
RESOURCE_REQUIREMENTS: Table = {1: Field("limits", "quantity_map"), 2: Field("requests", "quantity_map")}
VOLUME_MOUNT: Table = {1: _s("name", True), 2: _b("readOnly"), 3: _s("mountPath", True), 4: _s("subPath")}
CONTAINER: Table = {
    1: _s("name", True), 2: _s("image"), 3: _strings("command"), 4: _strings("args"), 5: _s("workingDir"),
    6: _m("ports", CONTAINER_PORT, repeated=True), 7: _m("env", ENV_VAR, repeated=True),
    8: _m("resources", RESOURCE_REQUIREMENTS), 9: _m("volumeMounts", VOLUME_MOUNT, repeated=True),
    13: _s("terminationMessagePath"), 14: _s("imagePullPolicy"), 16: _b("stdin"), 17: _b("stdinOnce"),
    18: _b("tty"), 20: _s("terminationMessagePolicy"),
}
TOLERATION: Table = {1: _s("key"), 2: _s("operator"), 3: _s("value"), 4: _s("effect"),
                     5: _i("tolerationSeconds", True)}
POD_SPEC: Table = {
    2: _m("containers", CONTAINER, repeated=True), 3: _s("restartPolicy"),
    4: _i("terminationGracePeriodSeconds", True), 5: _i("activeDeadlineSeconds", True), 6: _s("dnsPolicy"),
    7: Field("nodeSelector", "map"), 8: _s("serviceAccountName"), 9: _s("serviceAccount"), 10: _s("nodeName"),
    11: _b("hostNetwork"), 16: _s("hostname"), 17: _s("subdomain"), 19: _s("schedulerName"),
    20: _m("initContainers", CONTAINER, repeated=True), 22: _m("tolerations", TOLERATION, repeated=True),
    24: _s("priorityClassName"),
}
POD_TEMPLATE_SPEC: Table = {1: _m("metadata", OBJECT_META), 2: _m("spec", POD_SPEC)}
POD: Table = {1: _m("metadata", OBJECT_META), 2: _m("spec", POD_SPEC)}

ROLLING_UPDATE_DEPLOYMENT: Table = {1: Field("maxUnavailable", "int_or_string"),
                                    2: Field("maxSurge", "int_or_string")}
DEPLOYMENT_STRATEGY: Table = {1: _s("type"), 2: _m("rollingUpdate", ROLLING_UPDATE_DEPLOYMENT)}
DEPLOYMENT_SPEC: Table = {
    1: _i("replicas", True), 2: _m("selector", LABEL_SELECTOR), 3: _m("template", POD_TEMPLATE_SPEC),
    4: _m("strategy", DEPLOYMENT_STRATEGY), 5: _i("minReadySeconds"), 6: _i("revisionHistoryLimit", True),
    7: _b("paused"), 9: _i("progressDeadlineSeconds", True),
}
DEPLOYMENT: Table = {1: _m("metadata", OBJECT_META), 2: _m("spec", DEPLOYMENT_SPEC)}

NAMESPACE_SPEC: Table = {1: _strings("finalizers")}
NAMESPACE: Table = {1: _m("metadata", OBJECT_META), 2: _m("spec", NAMESPACE_SPEC)}

SERVICE_PORT: Table = {1: _s("name"), 2: _s("protocol"), 3: _i("port", True),
                       4: Field("targetPort", "int_or_string"), 5: _i("nodePort"), 6: _s("appProtocol", True)}
SERVICE_SPEC: Table = {
    1: _m("ports", SERVICE_PORT, repeated=True), 2: Field("selector", "map"), 3: _s("clusterIP"), 4: _s("type"),
    5: _strings("externalIPs"), 7: _s("sessionAffinity"), 8: _s("loadBalancerIP"),
    9: _strings("loadBalancerSourceRanges"), 10: _s("externalName"), 11: _s("externalTrafficPolicy"),
    12: _i("healthCheckNodePort"), 13: _b("publishNotReadyAddresses"), 17: _s("ipFamilyPolicy", True),
    18: _strings("clusterIPs"), 19: _strings("ipFamilies"), 20: _b("allocateLoadBalancerNodePorts", True),
    21: _s("loadBalancerClass", True), 22: _s("internalTrafficPolicy", True),
}
SERVICE: Table = {1: _m("metadata", OBJECT_META), 2: _m("spec", SERVICE_SPEC)}

PDB_SPEC: Table = {1: Field("minAvailable", "int_or_string"), 2: _m("selector", LABEL_SELECTOR),
                   3: Field("maxUnavailable", "int_or_string"), 4: _s("unhealthyPodEvictionPolicy", True)}
PDB: Table = {1: _m("metadata", OBJECT_META), 2: _m("spec", PDB_SPEC)}

PRECONDITIONS: Table = {1: _s("uid", True), 2: _s("resourceVersion", True)}
DELETE_OPTIONS: Table = {1: _i("gracePeriodSeconds", True), 2: _m("preconditions", PRECONDITIONS),
                         3: _b("orphanDependents", True), 4: _s("propagationPolicy", True), 5: _strings("dryRun")}
EVICTION: Table = {1: _m("metadata", OBJECT_META), 2: _m("deleteOptions", DELETE_OPTIONS)}

RESOURCE_ATTRIBUTES: Table = {1: _s("namespace"), 2: _s("verb"), 3: _s("group"), 4: _s("version"),
                              5: _s("resource"), 6: _s("subresource"), 7: _s("name")}
NON_RESOURCE_ATTRIBUTES: Table = {1: _s("path"), 2: _s("verb")}
SELF_SUBJECT_ACCESS_REVIEW_SPEC: Table = {1: _m("resourceAttributes", RESOURCE_ATTRIBUTES),
                                          2: _m("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES)}
SELF_SUBJECT_ACCESS_REVIEW: Table = {1: _m("metadata", OBJECT_META), 2: _m("spec", SELF_SUBJECT_ACCESS_REVIEW_SPEC)}
SELF_SUBJECT_RULES_REVIEW: Table = {1: _m("metadata", OBJECT_META), 2: _m("spec", {1: _s("namespace")})}
SELF_SUBJECT_REVIEW: Table = {1: _m("metadata", OBJECT_META)}

# (apiVersion, kind) → the object's table. Anything else is answered 415, as a body kubesim cannot read.
KINDS: dict[tuple[str, str], Table] = {
    ("v1", "Namespace"): NAMESPACE,
    ("v1", "Pod"): POD,
    ("v1", "Service"): SERVICE,
    ("apps/v1", "Deployment"): DEPLOYMENT,
    ("policy/v1", "PodDisruptionBudget"): PDB,
    ("policy/v1", "Eviction"): EVICTION,
    ("policy/v1beta1", "Eviction"): EVICTION,
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): SELF_SUBJECT_ACCESS_REVIEW,
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): SELF_SUBJECT_RULES_REVIEW,
    ("authentication.k8s.io/v1", "SelfSubjectReview"): SELF_SUBJECT_REVIEW,
}


# ---------------------------------------------------------------------- decoding


def _text(value: int | bytes, where: str) -> str:
    if not isinstance(value, bytes):
        raise MalformedProtobufError(f"{where}: expected a length-delimited string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedProtobufError(f"{where}: invalid UTF-8") from exc


def _number(value: int | bytes, where: str) -> int:
    if isinstance(value, bytes):
        raise MalformedProtobufError(f"{where}: expected a varint")
    return value


def _map_entry(value: int | bytes, where: str, quantity: bool) -> tuple[str, str]:
    if not isinstance(value, bytes):
        raise MalformedProtobufError(f"{where}: expected a map entry")
    key = entry_value = ""
    for number, _, item in iter_fields(value):
        if number == 1:
            key = _text(item, f"{where} key")
        elif number == 2:
            entry_value = _quantity(item, where) if quantity else _text(item, f"{where}[{key}]")
    return key, entry_value


def _quantity(value: int | bytes, where: str) -> str:
    """resource.Quantity is a message with its canonical string in field 1."""
    if not isinstance(value, bytes):
        raise MalformedProtobufError(f"{where}: expected a Quantity message")
    text = ""
    for number, _, item in iter_fields(value):
        if number == 1:
            text = _text(item, f"{where} quantity")
    return text


def _int_or_string(value: int | bytes, where: str) -> int | str:
    """intstr.IntOrString: type (0 Int, 1 String) = 1, intVal = 2, strVal = 3."""
    if not isinstance(value, bytes):
        raise MalformedProtobufError(f"{where}: expected an IntOrString message")
    kind, int_val, str_val = 0, 0, ""
    for number, _, item in iter_fields(value):
        if number == 1:
            kind = _signed(_number(item, where))
        elif number == 2:
            int_val = _signed(_number(item, where))
        elif number == 3:
            str_val = _text(item, where)
    if kind not in (0, 1):
        raise MalformedProtobufError(f"{where}: IntOrString type {kind} is neither 0 (Int) nor 1 (String)")
    return str_val if kind == 1 else int_val


def _scalar(spec: Field, value: int | bytes, where: str) -> Any:
    if spec.kind == "string":
        return _text(value, where)
    if spec.kind == "int":
        return _signed(_number(value, where))
    if spec.kind == "bool":
        return _number(value, where) != 0
    if spec.kind == "bytes":
        if not isinstance(value, bytes):
            raise MalformedProtobufError(f"{where}: expected bytes")
        return value
    if spec.kind == "int_or_string":
        return _int_or_string(value, where)
    if spec.kind == "quantity":
        return _quantity(value, where)
    if spec.kind == "message":
        if not isinstance(value, bytes):
            raise MalformedProtobufError(f"{where}: expected a message")
        assert spec.table is not None
        return decode_message(value, spec.table, where)
    raise AssertionError(f"unknown field kind {spec.kind}")


def decode_message(data: bytes, table: Table, where: str = "") -> dict[str, Any]:
    """Decode one message with its field table into a JSON-shaped dict."""
    out: dict[str, Any] = {}
    for number, _, value in iter_fields(data):
        spec = table.get(number)
        if spec is None:
            continue
        path = f"{where}.{spec.name}" if where else spec.name
        if spec.kind in ("map", "quantity_map"):
            key, entry = _map_entry(value, path, spec.kind == "quantity_map")
            out.setdefault(spec.name, {})[key] = entry
            continue
        decoded = _scalar(spec, value, path)
        if spec.repeated:
            out.setdefault(spec.name, []).append(decoded)
        elif decoded or spec.keep_zero or spec.kind in ("message", "int_or_string", "bytes"):
            out[spec.name] = decoded
        else:
            out.pop(spec.name, None)  # a later zero overrides an earlier value, as protobuf's last-wins rule says
    return out


def decode_unknown(body: bytes) -> tuple[str, str, bytes]:
    """Strip the magic and read the runtime.Unknown envelope → (apiVersion, kind, raw object bytes)."""
    if not body.startswith(MAGIC):
        raise MalformedProtobufError("the body does not start with the Kubernetes protobuf prefix k8s\\x00")
    envelope = decode_message(body[len(MAGIC):], UNKNOWN)
    if envelope.get("contentEncoding"):
        raise MalformedProtobufError(f"unsupported contentEncoding {envelope['contentEncoding']!r}")
    type_meta = envelope.get("typeMeta") or {}
    kind = type_meta.get("kind", "")
    if not kind:
        raise MalformedProtobufError("the protobuf envelope carries no kind")
    return type_meta.get("apiVersion", ""), kind, envelope.get("raw", b"")


def decode_object(body: bytes) -> dict[str, Any]:
    """A protobuf request body → the object as the JSON path would see it (with kind and apiVersion)."""
    api_version, kind, raw = decode_unknown(body)
    table = KINDS.get((api_version, kind))
    if table is None:
        raise UnsupportedKindError(api_version, kind)
    obj = decode_message(raw, table)
    return {"kind": kind, "apiVersion": api_version, **obj}
