"""Server-side `Table` output for `kubectl get` (kubesim-reference §3.7).

Without tables kubectl shows only NAME and AGE, so the columns follow upstream
`pkg/printers/internalversion/printers.go`; priority-1 columns appear with `-o wide`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubesim.clock import parse_rfc3339
from kubesim.selectors import selector_to_string

Obj = dict[str, Any]
Column = tuple[str, str, int, str]  # name, type, priority, format


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery duration.HumanDuration."""
    total = int(seconds)
    if total < -1:
        return "<invalid>"
    if total < 0:
        return "0s"
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        rest = total % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = total // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if rest == 0 else f"{hours // 24 // 365}y{rest}d"
    return f"{hours // 24 // 365}y"


def _since(timestamp: str | None, now: float) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        return human_duration(now - parse_rfc3339(timestamp))
    except ValueError:
        return "<unknown>"


def _age(obj: Obj, now: float) -> str:
    return _since(obj["metadata"].get("creationTimestamp"), now)


# ----------------------------------------------------------------------------- per-kind rows


def pod_status_reason(pod: Obj) -> tuple[str, int, int, int, str | None]:
    """kubectl printPod: (STATUS, ready containers, total containers, restarts, last restart time)."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    total = len(spec.get("containers") or [])
    total += sum(1 for c in init_specs.values() if c.get("restartPolicy") == "Always")
    ready = restarts = sidecar_restarts = 0
    last_restart: str | None = None
    sidecar_last: str | None = None
    initializing = False
    for index, cs in enumerate(status.get("initContainerStatuses") or []):
        restarts += int(cs.get("restartCount") or 0)
        finished = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        if finished and (last_restart is None or finished > last_restart):
            last_restart = finished
        sidecar = (init_specs.get(cs.get("name")) or {}).get("restartPolicy") == "Always"
        if sidecar:
            sidecar_restarts += int(cs.get("restartCount") or 0)
            if finished and (sidecar_last is None or finished > sidecar_last):
                sidecar_last = finished
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated is not None and terminated.get("exitCode") == 0:
            continue
        if sidecar and cs.get("started"):
            if cs.get("ready"):
                ready += 1
            continue
        if terminated is not None:
            if terminated.get("reason"):
                reason = "Init:" + terminated["reason"]
            elif terminated.get("signal"):
                reason = f"Init:Signal:{terminated['signal']}"
            else:
                reason = f"Init:ExitCode:{terminated.get('exitCode', 0)}"
        elif waiting is not None and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{index}/{len(init_specs)}"
        initializing = True
        break
    initialized = any(c.get("type") == "Initialized" and c.get("status") == "True"
                      for c in status.get("conditions") or [])
    if not initializing or initialized:
        restarts, last_restart = sidecar_restarts, sidecar_last
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += int(cs.get("restartCount") or 0)
            finished = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
            if finished and (last_restart is None or finished > last_restart):
                last_restart = finished
            state = cs.get("state") or {}
            waiting, terminated = state.get("waiting"), state.get("terminated")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated is not None and terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated is not None:
                reason = (f"Signal:{terminated['signal']}" if terminated.get("signal")
                          else f"ExitCode:{terminated.get('exitCode', 0)}")
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            pod_ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                            for c in status.get("conditions") or [])
            reason = "Running" if pod_ready else "NotReady"
    if pod["metadata"].get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif phase not in ("Succeeded", "Failed"):
            reason = "Terminating"
    return reason, ready, total, restarts, last_restart


def _pod_row(pod: Obj, now: float) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    reason, ready, total, restarts, last_restart = pod_status_reason(pod)
    restarts_text = str(restarts)
    if restarts and last_restart:
        restarts_text = f"{restarts} ({_since(last_restart, now)} ago)"
    ips = status.get("podIPs") or []
    ip = (ips[0].get("ip") if ips else None) or status.get("podIP") or "<none>"
    gates = spec.get("readinessGates") or []
    gates_text = "<none>"
    if gates:
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        true_count = sum(1 for g in gates if conditions.get(g.get("conditionType")) == "True")
        gates_text = f"{true_count}/{len(gates)}"
    return [pod["metadata"]["name"], f"{ready}/{total}", reason, restarts_text, _age(pod, now), ip,
            spec.get("nodeName") or "<none>", status.get("nominatedNodeName") or "<none>", gates_text]


def node_status_text(node: Obj) -> str:
    conditions = {c.get("type"): c.get("status") for c in (node.get("status") or {}).get("conditions") or []}
    parts = []
    if "Ready" in conditions:
        parts.append("Ready" if conditions["Ready"] == "True" else "NotReady")
    else:
        parts.append("Unknown")
    if (node.get("spec") or {}).get("unschedulable"):
        parts.append("SchedulingDisabled")
    return ",".join(parts)


def _node_row(node: Obj, now: float) -> list[Any]:
    labels = node["metadata"].get("labels") or {}
    roles = sorted({key.split("/", 1)[1] for key in labels
                    if key.startswith("node-role.kubernetes.io/") and key.split("/", 1)[1]}
                   | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set()))
    status = node.get("status") or {}
    info = status.get("nodeInfo") or {}
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return [node["metadata"]["name"], node_status_text(node), ",".join(roles) or "<none>", _age(node, now),
            info.get("kubeletVersion", ""), addresses.get("InternalIP") or "<none>",
            addresses.get("ExternalIP") or "<none>", info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>", info.get("containerRuntimeVersion") or "<unknown>"]


def _containers_images(template_spec: Obj) -> tuple[str, str]:
    containers = template_spec.get("containers") or []
    return (",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers))


def _deployment_row(obj: Obj, now: float) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers_images(((spec.get("template") or {}).get("spec")) or {})
    return [obj["metadata"]["name"], f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0), _age(obj, now), names, images,
            selector_to_string(spec.get("selector")) or "<none>"]


def _replicaset_row(obj: Obj, now: float) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers_images(((spec.get("template") or {}).get("spec")) or {})
    return [obj["metadata"]["name"], spec.get("replicas", 0), status.get("replicas", 0),
            status.get("readyReplicas", 0), _age(obj, now), names, images,
            selector_to_string(spec.get("selector")) or "<none>"]


def _daemonset_row(obj: Obj, now: float) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    template_spec = ((spec.get("template") or {}).get("spec")) or {}
    names, images = _containers_images(template_spec)
    node_selector = ",".join(f"{k}={v}" for k, v in sorted((template_spec.get("nodeSelector") or {}).items()))
    return [obj["metadata"]["name"], status.get("desiredNumberScheduled", 0), status.get("currentNumberScheduled", 0),
            status.get("numberReady", 0), status.get("updatedNumberScheduled", 0), status.get("numberAvailable", 0),
            node_selector or "<none>", _age(obj, now), names, images,
            selector_to_string(spec.get("selector")) or "<none>"]


def _pdb_row(obj: Obj, now: float) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [obj["metadata"]["name"], str(spec.get("minAvailable", "N/A")), str(spec.get("maxUnavailable", "N/A")),
            status.get("disruptionsAllowed", 0), _age(obj, now)]


def _service_row(obj: Obj, now: float) -> list[Any]:
    spec = obj.get("spec") or {}
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    external = ",".join(i.get("ip") or i.get("hostname") or "" for i in ingress) or (
        spec.get("externalName") or ("<pending>" if spec.get("type") == "LoadBalancer" else "<none>"))
    ports = []
    for port in spec.get("ports") or []:
        text = f"{port.get('port')}"
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        ports.append(f"{text}/{port.get('protocol', 'TCP')}")
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    return [obj["metadata"]["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP") or "<none>", external,
            ",".join(ports) or "<none>", _age(obj, now), selector or "<none>"]


def _event_row(obj: Obj, now: float) -> list[Any]:
    involved = obj.get("involvedObject") or {}
    last = obj.get("lastTimestamp") or obj.get("eventTime") or obj["metadata"].get("creationTimestamp")
    if isinstance(last, str) and "." in last:  # eventTime is MicroTime
        last = last.split(".", 1)[0] + "Z"
    first = obj.get("firstTimestamp") or last
    source = obj.get("source") or {}
    source_text = ", ".join(v for v in (source.get("component"), source.get("host")) if v)
    return [_since(last, now), obj.get("type", ""), obj.get("reason", ""),
            f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}", involved.get("fieldPath", ""),
            source_text or obj.get("reportingComponent", ""), obj.get("message", ""), _since(first, now),
            obj.get("count", 1), obj["metadata"]["name"]]


def _namespace_row(obj: Obj, now: float) -> list[Any]:
    return [obj["metadata"]["name"], (obj.get("status") or {}).get("phase", "Active"), _age(obj, now)]


def _lease_row(obj: Obj, now: float) -> list[Any]:
    return [obj["metadata"]["name"], (obj.get("spec") or {}).get("holderIdentity") or "<none>", _age(obj, now)]


def _endpoints_text(obj: Obj, shown: int = 3) -> str:
    """printEndpoints' formatEndpoints: the first three `ip:port`s, then ` + N more...`."""
    subsets = obj.get("subsets") or []
    if not subsets:
        return "<none>"
    listed: list[str] = []
    count = 0
    for subset in subsets:
        addresses = [a.get("ip", "") for a in subset.get("addresses") or []]
        ports = [p.get("port") for p in subset.get("ports") or []] or [None]  # headless: bare IPs
        for port in ports:
            count += len(addresses)
            for ip in addresses:
                if len(listed) < shown:
                    host = f"[{ip}]" if ":" in ip else ip
                    listed.append(ip if port is None else f"{host}:{port}")
    text = ",".join(listed)
    return f"{text} + {count - shown} more..." if count > shown else text


