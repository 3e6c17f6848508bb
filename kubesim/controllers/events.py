"""Event recording shared by controllers, with the apiserver-side aggregation clients expect.

A repeated event (same object, reason, message, source) bumps `count` and `lastTimestamp` on the
existing Event instead of writing a new one, as client-go's EventCorrelator does; a scheduler that
retries every few seconds would otherwise bury everything else under FailedScheduling events.
"""

from __future__ import annotations

from typing import Any

from kubesim import errors
from kubesim.clock import rfc3339
from kubesim.controllers.common import Obj


class EventRecorder:
    def __init__(self, store: Any) -> None:
        self.store = store
        self._seen: dict[tuple, tuple[str, str]] = {}
        self._counter = 0

    def reset(self) -> None:
        self._seen.clear()

    def record(
        self, involved: Obj, reason: str, message: str, event_type: str = "Normal",
        component: str = "kubelet", host: str | None = None, field_path: str | None = None,
    ) -> None:
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        dedup_key = (meta.get("uid"), reason, message, component, field_path)
        now = self.store.clock.now()
        stamp = rfc3339(now)
        with self.store.lock:
            known = self._seen.get(dedup_key)
            if known is not None and self.store.try_get("events", *known) is not None:
                def bump(event: Obj) -> None:
                    event["count"] = int(event.get("count") or 1) + 1
                    event["lastTimestamp"] = stamp

                self.store.mutate("events", known[0], known[1], bump)
                return
            self._counter += 1
            name = f"{meta['name']}.{int(now * 1e9) + self._counter:x}"
            involved_object = {
                "kind": involved.get("kind"), "namespace": meta.get("namespace"), "name": meta["name"],
                "uid": meta.get("uid"), "apiVersion": involved.get("apiVersion"),
                "resourceVersion": meta.get("resourceVersion"),
            }
            if not meta.get("namespace"):
                involved_object.pop("namespace")
            if field_path:
                involved_object["fieldPath"] = field_path
            source: dict[str, str] = {"component": component}
            if host:
                source["host"] = host
            event = {
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": involved_object,
                "reason": reason,
                "message": message,
                "type": event_type,
                "source": source,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
                "eventTime": None,
                "reportingComponent": component,
                "reportingInstance": host or "",
            }
            try:
                self.store.create("events", event, handed_over=True)  # built above from strings only
            except errors.ApiError:
                return  # the namespace is gone or terminating: the apiserver drops such events too
            self._seen[dedup_key] = (namespace, name)
