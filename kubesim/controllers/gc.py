"""The garbage collector: cascading deletion through ownerReferences.

- Background (the default): once an owner is gone, dependents whose every owner is gone are deleted;
  dependents that still have a live owner just lose the dangling reference.
- Foreground: the owner waits (`foregroundDeletion` finalizer) while its dependents are deleted, also
  in the foreground; the finalizer is removed when none remain.
- Orphan: the owner's `orphan` finalizer makes the collector strip the owner reference from every
  dependent, then removes the finalizer; the dependents live on.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from kubesim import errors
from kubesim.controllers.common import Controller, Obj, is_deleting
from kubesim.resources import BY_KIND
from kubesim.store import WatchEvent

GC_FINALIZERS = ("foregroundDeletion", "orphan")


def _awaits_collection(meta: Obj) -> bool:
    """Being deleted and held by a finalizer the garbage collector itself removes."""
    return bool(meta.get("deletionTimestamp")) and any(f in (meta.get("finalizers") or []) for f in GC_FINALIZERS)


class GarbageCollector(Controller):
    name = "garbage-collector"

    def keys_for(self, event: WatchEvent) -> Iterable[Hashable]:
        meta = event.obj["metadata"]
        keys: list[Hashable] = []
        if event.type == "DELETED":
            if self.sim.owners.dependents(meta.get("uid", "")):
                keys.append(("orphaned", meta.get("uid", "")))
            for ref in meta.get("ownerReferences") or []:  # a foreground owner may be waiting for this one
                rtype = BY_KIND.get(ref.get("kind", ""))
                if rtype is not None:
                    keys.append(("owner", rtype.plural, event.namespace if rtype.namespaced else "", ref["name"]))
        elif _awaits_collection(meta):
            keys.append(("owner", event.plural, event.namespace, meta["name"]))
        return keys

    def resync_keys(self) -> Iterable[Hashable]:
        keys: list[Hashable] = []
        for plural in ("deployments", "replicasets", "daemonsets", "pods", "services"):
            for obj in self.store.list(plural)[0]:
                meta = obj["metadata"]
                if _awaits_collection(meta):
                    keys.append(("owner", plural, meta.get("namespace", ""), meta["name"]))
        return keys

    def reconcile(self, key: Hashable) -> None:
        kind = key[0]  # type: ignore[index]
        with self.store.lock:
            if kind == "orphaned":
                self._collect_dependents_of_deleted(key[1])  # type: ignore[index]
            elif kind == "owner":
                self._process_deleting_owner(key[1], key[2], key[3])  # type: ignore[index]

    def _owner_alive(self, ref: Obj, namespace: str) -> bool:
        rtype = BY_KIND.get(ref.get("kind", ""))
        if rtype is None:
            return True  # a kind kubesim does not serve: leave the dependent alone
        owner = self.store.try_get(rtype.plural, namespace if rtype.namespaced else "", ref.get("name", ""))
        return owner is not None and owner["metadata"].get("uid") == ref.get("uid")

    def _collect_dependents_of_deleted(self, uid: str) -> None:
        for plural, namespace, name in self.sim.owners.dependents(uid):
            dependent = self.store.try_get(plural, namespace, name)
            if dependent is None:
                continue
            refs = dependent["metadata"].get("ownerReferences") or []
            alive = [r for r in refs if r.get("uid") != uid and self._owner_alive(r, namespace)]
            if alive:
                self._strip_owner(plural, namespace, name, uid)
                continue
            if is_deleting(dependent):
                continue
            try:
                self.store.delete(plural, namespace, name, propagation_policy="Background")
            except errors.ApiError:
                continue

    def _strip_owner(self, plural: str, namespace: str, name: str, uid: str) -> None:
        def change(obj: Obj) -> None:
            refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            if refs:
                obj["metadata"]["ownerReferences"] = refs
            else:
                obj["metadata"].pop("ownerReferences", None)

        self.store.mutate(plural, namespace, name, change)

    def _process_deleting_owner(self, plural: str, namespace: str, name: str) -> None:
        owner = self.store.try_get(plural, namespace, name)
        if owner is None or not is_deleting(owner):
            return
        meta = owner["metadata"]
        finalizers = meta.get("finalizers") or []
        uid = meta["uid"]
        dependents = self.sim.owners.dependents(uid)
        if "orphan" in finalizers:
            for dep_plural, dep_namespace, dep_name in dependents:
                if self.store.try_get(dep_plural, dep_namespace, dep_name) is not None:
                    self._strip_owner(dep_plural, dep_namespace, dep_name, uid)
            self._remove_finalizer(plural, namespace, name, "orphan")
            return
        if "foregroundDeletion" in finalizers:
            remaining = 0
            for dep_plural, dep_namespace, dep_name in dependents:
                dependent = self.store.try_get(dep_plural, dep_namespace, dep_name)
                if dependent is None:
                    continue
                remaining += 1
                if not is_deleting(dependent):
                    try:
                        self.store.delete(dep_plural, dep_namespace, dep_name, propagation_policy="Foreground")
                    except errors.ApiError:
                        continue
            if remaining == 0:
                self._remove_finalizer(plural, namespace, name, "foregroundDeletion")

    def _remove_finalizer(self, plural: str, namespace: str, name: str, finalizer: str) -> None:
        def change(obj: Obj) -> None:
            left = [f for f in obj["metadata"].get("finalizers") or [] if f != finalizer]
            if left:
                obj["metadata"]["finalizers"] = left
            else:
                obj["metadata"].pop("finalizers", None)

        if self.store.try_get(plural, namespace, name) is not None:
            self.store.mutate(plural, namespace, name, change)
