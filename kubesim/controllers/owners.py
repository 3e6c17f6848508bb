"""An index from owner uid to dependents, kept from store events (like the GC's dependency graph).

ReplicaSets find their pods, Deployments their ReplicaSets and the garbage collector the dependents of
a deleted owner through it, instead of scanning every object of a kind on each reconcile.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from kubesim.controllers.common import controller_ref
from kubesim.store import WatchEvent

Ref = tuple[str, str, str]  # (plural, namespace, name)


class OwnerIndex:
    name = "owner-index"

    def __init__(self, sim: Any) -> None:
        self.store = sim.store
        self.reset()

    def reset(self) -> None:
        self._dependents: dict[str, set[Ref]] = {}
        self._owners_of: dict[Ref, tuple[str, ...]] = {}
        with self.store.lock:
            for plural in ("pods", "replicasets", "deployments", "daemonsets", "services", "endpoints"):
                for obj in self.store.list(plural)[0]:
                    self._index(plural, obj["metadata"].get("namespace", ""), obj, deleted=False)

    def keys_for(self, event: WatchEvent) -> Iterable[Hashable]:
        self._index(event.plural, event.namespace, event.obj, deleted=event.type == "DELETED")
        return ()

    def _index(self, plural: str, namespace: str, obj: dict, deleted: bool) -> None:
        ref = (plural, namespace, obj["metadata"]["name"])
        owners = () if deleted else tuple(
            r.get("uid") for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid")
        )
        previous = self._owners_of.get(ref, ())
        if owners == previous:
            return
        for uid in previous:
            bucket = self._dependents.get(uid)
            if bucket is not None:
                bucket.discard(ref)
                if not bucket:
                    del self._dependents[uid]
        for uid in owners:
            self._dependents.setdefault(uid, set()).add(ref)
        if owners:
            self._owners_of[ref] = owners
        else:
            self._owners_of.pop(ref, None)

    def dependents(self, uid: str, plural: str | None = None) -> list[Ref]:
        with self.store.lock:
            return sorted(r for r in self._dependents.get(uid, ()) if plural is None or r[0] == plural)

    def objects(self, uid: str, plural: str) -> list[dict]:
        """The live objects of `plural` that list `uid` among their owners."""
        with self.store.lock:
            out = []
            for _, namespace, name in self.dependents(uid, plural):
                obj = self.store.try_get(plural, namespace, name)
                if obj is not None:
                    out.append(obj)
            return out

    def controlled(self, uid: str, plural: str) -> list[dict]:
        """The live objects of `plural` whose controller (not merely an owner) is `uid`."""
        return [obj for obj in self.objects(uid, plural) if (controller_ref(obj) or {}).get("uid") == uid]

    def reconcile(self, _key: Hashable) -> None:
        return None  # nothing to do: the index is maintained synchronously in keys_for

    def resync_keys(self) -> Iterable[Hashable]:
        return ()