def _endpoints_row(obj: Obj, now: float) -> list[Any]:
    return [obj["metadata"]["name"], _endpoints_text(obj), _age(obj, now)]


def _default_row(obj: Obj, _now: float) -> list[Any]:
    return [obj["metadata"]["name"], obj["metadata"].get("creationTimestamp", "")]


_NAME: Column = ("Name", "string", 0, "name")
_AGE: Column = ("Age", "string", 0, "")
TABLES: dict[str, tuple[list[Column], Callable[[Obj, float], list[Any]]]] = {
    "pods": ([_NAME, ("Ready", "string", 0, ""), ("Status", "string", 0, ""), ("Restarts", "string", 0, ""), _AGE,
              ("IP", "string", 1, ""), ("Node", "string", 1, ""), ("Nominated Node", "string", 1, ""),
              ("Readiness Gates", "string", 1, "")], _pod_row),
    "nodes": ([_NAME, ("Status", "string", 0, ""), ("Roles", "string", 0, ""), _AGE, ("Version", "string", 0, ""),
               ("Internal-IP", "string", 1, ""), ("External-IP", "string", 1, ""), ("OS-Image", "string", 1, ""),
               ("Kernel-Version", "string", 1, ""), ("Container-Runtime", "string", 1, "")], _node_row),
    "deployments": ([_NAME, ("Ready", "string", 0, ""), ("Up-to-date", "integer", 0, ""),
                     ("Available", "integer", 0, ""), _AGE, ("Containers", "string", 1, ""),
                     ("Images", "string", 1, ""), ("Selector", "string", 1, "")], _deployment_row),
    "replicasets": ([_NAME, ("Desired", "integer", 0, ""), ("Current", "integer", 0, ""),
                     ("Ready", "integer", 0, ""), _AGE, ("Containers", "string", 1, ""),
                     ("Images", "string", 1, ""), ("Selector", "string", 1, "")], _replicaset_row),
    "daemonsets": ([_NAME, ("Desired", "integer", 0, ""), ("Current", "integer", 0, ""), ("Ready", "integer", 0, ""),
                    ("Up-to-date", "integer", 0, ""), ("Available", "integer", 0, ""),
                    ("Node Selector", "string", 0, ""), _AGE, ("Containers", "string", 1, ""),
                    ("Images", "string", 1, ""), ("Selector", "string", 1, "")], _daemonset_row),
    "poddisruptionbudgets": ([_NAME, ("Min Available", "string", 0, ""), ("Max Unavailable", "string", 0, ""),
                              ("Allowed Disruptions", "integer", 0, ""), _AGE], _pdb_row),
    "services": ([_NAME, ("Type", "string", 0, ""), ("Cluster-IP", "string", 0, ""), ("External-IP", "string", 0, ""),
                  ("Port(s)", "string", 0, ""), _AGE, ("Selector", "string", 1, "")], _service_row),
    "events": ([("Last Seen", "string", 0, ""), ("Type", "string", 0, ""), ("Reason", "string", 0, ""),
                ("Object", "string", 0, ""), ("Subobject", "string", 1, ""), ("Source", "string", 1, ""),
                ("Message", "string", 0, ""), ("First Seen", "string", 1, ""), ("Count", "string", 1, ""),
                ("Name", "string", 1, "name")], _event_row),
    "namespaces": ([_NAME, ("Status", "string", 0, ""), _AGE], _namespace_row),
    "leases": ([_NAME, ("Holder", "string", 0, ""), _AGE], _lease_row),
    "endpoints": ([_NAME, ("Endpoints", "string", 0, ""), _AGE], _endpoints_row),
}
DEFAULT_TABLE: tuple[list[Column], Callable[[Obj, float], list[Any]]] = (
    [_NAME, ("Created At", "date", 0, "")], _default_row)


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _row_object(obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def build_table(plural: str, items: list[Obj], now: float, list_meta: dict[str, Any] | None = None,
                include_object: str = "Metadata") -> dict[str, Any]:
    columns, row_fn = TABLES.get(plural, DEFAULT_TABLE)
    rows = []
    for obj in items:
        row: dict[str, Any] = {"cells": row_fn(obj, now)}
        embedded = _row_object(obj, include_object)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta or {},
        "columnDefinitions": [{"name": name, "type": kind, "format": fmt, "description": "", "priority": priority}
                              for name, kind, priority, fmt in columns],
        "rows": rows,
    }
