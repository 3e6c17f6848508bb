"""The ReplicaSet controller: keep `spec.replicas` active pods, and report their readiness.

Pods are created from the template with `generateName: <rs>-` and a controller owner reference.
Scaling down deletes pods in kube-controller-manager's preference order: unscheduled before
scheduled, Pending before Unknown before Running, not-ready before ready, ready for less time before
longer, more restarts before fewer, newer before older.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from kubesim import errors
from kubesim.controllers.common import (
    Controller,
    Obj,
    controller_keys,
    create_owned_pod,
    is_active,
    is_deleting,
    is_pod_available,
    is_pod_ready,
    key_of,
    own_keys,
    ready_since,
    templated_pod_metadata,
    write_status,
)
from kubesim.selectors import match_label_selector_object
from kubesim.store import WatchEvent, clone

PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_rank(pod: Obj) -> tuple:
    """Sort key: pods that sort first are deleted first (controller.ActivePods ordering)."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    ready = is_pod_ready(pod)
    since = ready_since(pod) or 0.0
    restarts = sum(c.get("restartCount", 0) for c in status.get("containerStatuses") or [])
    return (
        1 if spec.get("nodeName") else 0,
        PHASE_RANK.get(status.get("phase", "Pending"), 0),
        1 if ready else 0,
        -since if ready else 0.0,  # ready more recently → deleted first
        -restarts,
        _negated(pod["metadata"].get("creationTimestamp", "")),
        pod["metadata"]["name"],
    )


def _negated(stamp: str) -> tuple[int, ...]:
    return tuple(-ord(ch) for ch in stamp)


class ReplicaSetController(Controller):
    name = "replicaset"
    ignores_own_writes = True
    resync_plural = "replicasets"

    def keys_for(self, event: WatchEvent) -> Iterable[Hashable]:
        if event.plural == "replicasets":
            return own_keys(event)
        if event.plural == "pods":
            return controller_keys(event, "ReplicaSet")
        return ()

    def owned_pods(self, rs: Obj) -> list[Obj]:
        uid = rs["metadata"]["uid"]
        return self.sim.owners.controlled(uid, "pods")

    def reconcile(self, key: Hashable) -> None:
        namespace, name = key  # type: ignore[misc]
        with self.store.lock:
            rs = self.store.try_get("replicasets", namespace, name)
            if rs is None:
                return
            pods = self.owned_pods(rs)
            active = [p for p in pods if is_active(p)]
            wanted = int((rs.get("spec") or {}).get("replicas", 1))
            if not is_deleting(rs):
                if len(active) < wanted:
                    active += self._create(rs, wanted - len(active))
                elif len(active) > wanted:
                    doomed = sorted(active, key=deletion_rank)[: len(active) - wanted]
                    for pod in doomed:
                        self._delete(rs, pod)
                    gone = {p["metadata"]["name"] for p in doomed}
                    active = [p for p in active if p["metadata"]["name"] not in gone]
            self._update_status(rs, active)

    def _create(self, rs: Obj, count: int) -> list[Obj]:
        template = (rs.get("spec") or {}).get("template") or {}
        created = []
        for _ in range(count):
            # Metadata and spec are fresh copies: the store may keep the pod without cloning it again.
            pod = create_owned_pod(self.sim, rs, {
                "apiVersion": "v1", "kind": "Pod", "metadata": templated_pod_metadata(rs),
                "spec": clone(template.get("spec") or {}),
            }, "replicaset-controller", handed_over=True)
            if pod is None:
                break
            created.append(pod)
        return created

    def _delete(self, rs: Obj, pod: Obj) -> None:
        try:
            self.store.delete("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
        except errors.ApiError:
            return
        self.sim.events.record(rs, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}",
                               component="replicaset-controller")

    def _update_status(self, rs: Obj, active: list[Obj]) -> None:
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        now = self.sim.clock.now()
        selector = spec.get("selector") or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        ready = [p for p in active if is_pod_ready(p)]
        available = [p for p in ready if is_pod_available(p, min_ready, now)]
        for pod in ready:
            if pod not in available:
                since = ready_since(pod) or now
                self.sim.schedule_at(since + min_ready, self.name, key_of(rs))
        status = {
            "replicas": len(active),
            "fullyLabeledReplicas": len([p for p in active
                                         if match_label_selector_object({"matchLabels": labels},
                                                                        p["metadata"].get("labels") or {})
                                         and match_label_selector_object(selector, p["metadata"].get("labels") or {})]),
            "readyReplicas": len(ready),
            "availableReplicas": len(available),
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        write_status(self.store, "replicasets", rs, status,
                     omit_if_zero=("readyReplicas", "availableReplicas", "fullyLabeledReplicas"))
