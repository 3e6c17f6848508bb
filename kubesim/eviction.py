"""The pods/eviction subresource, following the apiserver's `eviction.go` (kubesim-reference §3.8).

This is what makes `kubectl drain` and the service's own drains honour PodDisruptionBudgets: a
blocked eviction is a 429 carrying the DisruptionBudget cause, and an allowed one consumes one of the
PDB's `disruptionsAllowed` until the disruption controller recomputes it.
"""

from __future__ import annotations

from typing import Any

from kubesim import errors
from kubesim.clock import rfc3339
from kubesim.selectors import match_label_selector_object
from kubesim.store import Store, clone

Obj = dict[str, Any]
EVICTION_API_VERSIONS = ("policy/v1", "policy/v1beta1")
TOO_MANY = "Cannot evict pod as it would violate the pod's disruption budget."


def _too_many_requests(message: str) -> errors.ApiError:
    return errors.ApiError(429, "TooManyRequests", TOO_MANY,
                           {"causes": [{"reason": "DisruptionBudget", "message": message}]})


def _is_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _delete_options(body: Obj) -> Obj:
    options = body.get("deleteOptions") or {}
    if not isinstance(options, dict):
        raise errors.bad_request("deleteOptions must be an object")
    return options


def _delete(store: Store, namespace: str, name: str, options: Obj) -> None:
    grace = options.get("gracePeriodSeconds")
    store.delete("pods", namespace, name, grace_period_seconds=grace if isinstance(grace, int) else None,
                 propagation_policy=options.get("propagationPolicy"),
                 preconditions=options.get("preconditions") or None)


def _mark_disruption_target(store: Store, pod: Obj, now: float) -> None:
    """PodDisruptionConditions (GA in 1.31): the pod says why it is going away."""
    new = clone(pod)
    conditions = [c for c in (new.setdefault("status", {}).get("conditions") or [])
                  if c.get("type") != "DisruptionTarget"]
    conditions.append({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                       "message": "Eviction API: evicting", "lastProbeTime": None,
                       "lastTransitionTime": rfc3339(now)})
    new["status"]["conditions"] = conditions
    store.write("pods", pod, new)


def evict(store: Store, namespace: str, name: str, body: Any) -> Obj:
    """Handle POST …/pods/{name}/eviction; returns the 201 Success Status or raises ApiError."""
    if not isinstance(body, dict):
        raise errors.bad_request("the body of an eviction must be an Eviction object")
    api_version = body.get("apiVersion")
    if api_version is not None and api_version not in EVICTION_API_VERSIONS:
        raise errors.bad_request(f"unsupported Eviction apiVersion {api_version!r}")
    body_meta = body.get("metadata") or {}
    if body_meta.get("name") != name:
        raise errors.bad_request("name in URL does not match name in Eviction object")
    if body_meta.get("namespace") and body_meta["namespace"] != namespace:
        raise errors.bad_request("namespace in URL does not match namespace in Eviction object")
    options = _delete_options(body)
    with store.lock:
        pod = store.get("pods", namespace, name)
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Pending", "Succeeded", "Failed") or pod["metadata"].get("deletionTimestamp"):
            _delete(store, namespace, name, options)
            return errors.success_status(code=201)
        labels = pod["metadata"].get("labels") or {}
        pdbs, _ = store.list(
            "poddisruptionbudgets", namespace,
            lambda pdb: bool((pdb.get("spec") or {}).get("selector"))
            and match_label_selector_object(pdb["spec"]["selector"], labels),
        )
        if len(pdbs) > 1:
            raise errors.ApiError(500, "InternalError", "This pod has more than one PodDisruptionBudget, which the "
                                  "eviction subresource does not support.")
        if not pdbs:
            _delete(store, namespace, name, options)
            return errors.success_status(code=201)
        pdb = pdbs[0]
        pdb_name = pdb["metadata"]["name"]
        status = pdb.get("status") or {}
        if status.get("observedGeneration", 0) < pdb["metadata"].get("generation", 1):
            raise _too_many_requests(f"The disruption budget {pdb_name} is still being processed by the server.")
        desired, current = int(status.get("desiredHealthy", 0)), int(status.get("currentHealthy", 0))
        policy = (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
        if not _is_ready(pod) and (policy == "AlwaysAllow" or (current >= desired > 0)):
            # An unhealthy pod does not count towards the budget, so evicting it costs nothing.
            _delete(store, namespace, name, options)
            return errors.success_status(code=201)
        allowed = int(status.get("disruptionsAllowed", 0))
        if allowed <= 0:
            raise _too_many_requests(
                f"The disruption budget {pdb_name} needs {desired} healthy pods and has {current} currently")
        now = store.clock.now()
        new_pdb = clone(pdb)
        new_status = new_pdb.setdefault("status", {})
        new_status["disruptionsAllowed"] = allowed - 1
        new_status.setdefault("disruptedPods", {})[name] = rfc3339(now)
        store.write("poddisruptionbudgets", pdb, new_pdb)
        _mark_disruption_target(store, pod, now)
        _delete(store, namespace, name, options)
        return errors.success_status(code=201)
