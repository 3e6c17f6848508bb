"""The Deployment controller: template hash → ReplicaSet, rolling updates, Recreate, status and conditions.

The arithmetic follows kube-controller-manager (pkg/controller/deployment): maxSurge rounds up and
maxUnavailable down (both 0 → maxUnavailable 1); the new ReplicaSet grows within replicas + maxSurge;
old ReplicaSets shrink while keeping replicas - maxUnavailable available, unhealthy ones first. With
the default 25 % surge on a GPU-full cluster this is what strands the surge pod Pending — the bug the
simulator exists to show.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Hashable, Iterable
from typing import Any

from kubesim import errors
from kubesim.clock import parse_rfc3339, rfc3339
from kubesim.controllers.common import (
    Controller,
    Obj,
    controller_keys,
    controller_ref,
    int_or_percent,
    is_deleting,
    is_terminal,
    key_of,
    own_keys,
    owner_reference,
    write_fields,
    write_status,
)
from kubesim.store import WatchEvent

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
COMPONENT = "deployment-controller"


def template_hash(template: Obj, collision_count: int = 0) -> str:
    """controller.ComputeHash's shape: a 32-bit hash of the template (and the collision count), rendered with
    rand.SafeEncodeString. CRC-32 stands in for Go's FNV-32a: the JSON rendering already differs from Go's deep
    hash printer, so the values never matched a real cluster's, and FNV in pure Python cost ~0.1 ms a template."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    return "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in str(zlib.crc32(data)).encode())


def _without_hash_and_nulls(value: Any) -> Any:
    """A template as Go's typed structs see it: JSON nulls are unset fields, and the hash label is ignored."""
    if isinstance(value, dict):
        return {k: _without_hash_and_nulls(v) for k, v in value.items() if v is not None and k != HASH_LABEL}
    if isinstance(value, list):
        return [_without_hash_and_nulls(v) for v in value]
    return value


def _find_equal_template(owned: list[Obj], template: Obj) -> Obj | None:
    """FindNewReplicaSet's EqualIgnoreHash fallback: the oldest owned RS whose template equals the Deployment's.

    `kubectl rollout undo` copies an old RS's template back, and kubectl sends `creationTimestamp: null` in
    template metadata, so the hash differs while the template is the same: the old RS must be reused.
    """
    if not owned:
        return None  # a new Deployment owns nothing yet: skip normalising its template
    wanted = _without_hash_and_nulls(template)
    candidates = sorted(owned, key=lambda r: (r["metadata"].get("creationTimestamp", ""), r["metadata"]["name"]))
    return next((rs for rs in candidates
                 if _without_hash_and_nulls((rs.get("spec") or {}).get("template") or {}) == wanted), None)


def _revision(rs: Obj) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _replicas(obj: Obj) -> int:
    return int((obj.get("spec") or {}).get("replicas", 1))


def _status(obj: Obj, field: str) -> int:
    return int((obj.get("status") or {}).get(field) or 0)


