"""The three patch flavours the apiserver accepts over JSON (kubesim-reference §3.3).

- merge patch (RFC 7386): `kubectl scale`, `kubectl patch --type=merge`;
- strategic merge patch: RFC 7386 plus merge-by-key for the list fields the Kubernetes types mark
  with a patch merge key, `$patch: delete`, union for finalizers — what the Python client sends for a
  dict body and what `kubectl cordon`/`rollout restart`/`apply` send;
- JSON patch (RFC 6902): the Python client's choice for a list body, `kubectl patch --type=json`.

All functions return new data and never mutate their inputs (stored objects are shared).
"""

from __future__ import annotations

from typing import Any

from kubesim import errors
from kubesim.store import clone

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# Lists merged element-by-element on a key, as the Go types' `patchMergeKey` tags say.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",  # a Container's; a ServiceSpec's ports merge on `port` (SERVICE_PORT_KEY)
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "addresses": "type",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
}
# The field name `ports` is shared by Container (key containerPort) and ServiceSpec (key port). The patch
# carries no type, so an element without containerPort but with port is a service port: without this,
# re-applying a Service appended a duplicate port on every strategic merge patch.
SERVICE_PORT_KEY = "port"
UNION_LISTS = frozenset({"finalizers"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = clone(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return clone(patch)
    if patch.get("$patch") == "delete":
        return None
    if patch.get("$patch") == "replace":
        return {k: clone(v) for k, v in patch.items() if not k.startswith("$")}
    result = clone(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # $setElementOrder, $retainKeys, …: ordering hints we do not need
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list_by_key(result[key], value, MERGE_KEYS[key])
        elif isinstance(value, list) and key in UNION_LISTS and isinstance(result.get(key), list):
            merged = list(result[key])
            merged.extend(v for v in value if v not in merged)
            result[key] = merged
        elif isinstance(value, list):
            result[key] = [_strip_directives(v) for v in value if not _is_delete(v)]
        elif isinstance(value, dict):
            merged_value = strategic_merge_patch(result.get(key), value)
            if merged_value is None:
                result.pop(key, None)
            else:
                result[key] = merged_value
        else:
            result[key] = value
    return result


def _is_delete(item: Any) -> bool:
    return isinstance(item, dict) and item.get("$patch") == "delete"


def _strip_directives(item: Any) -> Any:
    if isinstance(item, dict):
        return {k: _strip_directives(v) for k, v in item.items() if not k.startswith("$")}
    return clone(item)


def _element_key(item: dict[str, Any], key: str) -> str:
    if key == MERGE_KEYS["ports"] and key not in item and SERVICE_PORT_KEY in item:
        return SERVICE_PORT_KEY
    return key


def _merge_list_by_key(current: list[Any], patch: list[Any], list_key: str) -> list[Any]:
    result = [clone(item) for item in current]
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [_strip_directives(item) for item in patch if not (isinstance(item, dict) and "$patch" in item)]
    for item in patch:
        key = _element_key(item, list_key) if isinstance(item, dict) else list_key
        if not isinstance(item, dict) or key not in item:
            result.append(_strip_directives(item))
            continue
        index = next((i for i, existing in enumerate(result)
                      if isinstance(existing, dict) and existing.get(key) == item[key]), None)
        if _is_delete(item):
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append(_strip_directives(item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise errors.bad_request(f"invalid JSON pointer {path!r}: must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    """The node at `parts` below `doc`; 422 naming `path` when a step is missing."""
    node = doc
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _unprocessable(f"doc is missing path: \"{path}\"")
    return node


def _parent(doc: Any, parts: list[str], path: str) -> tuple[Any, str]:
    return _walk(doc, parts[:-1], path), parts[-1]


def _unprocessable(message: str) -> errors.ApiError:
    return errors.ApiError(422, "Invalid", message)


def _get(doc: Any, path: str) -> Any:
    return _walk(doc, _pointer(path), path)


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return clone(value)
    parent, last = _parent(doc, parts, path)
    if isinstance(parent, dict):
        parent[last] = clone(value)
    elif isinstance(parent, list):
        if last == "-":
            parent.append(clone(value))
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), clone(value))
        else:
            raise _unprocessable(f"add operation does not apply: doc is missing path: \"{path}\"")
    else:
        raise _unprocessable(f"add operation does not apply: doc is missing path: \"{path}\"")
    return doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise _unprocessable("cannot remove the whole document")
    parent, last = _parent(doc, parts, path)
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise _unprocessable(f"remove operation does not apply: doc is missing path: \"{path}\"")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902. A failed `test` or a missing path → 422, a malformed operation → 400."""
    if not isinstance(operations, list):
        raise errors.bad_request("json patch must be a list of operations")
    doc = clone(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise errors.bad_request(f"invalid JSON patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise errors.bad_request(f"missing value for {kind} operation on {path}")
        if kind == "add":
            doc = _add(doc, path, op["value"])
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _remove(doc, path) if _pointer(path) else doc
            doc = _add(doc, path, op["value"])
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise _unprocessable(f"the server rejected our request due to an error in our request: "
                                     f"testing value {path} failed")
        elif kind in ("move", "copy"):
            if "from" not in op:
                raise errors.bad_request(f"missing from for {kind} operation on {path}")
            value = clone(_get(doc, op["from"]))
            if kind == "move":
                doc = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        else:
            raise errors.bad_request(f"unexpected JSON patch operation {kind!r}")
    return doc


def apply_patch(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Dispatch on the request's Content-Type (parameters such as charset ignored)."""
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media == JSON_PATCH:
        result = json_patch(target, patch)
    elif media == MERGE_PATCH:
        if not isinstance(patch, dict):
            raise errors.bad_request("merge patch must be a JSON object")
        result = merge_patch(target, patch)
    elif media == STRATEGIC_MERGE_PATCH:
        if not isinstance(patch, dict):
            raise errors.bad_request("strategic merge patch must be a JSON object")
        result = strategic_merge_patch(target, patch)
    else:
        raise errors.unsupported_media_type(media or "none")
    if not isinstance(result, dict):
        raise errors.bad_request("the patch replaced the object with a non-object")
    return result
