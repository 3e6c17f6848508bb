"""The namespace controller: empty a Terminating namespace, then remove it.

The apiserver already refuses creates in a Terminating namespace (403); this controller deletes what
is inside (pods gracefully, so the kubelet stand-in finishes them) and removes the namespace once
nothing is left. Pods stuck Terminating on an unreachable node keep the namespace Terminating too,
as on a real cluster.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from kubesim import errors
from kubesim.controllers.common import Controller, is_deleting
from kubesim.resources import TYPES
from kubesim.store import WatchEvent

NAMESPACED = [t.plural for t in TYPES if t.namespaced]


class NamespaceController(Controller):
    name = "namespace"

    def keys_for(self, event: WatchEvent) -> Iterable[Hashable]:
        if event.plural == "namespaces":
            if event.type != "DELETED" and is_deleting(event.obj):
                return (event.obj["metadata"]["name"],)
            return ()
        if event.type == "DELETED" and event.namespace:
            namespace = self.store.try_get("namespaces", "", event.namespace)
            if namespace is not None and is_deleting(namespace):
                return (event.namespace,)
        return ()

    def resync_keys(self) -> Iterable[Hashable]:
        return [n["metadata"]["name"] for n in self.store.list("namespaces")[0] if is_deleting(n)]

    def reconcile(self, key: Hashable) -> None:
        name = str(key)
        with self.store.lock:
            namespace = self.store.try_get("namespaces", "", name)
            if namespace is None or not is_deleting(namespace):
                return
            remaining = 0
            for plural in NAMESPACED:
                for obj in self.store.list(plural, name)[0]:
                    remaining += 1
                    if is_deleting(obj):
                        continue
                    try:
                        _, gone = self.store.delete(plural, name, obj["metadata"]["name"])
                    except errors.ApiError:
                        continue
                    if gone:
                        remaining -= 1
            if remaining == 0:
                self.store.finalize_namespace(name)
