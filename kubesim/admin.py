"""The non-standard admin API under /_sim/ (kubesim-reference §4.7): clock, nodes, load, pod
behaviours, faults, request log, metrics switch, snapshot/restore/reset.

Other processes (the service's Celery workers, its tests) drive the simulator through these routes,
usually via `kubesim.admin_client.SimAdminClient`. Bad input is a 400 with `{"error": ...}`; unknown
routes are 404; simulator errors surface as the Status the simulator raised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from kubesim import errors

Result = tuple[int, Any]


class AdminError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _body(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdminError(400, f"body is not valid JSON: {exc}") from exc


def _object(raw: bytes) -> dict[str, Any]:
    body = _body(raw)
    if not isinstance(body, dict):
        raise AdminError(400, "body must be a JSON object")
    return body


def _number(body: dict[str, Any], key: str, minimum: float = 0) -> float:
    value = body.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < minimum:
        raise AdminError(400, f"'{key}' must be a number >= {minimum}")
    return float(value)


def _clock(server: Any, _m: str, _g: tuple[str, ...], _q: dict[str, str], _raw: bytes) -> Result:
    clock = server.sim.clock
    return 200, {"now": clock.now(), "virtual": bool(getattr(clock, "virtual", False))}


def _advance(server: Any, _m: str, _g: tuple[str, ...], _q: dict[str, str], raw: bytes) -> Result:
    seconds = _number(_object(raw), "seconds")
    try:
        server.sim.advance(seconds)
    except ValueError as exc:
        raise AdminError(400, str(exc)) from exc
    return _clock(server, "", (), {}, b"")


def _settle(server: Any, _m: str, _g: tuple[str, ...], _q: dict[str, str], raw: bytes) -> Result:
    body = _object(raw)
    timeout = _number(body, "timeout") if "timeout" in body else 10.0
    server.sim.settle(timeout)
    return 200, {"settled": True}


def _add_nodes(server: Any, _m: str, _g: tuple[str, ...], _q: dict[str, str], raw: bytes) -> Result:
    spec = _object(raw).get("spec")
    if not isinstance(spec, str) or not spec:
        raise AdminError(400, "'spec' must be a node spec such as '2xnvidia-h100-80gb:8'")
    try:
        names = server.sim.add_nodes(spec)
    except ValueError as exc:
        raise AdminError(400, str(exc)) from exc
    return 201, {"nodes": names}


def _node_action(server: Any, method: str, groups: tuple[str, ...], _q: dict[str, str], raw: bytes) -> Result:
    name, action = groups[0], groups[1] if len(groups) > 1 else None
    sim = server.sim
    if sim.store.try_get("nodes", "", name) is None:
        raise AdminError(404, f'node "{name}" not found')
    try:
        if action is None and method == "DELETE":
            sim.remove_node(name)
        elif action == "fail" and method == "POST":
            mode = _object(raw).get("mode", "NotReady")
            if mode not in ("NotReady", "Unknown"):
                raise AdminError(400, "'mode' must be 'NotReady' or 'Unknown'")
            sim.fail_node(name, mode)
        elif action == "recover" and method == "POST":
            sim.recover_node(name)
        elif action == "gpus" and method == "POST":
            allocatable = _object(raw).get("allocatable")
            if not isinstance(allocatable, int) or isinstance(allocatable, bool) or allocatable < 0:
                raise AdminError(400, "'allocatable' must be a non-negative integer")
            sim.set_node_gpus(name, allocatable)
        else:
            raise AdminError(405, f"{method} is not supported here")
    except ValueError as exc:
        raise AdminError(400, str(exc)) from exc
    return 200, {"node": name, "action": action or "removed"}


def _load(server: Any, method: str, groups: tuple[str, ...], _q: dict[str, str], raw: bytes) -> Result:
    sim = server.sim
    if not groups:
        if method != "GET":
            raise AdminError(405, f"{method} is not supported here")
        return 200, {"loads": [{"namespace": ns, "deployment": name, "load": load}
                               for (ns, name), load in sorted(sim.loads.items())]}
    if method != "PUT":
        raise AdminError(405, f"{method} is not supported here")
    namespace, deployment = groups
    try:
        sim.set_load(namespace, deployment, _object(raw))
    except ValueError as exc:
        raise AdminError(400, str(exc)) from exc
    return 200, {"namespace": namespace, "deployment": deployment, "load": sim.loads.get((namespace, deployment))}


def _behaviors(server: Any, method: str, groups: tuple[str, ...], _q: dict[str, str], raw: bytes) -> Result:
    sim = server.sim
    behavior_id = groups[0] if groups else None
    if behavior_id is None and method == "GET":
        return 200, {"behaviors": sim.pod_behaviors()}
    if behavior_id is None and method == "POST":
        try:
            new_id = sim.add_pod_behavior(_object(raw))
        except ValueError as exc:
            raise AdminError(400, str(exc)) from exc
        return 201, {"id": new_id}
    if behavior_id is None and method == "DELETE":
        for behavior in sim.pod_behaviors():
            sim.remove_pod_behavior(behavior["id"])
        return 200, {"removed": "all"}
    if behavior_id is not None and method == "DELETE":
        try:
            sim.remove_pod_behavior(behavior_id)
        except KeyError as exc:
            raise AdminError(404, f'pod behavior "{behavior_id}" not found') from exc
        return 200, {"removed": behavior_id}
    raise AdminError(405, f"{method} is not supported here")


def _faults(server: Any, method: str, groups: tuple[str, ...], _q: dict[str, str], raw: bytes) -> Result:
    faults = server.faults
    fault_id = groups[0] if groups else None
    if fault_id is None and method == "GET":
        return 200, {"faults": faults.rules()}
    if fault_id is None and method == "POST":
        return 201, {"id": faults.add(_object(raw))}
    if fault_id is None and method == "DELETE":
        faults.clear()
        return 200, {"removed": "all"}
    if fault_id is not None and method == "DELETE":
        faults.remove(fault_id)
        return 200, {"removed": fault_id}
    raise AdminError(405, f"{method} is not supported here")


def _requests(server: Any, method: str, _g: tuple[str, ...], query: dict[str, str], _raw: bytes) -> Result:
    log = server.request_log
    if method == "DELETE":
        log.clear()
        return 200, {"cleared": True}
    if method != "GET":
        raise AdminError(405, f"{method} is not supported here")
    try:
        entries = log.entries(query.get("method"), query.get("path"))
    except re.error as exc:
        raise AdminError(400, f"invalid path regex: {exc}") from exc
    # The admin API's own requests are noise for wire-contract assertions.
    return 200, {"requests": [e.as_dict() for e in entries if not e.path.startswith("/_sim")]}


def _metrics_switch(server: Any, method: str, _g: tuple[str, ...], _q: dict[str, str], raw: bytes) -> Result:
    if method == "GET":
        return 200, {"available": server.sim.metrics_available}
    if method != "POST":
        raise AdminError(405, f"{method} is not supported here")
    available = _object(raw).get("available")
    if not isinstance(available, bool):
        raise AdminError(400, "'available' must be true or false")
    server.sim.metrics_available = available
    return 200, {"available": available}


def _snapshot(server: Any, method: str, _g: tuple[str, ...], _q: dict[str, str], _raw: bytes) -> Result:
    if method != "GET":
        raise AdminError(405, f"{method} is not supported here")
    return 200, server.sim.snapshot()


def _restore(server: Any, method: str, _g: tuple[str, ...], _q: dict[str, str], raw: bytes) -> Result:
    if method != "POST":
        raise AdminError(405, f"{method} is not supported here")
    body = _object(raw)
    try:
        server.sim.restore(body)
    except (KeyError, TypeError, ValueError) as exc:
        raise AdminError(400, f"not a kubesim snapshot: {exc}") from exc
    return 200, {"restored": True}


def _reset(server: Any, method: str, _g: tuple[str, ...], _q: dict[str, str], _raw: bytes) -> Result:
    if method != "POST":
        raise AdminError(405, f"{method} is not supported here")
    server.sim.reset()
    server.faults.clear()
    server.request_log.clear()
    return 200, {"reset": True}


Handler = Callable[[Any, str, tuple[str, ...], dict[str, str], bytes], Result]
ROUTES: list[tuple[re.Pattern[str], frozenset[str], Handler]] = [
    (re.compile(r"^/_sim/clock$"), frozenset({"GET"}), _clock),
    (re.compile(r"^/_sim/clock/advance$"), frozenset({"POST"}), _advance),
    (re.compile(r"^/_sim/settle$"), frozenset({"POST"}), _settle),
    (re.compile(r"^/_sim/nodes$"), frozenset({"POST"}), _add_nodes),
    (re.compile(r"^/_sim/nodes/([^/]+)$"), frozenset({"DELETE"}), _node_action),
    (re.compile(r"^/_sim/nodes/([^/]+)/(fail|recover|gpus)$"), frozenset({"POST"}), _node_action),
    (re.compile(r"^/_sim/load$"), frozenset({"GET"}), _load),
    (re.compile(r"^/_sim/load/([^/]+)/([^/]+)$"), frozenset({"PUT"}), _load),
    (re.compile(r"^/_sim/pod-behaviors$"), frozenset({"GET", "POST", "DELETE"}), _behaviors),
    (re.compile(r"^/_sim/pod-behaviors/([^/]+)$"), frozenset({"DELETE"}), _behaviors),
    (re.compile(r"^/_sim/faults$"), frozenset({"GET", "POST", "DELETE"}), _faults),
    (re.compile(r"^/_sim/faults/([^/]+)$"), frozenset({"DELETE"}), _faults),
    (re.compile(r"^/_sim/requests$"), frozenset({"GET", "DELETE"}), _requests),
    (re.compile(r"^/_sim/metrics$"), frozenset({"GET", "POST"}), _metrics_switch),
    (re.compile(r"^/_sim/snapshot$"), frozenset({"GET"}), _snapshot),
    (re.compile(r"^/_sim/restore$"), frozenset({"POST"}), _restore),
    (re.compile(r"^/_sim/reset$"), frozenset({"POST"}), _reset),
]


def handle(server: Any, method: str, path: str, query: dict[str, str], raw: bytes) -> Result:
    """Route one admin request; returns (HTTP status, JSON body)."""
    path = path.rstrip("/")
    try:
        for pattern, methods, handler in ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            if method not in methods:
                raise AdminError(405, f"{method} is not allowed on {path}; use {', '.join(sorted(methods))}")
            return handler(server, method, match.groups(), query, raw)
        raise AdminError(404, f"no admin route {path}")
    except AdminError as exc:
        return exc.code, {"error": exc.message}
    except errors.ApiError as exc:
        return exc.code, exc.status()