class DeploymentController(Controller):
    name = "deployment"
    ignores_own_writes = True
    resync_plural = "deployments"

    def reset(self) -> None:
        self._hashes: dict[tuple[str, int, int], str] = {}

    def _hash(self, deployment: Obj) -> str:
        """The template hash, cached per spec generation (a template is rendered as JSON to be hashed)."""
        collisions = int((deployment.get("status") or {}).get("collisionCount") or 0)
        key = (deployment["metadata"]["uid"], int(deployment["metadata"].get("generation", 1)), collisions)
        cached = self._hashes.get(key)
        if cached is None:
            if len(self._hashes) > 10_000:
                self._hashes.clear()
            cached = self._hashes[key] = template_hash((deployment.get("spec") or {}).get("template") or {},
                                                      collisions)
        return cached

    def keys_for(self, event: WatchEvent) -> Iterable[Hashable]:
        if event.plural == "deployments":
            return own_keys(event)
        if event.plural == "replicasets":
            return controller_keys(event, "Deployment")
        if event.plural == "pods" and (event.type == "DELETED" or is_terminal(event.obj)):
            ref = controller_ref(event.obj)  # Recreate waits for the old pods to be gone
            if ref is not None and ref.get("kind") == "ReplicaSet":
                rs = self.store.try_get("replicasets", event.namespace, ref["name"])
                owner = controller_ref(rs) if rs is not None else None
                if owner is not None and owner.get("kind") == "Deployment":
                    return ((event.namespace, owner["name"]),)
        return ()

    # ----------------------------------------------------------------- reconcile

    def reconcile(self, key: Hashable) -> None:
        namespace, name = key  # type: ignore[misc]
        with self.store.lock:
            deployment = self.store.try_get("deployments", namespace, name)
            if deployment is None or is_deleting(deployment):
                return
            uid = deployment["metadata"]["uid"]
            owned = [rs for rs in self.sim.owners.controlled(uid, "replicasets") if not is_deleting(rs)]
            spec = deployment.get("spec") or {}
            pod_hash = self._hash(deployment)
            new_rs = next((rs for rs in owned if (rs["metadata"].get("labels") or {}).get(HASH_LABEL) == pod_hash),
                          None) or _find_equal_template(owned, spec.get("template") or {})
            old_rss = sorted((rs for rs in owned if rs is not new_rs),
                             key=lambda r: (r["metadata"].get("creationTimestamp", ""), r["metadata"]["name"]))
            created_message = None
            if spec.get("paused"):
                self._sync_status(deployment, new_rs, old_rss, None)
                return
            if new_rs is None:
                new_rs = self._create_new_rs(deployment, pod_hash, old_rss)
                if new_rs is None:
                    return
                created_message = f'Created new replica set "{new_rs["metadata"]["name"]}"'
            else:
                new_rs = self._ensure_revision(deployment, new_rs, old_rss)
            if (spec.get("strategy") or {}).get("type") == "Recreate":
                new_rs = self._recreate(deployment, new_rs, old_rss)
            else:
                new_rs = self._rolling(deployment, new_rs, old_rss)
            old_rss = [self.store.try_get("replicasets", namespace, rs["metadata"]["name"]) or rs for rs in old_rss]
            self._sync_status(deployment, new_rs, old_rss, created_message)

    # ----------------------------------------------------------------- replica sets

    def _create_new_rs(self, deployment: Obj, pod_hash: str, old_rss: list[Obj]) -> Obj | None:
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        # Copies only along the paths that get the hash label; the rest is shared with the stored Deployment
        # until store.create clones the new ReplicaSet (once, rather than the pod template twice).
        source = spec.get("template") or {}
        template_meta = dict(source.get("metadata") or {})
        template_meta["labels"] = {**(template_meta.get("labels") or {}), HASH_LABEL: pod_hash}
        template = {**source, "metadata": template_meta}
        source_selector = spec.get("selector") or {}
        match_labels = {**(source_selector.get("matchLabels") or {}), HASH_LABEL: pod_hash}
        selector = {**source_selector, "matchLabels": match_labels}
        revision = max([_revision(rs) for rs in old_rss] or [0]) + 1
        surge, _ = self._surge_unavailable(deployment)
        desired = _replicas(deployment)
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        initial = 0 if recreate and old_rss else self._new_rs_target(deployment, 0, old_rss, surge)
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                       if k not in ("kubectl.kubernetes.io/last-applied-configuration", REVISION)}
        annotations.update({REVISION: str(revision), DESIRED: str(desired), MAX_REPLICAS: str(desired + surge)})
        rs = {
            "metadata": {
                "name": f"{meta['name']}-{pod_hash}",
                "namespace": meta["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "annotations": annotations,
                "ownerReferences": [owner_reference(deployment)],
            },
            "spec": {
                "replicas": initial,
                "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                "selector": selector,
                "template": template,
            },
        }
        try:
            created = self.store.create("replicasets", rs)
        except errors.ApiError as exc:
            if exc.code == 409:  # a foreign RS took the name: bump collisionCount and hash again
                def bump(obj: Obj) -> None:
                    status = obj.setdefault("status", {})
                    status["collisionCount"] = int(status.get("collisionCount") or 0) + 1

                self.store.mutate("deployments", meta["namespace"], meta["name"], bump)
            else:
                self.sim.events.record(deployment, "FailedCreate", f"Failed to create new replica set: "
                                       f"{exc.message}", "Warning", component=COMPONENT)
            return None
        self._set_deployment_revision(deployment, revision)
        if initial:
            self._scale_event(deployment, created, 0, initial)
        return created

    def _ensure_revision(self, deployment: Obj, new_rs: Obj, old_rss: list[Obj]) -> Obj:
        """A rollback re-uses an old ReplicaSet: it becomes the newest revision again."""
        highest = max([_revision(rs) for rs in old_rss] or [0])
        revision = _revision(new_rs)
        if revision <= highest:
            revision = highest + 1

            def change(obj: Obj) -> None:
                obj["metadata"].setdefault("annotations", {})[REVISION] = str(revision)

            new_rs = self.store.mutate("replicasets", new_rs["metadata"]["namespace"], new_rs["metadata"]["name"],
                                       change)
        self._set_deployment_revision(deployment, revision)
        return new_rs

    def _set_deployment_revision(self, deployment: Obj, revision: int) -> None:
        if (deployment["metadata"].get("annotations") or {}).get(REVISION) == str(revision):
            return
        current = self.store.get("deployments", deployment["metadata"]["namespace"], deployment["metadata"]["name"])
        metadata = dict(current["metadata"])
        metadata["annotations"] = {**(metadata.get("annotations") or {}), REVISION: str(revision)}
        # A metadata-only write: spec and status stay shared with the stored version (no deep clone). The
        # spec is the very same object, so the store neither re-admits it (admission defaults in place) nor
        # compares it field by field.
        write_fields(self.store, "deployments", current, metadata=metadata)

    def _scale(self, deployment: Obj, rs: Obj, replicas: int) -> Obj:
        before = _replicas(rs)
        surge, _ = self._surge_unavailable(deployment)
        desired = _replicas(deployment)

        def change(obj: Obj) -> None:
            obj["spec"]["replicas"] = replicas
            annotations = obj["metadata"].setdefault("annotations", {})
            annotations[DESIRED] = str(desired)
            annotations[MAX_REPLICAS] = str(desired + surge)

        updated = self.store.mutate("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"], change)
        if before != replicas:
            self._scale_event(deployment, rs, before, replicas)
        return updated

    def _scale_event(self, deployment: Obj, rs: Obj, before: int, after: int) -> None:
        direction = "up" if after > before else "down"
        self.sim.events.record(deployment, "ScalingReplicaSet",
                               f"Scaled {direction} replica set {rs['metadata']['name']} from {before} to {after}",
                               component=COMPONENT)

    # ----------------------------------------------------------------- strategies

    def _surge_unavailable(self, deployment: Obj) -> tuple[int, int]:
        spec = deployment.get("spec") or {}
        strategy = spec.get("strategy") or {}
        if strategy.get("type") == "Recreate":
            return 0, 0
        rolling = strategy.get("rollingUpdate") or {}
        desired = _replicas(deployment)
        surge = int_or_percent(rolling.get("maxSurge", "25%"), desired, round_up=True)
        unavailable = int_or_percent(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        return surge, min(unavailable, desired)

    def _new_rs_target(self, deployment: Obj, current_new: int, old_rss: list[Obj], surge: int) -> int:
        desired = _replicas(deployment)
        if current_new >= desired:
            return desired
        current_total = current_new + sum(_replicas(rs) for rs in old_rss)
        room = desired + surge - current_total
        if room <= 0:
            return current_new
        return current_new + min(room, desired - current_new)

    def _rolling(self, deployment: Obj, new_rs: Obj, old_rss: list[Obj]) -> Obj:
        surge, max_unavailable = self._surge_unavailable(deployment)
        desired = _replicas(deployment)
        target = self._new_rs_target(deployment, _replicas(new_rs), old_rss, surge)
        if target != _replicas(new_rs):
            new_rs = self._scale(deployment, new_rs, target)
        old_total = sum(_replicas(rs) for rs in old_rss)
        if old_total == 0:
            if _status(new_rs, "availableReplicas") == desired and _status(new_rs, "replicas") == desired:
                self._cleanup(deployment, old_rss)
            return new_rs
        all_total = old_total + _replicas(new_rs)
        min_available = desired - max_unavailable
        new_unavailable = _replicas(new_rs) - _status(new_rs, "availableReplicas")
        max_scaled_down = all_total - min_available - new_unavailable
        if max_scaled_down <= 0:
            return new_rs
        # First remove old pods that are not available anyway: they cost nothing in availability.
        cleaned = 0
        for index, rs in enumerate(old_rss):
            if cleaned >= max_scaled_down:
                break
            unhealthy = _replicas(rs) - _status(rs, "availableReplicas")
            if unhealthy <= 0:
                continue
            cut = min(unhealthy, max_scaled_down - cleaned)
            old_rss[index] = self._scale(deployment, rs, _replicas(rs) - cut)
            cleaned += cut
        available = _status(new_rs, "availableReplicas") + sum(_status(rs, "availableReplicas") for rs in old_rss)
        if available <= min_available:
            return new_rs
        budget = available - min_available
        for index, rs in enumerate(old_rss):
            if budget <= 0:
                break
            cut = min(_replicas(rs), budget)
            if cut:
                old_rss[index] = self._scale(deployment, rs, _replicas(rs) - cut)
                budget -= cut
        return new_rs

    def _recreate(self, deployment: Obj, new_rs: Obj, old_rss: list[Obj]) -> Obj:
        for index, rs in enumerate(old_rss):
            if _replicas(rs):
                old_rss[index] = self._scale(deployment, rs, 0)
        old_pods = [p for rs in old_rss for p in self.sim.replicasets.owned_pods(rs) if not is_terminal(p)]
        if old_pods:
            return new_rs
        desired = _replicas(deployment)
        if _replicas(new_rs) != desired:
            new_rs = self._scale(deployment, new_rs, desired)
        if _status(new_rs, "availableReplicas") == desired:
            self._cleanup(deployment, old_rss)
        return new_rs

    def _cleanup(self, deployment: Obj, old_rss: list[Obj]) -> None:
        limit = int((deployment.get("spec") or {}).get("revisionHistoryLimit", 10))
        idle = [rs for rs in old_rss if _replicas(rs) == 0 and _status(rs, "replicas") == 0]
        idle.sort(key=_revision)
        for rs in idle[: max(0, len(idle) - limit)]:
            try:
                self.store.delete("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"])
            except errors.ApiError:
                continue

    # ----------------------------------------------------------------- status

    def _sync_status(self, deployment: Obj, new_rs: Obj | None, old_rss: list[Obj], created: str | None) -> None:
        old_status = deployment.get("status") or {}
        all_rss = ([new_rs] if new_rs is not None else []) + old_rss
        desired = _replicas(deployment)
        _, max_unavailable = self._surge_unavailable(deployment)
        available = sum(_status(rs, "availableReplicas") for rs in all_rss)
        total_spec = sum(_replicas(rs) for rs in all_rss)
        status: Obj = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": sum(_status(rs, "replicas") for rs in all_rss),
            "updatedReplicas": _status(new_rs, "replicas") if new_rs is not None else 0,
            "readyReplicas": sum(_status(rs, "readyReplicas") for rs in all_rss),
            "availableReplicas": available,
            "unavailableReplicas": max(0, total_spec - available),
        }
        if old_status.get("collisionCount"):
            status["collisionCount"] = old_status["collisionCount"]
        now = self.sim.clock.now()
        conditions = [dict(c) for c in old_status.get("conditions") or []]
        if available >= desired - max_unavailable:
            _set(conditions, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.",
                 now)
        else:
            _set(conditions, "Available", "False", "MinimumReplicasUnavailable",
                 "Deployment does not have minimum availability.", now)
        self._progress(deployment, new_rs, status, conditions, created, now)
        order = {"Available": 0, "Progressing": 1, "ReplicaFailure": 2}
        status["conditions"] = sorted(conditions, key=lambda c: order.get(c["type"], 9))
        write_status(self.store, "deployments", deployment, status, omit_if_zero=(
            "readyReplicas", "availableReplicas", "unavailableReplicas", "updatedReplicas", "replicas"))

    def _progress(self, deployment: Obj, new_rs: Obj | None, status: Obj, conditions: list[Obj],
                  created: str | None, now: float) -> None:
        spec = deployment.get("spec") or {}
        deadline = spec.get("progressDeadlineSeconds", 600)
        current = next((c for c in conditions if c["type"] == "Progressing"), None)
        if spec.get("paused"):
            if current is None or current.get("reason") != "DeploymentPaused":
                _set(conditions, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", now, force=True)
            return
        if current is not None and current.get("reason") == "DeploymentPaused":
            _set(conditions, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed", now, force=True)
            current = next((c for c in conditions if c["type"] == "Progressing"), None)
        if new_rs is None:
            return
        rs_name = new_rs["metadata"]["name"]
        if created is not None:
            _set(conditions, "Progressing", "True", "ReplicaSetUpdated", created, now, force=True)
            current = next(c for c in conditions if c["type"] == "Progressing")
        desired = _replicas(deployment)
        complete_before = (current is not None and current.get("reason") == "NewReplicaSetAvailable"
                           and status.get("replicas", 0) == status.get("updatedReplicas", 0))
        if complete_before:
            return
        old = deployment.get("status") or {}
        complete = (status.get("updatedReplicas", 0) == desired and status.get("replicas", 0) == desired
                    and status.get("availableReplicas", 0) == desired)
        old_others = int(old.get("replicas") or 0) - int(old.get("updatedReplicas") or 0)
        new_others = status.get("replicas", 0) - status.get("updatedReplicas", 0)
        progressing = (
            status.get("updatedReplicas", 0) > int(old.get("updatedReplicas") or 0)
            or new_others < old_others
            or status.get("readyReplicas", 0) > int(old.get("readyReplicas") or 0)
            or status.get("availableReplicas", 0) > int(old.get("availableReplicas") or 0)
        )
        if complete:
            _set(conditions, "Progressing", "True", "NewReplicaSetAvailable",
                 f'ReplicaSet "{rs_name}" has successfully progressed.', now)
        elif progressing or current is None or current.get("reason") == "DeploymentResumed":
            _set(conditions, "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.',
                 now, force=True)
        elif current.get("reason") != "ProgressDeadlineExceeded" and deadline is not None:
            since = parse_rfc3339(current.get("lastUpdateTime") or rfc3339(now))
            if now > since + int(deadline):
                _set(conditions, "Progressing", "False", "ProgressDeadlineExceeded",
                     f'ReplicaSet "{rs_name}" has timed out progressing.', now)
        current = next((c for c in conditions if c["type"] == "Progressing"), None)
        if (deadline is not None and current is not None and current.get("status") == "True"
                and current.get("reason") == "ReplicaSetUpdated"):
            since = parse_rfc3339(current.get("lastUpdateTime") or rfc3339(now))
            self.sim.schedule_at(since + int(deadline) + 1, self.name, key_of(deployment))


def _set(conditions: list[Obj], kind: str, status: str, reason: str, message: str, now: float,
         force: bool = False) -> None:
    """SetDeploymentCondition: same status and reason → unchanged (unless `force`, which refreshes lastUpdateTime)."""
    stamp = rfc3339(now)
    for index, condition in enumerate(conditions):
        if condition["type"] != kind:
            continue
        if condition.get("status") == status and condition.get("reason") == reason and not force:
            if condition.get("message") != message:
                condition["message"] = message
            return
        transition = condition["lastTransitionTime"] if condition.get("status") == status else stamp
        conditions[index] = {"type": kind, "status": status, "lastUpdateTime": stamp,
                             "lastTransitionTime": transition, "reason": reason, "message": message}
        return
    conditions.append({"type": kind, "status": status, "lastUpdateTime": stamp, "lastTransitionTime": stamp,
                       "reason": reason, "message": message})

