"""The disruption controller: PodDisruptionBudget status (pkg/controller/disruption).

expectedPods comes from the pods' controllers (a Deployment's or ReplicaSet's replicas) when the budget
is a percentage or a maxUnavailable, and is the number of matching pods for an integer minAvailable.
Pods the eviction API recorded in `disruptedPods` do not count as healthy until they are gone or two
minutes have passed, so two quick evictions cannot both spend the same budget.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from kubesim.clock import parse_rfc3339
from kubesim.controllers.common import (
    Controller,
    Obj,
    controller_ref,
    int_or_percent,
    is_deleting,
    is_pod_ready,
    key_of,
    own_keys,
    set_condition,
)
from kubesim.selectors import SelectorIndex, match_label_selector_object
from kubesim.store import WatchEvent

DISRUPTED_POD_TIMEOUT_SECONDS = 120.0


class DisruptionController(Controller):
    name = "disruption"
    ignores_own_writes = True
    resync_plural = "poddisruptionbudgets"

    def reset(self) -> None:
        # The budgets whose selector selects a pod (or a workload's pod template), found without testing
        # every budget of the namespace on each pod, ReplicaSet and Deployment event.
        self._budgets = SelectorIndex(match_label_selector_object)
        for pdb in self.store.list("poddisruptionbudgets")[0]:
            self._index(pdb, deleted=False)

    def keys_for(self, event: WatchEvent) -> Iterable[Hashable]:
        if event.plural == "poddisruptionbudgets":
            self._index(event.obj, deleted=event.type == "DELETED")
            return own_keys(event)
        if event.plural in ("pods", "replicasets", "deployments"):
            labels = event.obj["metadata"].get("labels") or {}
            if event.plural != "pods":
                labels = (((event.obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
                    "labels") or {}
            return self._budgets.matching(event.namespace, labels)
        return ()

    def _index(self, pdb: Obj, deleted: bool) -> None:
        if deleted:
            self._budgets.remove(key_of(pdb))
            return
        selector = (pdb.get("spec") or {}).get("selector")
        required = selector.get("matchLabels") if isinstance(selector, dict) else None
        self._budgets.put(key_of(pdb), selector, required)

    def reconcile(self, key: Hashable) -> None:
        namespace, name = key  # type: ignore[misc]
        with self.store.lock:
            pdb = self.store.try_get("poddisruptionbudgets", namespace, name)
            if pdb is None or is_deleting(pdb):
                return
            spec = pdb.get("spec") or {}
            selector = spec.get("selector")
            pods = [] if selector is None else self._selected_pods(namespace, selector)
            now = self.sim.clock.now()
            disrupted = self._live_disruptions(pdb, pods, now)
            healthy = sum(1 for p in pods if not is_deleting(p) and p["metadata"]["name"] not in disrupted
                          and is_pod_ready(p))
            expected, desired = self._expected_and_desired(spec, pods)
            allowed = max(0, healthy - desired) if expected > 0 or desired <= healthy else 0
            old_status = pdb.get("status") or {}
            conditions = [dict(c) for c in old_status.get("conditions") or []]
            if allowed > 0:
                set_condition(conditions, "DisruptionAllowed", "True", "SufficientPods", "", now)
            else:
                set_condition(conditions, "DisruptionAllowed", "False", "InsufficientPods", "", now)
            for condition in conditions:
                condition["observedGeneration"] = pdb["metadata"].get("generation", 1)
            status: Obj = {
                "observedGeneration": pdb["metadata"].get("generation", 1),
                "disruptionsAllowed": allowed,
                "currentHealthy": healthy,
                "desiredHealthy": desired,
                "expectedPods": expected,
                "conditions": conditions,
            }
            if disrupted:
                status["disruptedPods"] = disrupted
            if status != old_status:
                def change(obj: Obj) -> None:
                    obj["status"] = status

                self.store.mutate("poddisruptionbudgets", namespace, name, change)

    def _selected_pods(self, namespace: str, selector: Any) -> list[Obj]:
        def selects(pod: Obj) -> bool:
            return match_label_selector_object(selector, pod["metadata"].get("labels") or {})

        required = selector.get("matchLabels") if isinstance(selector, dict) else None
        if required and isinstance(required, dict):
            # Only pods carrying the fixed labels can match: the store's label index narrows them down.
            return [pod for pod in self.store.pods_with_labels(namespace, required) if selects(pod)]
        return self.store.list("pods", namespace, selects)[0]

    def _live_disruptions(self, pdb: Obj, pods: list[Obj], now: float) -> dict[str, str]:
        """disruptedPods minus pods that are gone, deleting, or whose entry expired; re-check at expiry."""
        recorded = (pdb.get("status") or {}).get("disruptedPods") or {}
        by_name = {p["metadata"]["name"]: p for p in pods}
        kept = {}
        for pod_name, stamp in recorded.items():
            pod = by_name.get(pod_name)
            if pod is None or is_deleting(pod):
                continue
            try:
                expires = parse_rfc3339(stamp) + DISRUPTED_POD_TIMEOUT_SECONDS
            except (TypeError, ValueError):
                continue
            if expires <= now:
                continue
            kept[pod_name] = stamp
            self.sim.schedule_at(expires, self.name, key_of(pdb))
        return kept

    def _expected_and_desired(self, spec: Obj, pods: list[Obj]) -> tuple[int, int]:
        max_unavailable, min_available = spec.get("maxUnavailable"), spec.get("minAvailable")
        if max_unavailable is not None:
            expected = self._expected_scale(pods)
            return expected, max(0, expected - int_or_percent(max_unavailable, expected, round_up=True))
        if min_available is not None:
            if isinstance(min_available, int):
                return len(pods), min_available
            expected = self._expected_scale(pods)
            return expected, int_or_percent(min_available, expected, round_up=True)
        return len(pods), 0

    def _expected_scale(self, pods: list[Obj]) -> int:
        """Sum of the replicas of the controllers owning `pods` (each controller counted once)."""
        scales: dict[tuple[str, str], int] = {}
        unmanaged = 0
        for pod in pods:
            ref = controller_ref(pod)
            if ref is None:
                unmanaged += 1
                continue
            namespace = pod["metadata"]["namespace"]
            owner_kind, owner_name, replicas = ref.get("kind"), ref["name"], 1
            if owner_kind == "ReplicaSet":
                rs = self.store.try_get("replicasets", namespace, owner_name)
                if rs is not None:
                    replicas = int((rs.get("spec") or {}).get("replicas", 1))
                    parent = controller_ref(rs)
                    if parent is not None and parent.get("kind") == "Deployment":
                        deployment = self.store.try_get("deployments", namespace, parent["name"])
                        if deployment is not None:
                            owner_kind, owner_name = "Deployment", parent["name"]
                            replicas = int((deployment.get("spec") or {}).get("replicas", 1))
            scales[(str(owner_kind), owner_name)] = replicas
        return sum(scales.values()) + unmanaged
