"""Helpers every controller needs: quantities, owner references, pod and condition predicates."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from typing import Any

from kubesim import errors
from kubesim.clock import parse_rfc3339, rfc3339
from kubesim.load import parse_quantity
from kubesim.store import clone

Obj = dict[str, Any]
ObjKey = tuple[str, str]  # (namespace, name)

def millicores(text: Any) -> int:
    return math.ceil(parse_quantity(text) * 1000 - 1e-9)


def pod_requests(pod: Obj) -> dict[str, float]:
    """Effective requests as the scheduler computes them: max(sum of containers, any init container).

    cpu is in millicores, everything else in base units; a limit alone stands for the request,
    as apiserver defaulting makes it.
    """
    spec = pod.get("spec") or {}
    total: dict[str, float] = {}
    for container in spec.get("containers") or []:
        for name, value in _container_requests(container).items():
            total[name] = total.get(name, 0.0) + value
    for container in spec.get("initContainers") or []:
        for name, value in _container_requests(container).items():
            total[name] = max(total.get(name, 0.0), value)
    for name, value in (spec.get("overhead") or {}).items():
        total[name] = total.get(name, 0.0) + _resource_value(name, value)
    return total


def _container_requests(container: Obj) -> dict[str, float]:
    resources = container.get("resources") or {}
    merged = dict(resources.get("limits") or {})
    merged.update(resources.get("requests") or {})
    out = {}
    for name, value in merged.items():
        try:
            out[name] = _resource_value(name, value)
        except (TypeError, ValueError):
            continue
    return out


def _resource_value(name: str, value: Any) -> float:
    return float(millicores(value)) if name == "cpu" else parse_quantity(value)


def node_allocatable(node: Obj) -> dict[str, float]:
    out = {}
    for name, value in ((node.get("status") or {}).get("allocatable") or {}).items():
        try:
            out[name] = _resource_value(name, value)
        except (TypeError, ValueError):
            continue
    return out


def controller_ref(obj: Obj) -> Obj | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def owner_reference(owner: Obj) -> Obj:
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"], "uid": meta["uid"],
        "controller": True, "blockOwnerDeletion": True,
    }


def templated_pod_metadata(owner: Obj) -> Obj:
    """Metadata for a pod `owner` makes from its template: `generateName: <owner>-`, a controller owner reference."""
    meta = clone(((owner.get("spec") or {}).get("template") or {}).get("metadata") or {})
    meta.pop("name", None)
    meta.update(generateName=f"{owner['metadata']['name']}-", namespace=owner["metadata"]["namespace"],
                ownerReferences=[owner_reference(owner)])
    return meta


def create_owned_pod(sim: Any, owner: Obj, pod: Obj, component: str, handed_over: bool = False) -> Obj | None:
    """Create `pod` for its controller `owner` and record SuccessfulCreate or FailedCreate; None if it failed.

    `handed_over` as for `Store.create`: the caller built `pod` from private copies and shares no part of it."""
    try:
        created = sim.store.create("pods", pod, handed_over=handed_over)
    except errors.ApiError as exc:
        sim.events.record(owner, "FailedCreate", f"Error creating: {exc.message}", "Warning", component=component)
        return None
    sim.events.record(owner, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", component=component)
    return created


def key_of(obj: Obj) -> ObjKey:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


def is_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def is_deleting(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def is_active(pod: Obj) -> bool:
    """A pod a ReplicaSet counts: not finished and not being deleted (controller.FilterActivePods)."""
    return not is_terminal(pod) and not is_deleting(pod)


def get_condition(obj: Obj, kind: str) -> Obj | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def is_pod_ready(pod: Obj) -> bool:
    condition = get_condition(pod, "Ready")
    return condition is not None and condition.get("status") == "True"


def ready_since(pod: Obj) -> float | None:
    condition = get_condition(pod, "Ready")
    if condition is None or condition.get("status") != "True":
        return None
    stamp = condition.get("lastTransitionTime")
    return parse_rfc3339(stamp) if stamp else None


def is_pod_available(pod: Obj, min_ready_seconds: int, now: float) -> bool:
    since = ready_since(pod)
    if since is None:
        return False
    return min_ready_seconds <= 0 or since + min_ready_seconds <= now


def set_condition(
    conditions: list[Obj], kind: str, status: str, reason: str, message: str, now: float,
    heartbeat_field: str | None = None,
) -> bool:
    """Upsert a condition; lastTransitionTime moves only when the status changes. True if anything changed."""
    stamp = rfc3339(now)
    for condition in conditions:
        if condition.get("type") != kind:
            continue
        before = dict(condition)
        if condition.get("status") != status:
            condition["lastTransitionTime"] = stamp
        condition.update(status=status, reason=reason, message=message)
        if heartbeat_field:
            condition[heartbeat_field] = stamp
        return condition != before
    condition = {"type": kind, "status": status, "lastTransitionTime": stamp, "reason": reason, "message": message}
    if heartbeat_field:
        condition[heartbeat_field] = stamp
    conditions.append(condition)
    return True


def write_fields(store: Any, plural: str, old: Obj, **fields: Any) -> Obj:
    """Write `old` with top-level fields (status, spec, …) replaced, sharing every untouched part.

    Stored objects are never mutated in place, so a shallow copy is safe and spares the deep clone
    `store.mutate` makes — the difference between 150 and 400 pods/s at 10,000 pods. Only metadata is
    copied, because the store stamps resourceVersion into it. Call with the store lock held, so `old`
    is still current.
    """
    new = dict(old)
    new["metadata"] = dict(old["metadata"])
    new.update(fields)
    return store.write(plural, old, new)


def write_status(store: Any, plural: str, obj: Obj, status: Obj, omit_if_zero: Iterable[str] = ()) -> None:
    """Write `status` over `obj`'s unless it is unchanged; fields in `omit_if_zero` are dropped when zero (omitempty).

    Call with the store lock held; the write goes to the stored version of `obj`.
    """
    for field in omit_if_zero:
        if not status[field]:
            status.pop(field)
    if (obj.get("status") or {}) != status:
        meta = obj["metadata"]
        write_fields(store, plural, store.get(plural, meta["namespace"], meta["name"]), status=status)


def resync_all(store: Any, plural: str) -> list[Hashable]:
    return [key_of(obj) for obj in store.list(plural)[0]]


def own_keys(event: Any) -> tuple[Hashable, ...]:
    """The event's object as a work key, unless it was deleted: a deleted object has nothing to reconcile."""
    return () if event.type == "DELETED" else (key_of(event.obj),)


def controller_keys(event: Any, kind: str) -> tuple[Hashable, ...]:
    """The key of the event object's controlling owner when that owner is a `kind`, else nothing."""
    ref = controller_ref(event.obj)
    if ref is not None and ref.get("kind") == kind:
        return ((event.namespace, ref["name"]),)
    return ()


class Controller:
    """What every controller shares: the simulation, its store, and a `reset` run at start and after a restore.

    Subclasses set `name` (the work-queue name) and override `reset` when they keep caches that a restore
    must rebuild; `ignores_own_writes` opts out of being re-queued by the controller's own writes. A
    controller whose work keys are simply its objects' (namespace, name) sets `resync_plural` to them.
    """

    name = ""
    ignores_own_writes = False
    resync_plural: str | None = None

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.store = sim.store
        self.reset()

    def reset(self) -> None:
        return None

    def resync_keys(self) -> Iterable[Hashable]:
        return resync_all(self.store, self.resync_plural) if self.resync_plural else ()


def int_or_percent(value: Any, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        fraction = int(text[:-1]) * total / 100
        return math.ceil(fraction) if round_up else math.floor(fraction)
    return int(text)
