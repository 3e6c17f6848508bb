"""The object store: every object kubesim serves, one global revision, and the event log watches read.

Semantics follow the apiserver (see kubesim-reference §3.5):
- one monotonically increasing revision; every write stamps `metadata.resourceVersion`;
- a no-op write does not bump the revision;
- `metadata.generation` starts at 1 and moves only when `spec` changes;
- server-owned metadata (uid, creationTimestamp, generation, deletionTimestamp) survives every write;
- deletion is graceful where the apiserver makes it so: pods on a node get a deletionTimestamp and are
  removed by the kubelet stand-in; objects with finalizers wait for them; a namespace turns Terminating.

Stored objects are never mutated in place: writers build a new dict and commit it. Readers receive the
stored dicts themselves (copying 10,000 pods per list would dominate the list time), so they must treat
them as read-only; `clone()` gives a private copy for read-modify-write.

Every public method takes the store's re-entrant lock; controllers may hold `store.lock` across several
calls to make a read-modify-write atomic.
"""

from __future__ import annotations

import bisect
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubesim import errors
from kubesim.clock import Clock, rfc3339
from kubesim.resources import BY_PLURAL, ResourceType

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects

NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's generateName alphabet
SERVER_OWNED_METADATA = ("uid", "creationTimestamp", "generation", "deletionTimestamp",
                         "deletionGracePeriodSeconds", "namespace", "name")


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def clone(value: Any) -> Any:
    """A deep copy of JSON-shaped data; several times faster than copy.deepcopy.

    Strings and numbers are shared, not copied: they are immutable, and the event log keeps many
    versions of every pod. JSON scalars are recognised by exact type inside the comprehensions, so
    leaves cost no function call (every controller write clones a pod); anything else, dict and list
    subclasses included, goes through the general path as before.
    """
    if type(value) is dict:
        return {k: v if type(v) in _JSON_SCALARS else clone(v) for k, v in value.items()}
    if type(value) is list:
        return [v if type(v) in _JSON_SCALARS else clone(v) for v in value]
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


@dataclass(frozen=True)
class ListPage:
    """One page of a list: `more` says whether matching objects follow the last item.

    `remaining` counts them when that is cheap and exact (no predicate: a slice of the key index);
    with a predicate it is None, as etcd3's lister leaves remainingItemCount unset under selectors.
    """

    items: list[Obj]
    revision: int
    more: bool
    remaining: int | None


@dataclass(frozen=True)
class WatchEvent:
    revision: int
    type: str  # ADDED | MODIFIED | DELETED
    plural: str
    namespace: str
    obj: Obj


Admission = Callable[[ResourceType, Obj, "Obj | None"], None]
Listener = Callable[[WatchEvent], None]


class Store:
    """In-memory objects of every served resource type, indexed by namespace and (pods) by node."""

    def __init__(self, clock: Clock, seed: int = 0, event_log_size: int = 200_000) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.clock = clock
        self.rng = random.Random(seed)
        self.revision = 1
        self.admission: Admission | None = None  # defaulting + validation, set by the API layer
        self._objects: dict[str, dict[Key, Obj]] = {plural: {} for plural in BY_PLURAL}
        self._pods_by_node: dict[str, set[Key]] = {}
        # Cluster IPs the Services hold, kept on every write: admission allocates against it without listing
        # every Service on each create.
        self.service_ips: set[str] = set()
        # (namespace, label key, label value) -> pods carrying that label: Services and PodDisruptionBudgets
        # find their pods through it instead of testing every pod of the namespace on each reconcile.
        self._pods_by_label: dict[tuple[str, str, str], set[Key]] = {}
        # Every table's keys in (namespace, name) order, kept sorted on insert/remove, so a list page is
        # two bisections and a slice instead of sorting 10,000 keys per page.
        self._sorted_keys: dict[str, list[Key]] = {plural: [] for plural in BY_PLURAL}
        self.encoded = EncodedCache(self)
        self._listeners: list[Listener] = []
        self._log: list[WatchEvent] = []
        self._log_revisions: list[int] = []
        self._log_size = event_log_size
        self._compacted_through = 0  # events at or below this revision are gone

    # ----------------------------------------------------------------- reading

    def get(self, plural: str, namespace: str, name: str) -> Obj:
        obj = self.try_get(plural, namespace, name)
        if obj is None:
            rtype = BY_PLURAL[plural]
            raise errors.not_found(plural, rtype.group, name)
        return obj

    def try_get(self, plural: str, namespace: str, name: str) -> Obj | None:
        with self.lock:
            return self._objects[plural].get((self._ns(plural, namespace), name))

    def list(
        self,
        plural: str,
        namespace: str | None = None,
        predicate: Callable[[Obj], bool] | None = None,
        node_name: str | None = None,
    ) -> tuple[list[Obj], int]:
        """Objects sorted by (namespace, name), and the revision they were read at.

        `node_name` (pods only) uses the by-node index, as `fieldSelector=spec.nodeName=X` does.
        """
        page = self.list_page(plural, namespace, predicate, node_name)
        return page.items, page.revision

    def list_page(
        self,
        plural: str,
        namespace: str | None = None,
        predicate: Callable[[Obj], bool] | None = None,
        node_name: str | None = None,
        start_after: Key | None = None,
        limit: int = 0,
        pod_labels: dict[str, str] | None = None,
    ) -> ListPage:
        """Up to `limit` (0: all) objects sorted by (namespace, name) whose key sorts after `start_after`.

        Costs O(log n + page) without a predicate: the namespace and the continue key are bisections
        of the sorted key index, and the scan stops once the page (plus one look-ahead match) is full.
        `pod_labels` (pods of one namespace only) are labels every match carries, from the selector's
        equality requirements: the scan then reads the smallest of their label-index buckets instead
        of the whole namespace. `predicate` must still test them; the hint only narrows the candidates.
        """
        with self.lock:
            table = self._objects[plural]
            if node_name is not None and plural == "pods":
                keys = sorted(self._pods_by_node.get(node_name, ()))
            elif pod_labels and plural == "pods" and namespace and predicate is not None:
                keys = self._labelled_pod_keys(namespace, pod_labels)
            else:
                keys = self._sorted_keys[plural]
            lo, hi = 0, len(keys)
            if namespace:
                # (ns,) sorts before every (ns, name); (ns + "\0",) after all of them and before any
                # longer namespace, so the two bisections bound exactly this namespace's keys.
                lo = bisect.bisect_left(keys, (namespace,))
                hi = bisect.bisect_left(keys, (namespace + "\0",), lo)
            if start_after is not None:
                lo = max(lo, bisect.bisect_right(keys, start_after, lo, hi))
            if predicate is None:
                end = hi if limit <= 0 else min(hi, lo + limit)
                items = [table[key] for key in keys[lo:end]]
                return ListPage(items, self.revision, end < hi, hi - end)
            items = []
            wanted = limit + 1 if limit > 0 else None  # one look-ahead match tells whether more follow
            for index in range(lo, hi):
                obj = table[keys[index]]
                if predicate(obj):
                    items.append(obj)
                    if wanted is not None and len(items) == wanted:
                        break
            more = wanted is not None and len(items) == wanted
            if more:
                items.pop()
            return ListPage(items, self.revision, more, None)

    def pods_with_labels(self, namespace: str, labels: dict[str, str]) -> list[Obj]:
        """Pods of `namespace` carrying every one of `labels` (at least one), sorted by (namespace, name).

        Only the smallest of the label index's buckets is read, so the cost follows the number of
        candidate pods, not the size of the namespace.
        """
        if not labels:
            raise ValueError("pods_with_labels needs at least one label")
        with self.lock:
            if len(_indexable_labels(labels)) < len(labels):
                # A value that is not a string cannot be in the index; nothing but a full scan finds it.
                return self.list("pods", namespace, lambda pod: _has_labels(pod, labels))[0]
            smallest: set[Key] | None = None
            for label, value in labels.items():
                bucket = self._pods_by_label.get((namespace, label, value))
                if bucket is None:
                    return []
                if smallest is None or len(bucket) < len(smallest):
                    smallest = bucket
            table = self._objects["pods"]
            return [table[key] for key in sorted(smallest or ()) if _has_labels(table[key], labels)]

    def _labelled_pod_keys(self, namespace: str, labels: dict[str, str]) -> list[Key]:
        """Sorted keys of the smallest label-index bucket among `labels` (a superset of the pods carrying all)."""
        smallest: set[Key] = set()
        for position, (label, value) in enumerate(_indexable_labels(labels)):
            bucket = self._pods_by_label.get((namespace, label, value), set())
            if position == 0 or len(bucket) < len(smallest):
                smallest = bucket
            if not smallest:
                break
        return sorted(smallest)

    def count(self, plural: str) -> int:
        with self.lock:
            return len(self._objects[plural])

    def pods_on_node(self, node_name: str) -> list[Obj]:
        with self.lock:
            table = self._objects["pods"]
            return [table[key] for key in sorted(self._pods_by_node.get(node_name, ()))]

    # ----------------------------------------------------------------- writing

    def create(self, plural: str, obj: Obj, namespace: str | None = None, handed_over: bool = False) -> Obj:
        """Store a new object: names, uid, timestamps, generation, defaulting and validation.

        `obj` is copied first, unless the caller hands it over (`handed_over`: a dict it built or decoded
        itself, shares with nothing and never touches again), which spares cloning every request body.
        """
        rtype = BY_PLURAL[plural]
        if not handed_over:
            obj = clone(obj)
        meta = obj.setdefault("metadata", {})
        with self.lock:
            if rtype.namespaced:
                ns = namespace or meta.get("namespace") or "default"
                if meta.get("namespace") and meta["namespace"] != ns:
                    raise errors.bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request"
                    )
                meta["namespace"] = ns
                self._check_namespace_open(ns)
            else:
                meta.pop("namespace", None)
                ns = ""
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = self._generate_name(plural, ns, meta["generateName"])
            name = meta.get("name")
            if not name:
                raise errors.invalid(rtype.kind, rtype.group, "", [
                    ("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")
                ])
            if (ns, name) in self._objects[plural]:
                raise errors.already_exists(plural, rtype.group, name)
            obj["kind"] = rtype.kind
            obj["apiVersion"] = rtype.api_version
            for owned in ("uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(owned, None)
            meta["uid"] = self.new_uid()
            meta["creationTimestamp"] = rfc3339(self.clock.now())
            if rtype.has_spec_generation:
                meta["generation"] = 1
            else:
                meta.pop("generation", None)
            if self.admission is not None:
                self.admission(rtype, obj, None)
            return self._commit(plural, (ns, name), None, obj)

    def replace(self, plural: str, obj: Obj, subresource: str | None = None) -> Obj:
        """PUT semantics: 409 on a stale resourceVersion; status only through the status subresource."""
        rtype = BY_PLURAL[plural]
        meta = obj.get("metadata") or {}
        with self.lock:
            ns = self._ns(plural, meta.get("namespace", ""))
            old = self.get(plural, ns, meta.get("name", ""))
            sent_rv = meta.get("resourceVersion")
            if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(plural, rtype.group, old["metadata"]["name"])
            new = clone(obj)
            if subresource == "status":
                status = new.get("status")
                new = clone(old)
                if status is not None:
                    new["status"] = status
                else:
                    new.pop("status", None)
            elif rtype.has_status and subresource is None:
                if "status" in old:
                    new["status"] = clone(old["status"])
                else:
                    new.pop("status", None)
            return self.write(plural, old, new)

    def mutate(self, plural: str, namespace: str, name: str, change: Callable[[Obj], None]) -> Obj:
        """Read-modify-write for controllers: `change` edits a private copy in place."""
        with self.lock:
            old = self.get(plural, namespace, name)
            new = clone(old)
            change(new)
            return self.write(plural, old, new)

    def write(self, plural: str, old: Obj, new: Obj) -> Obj:
        """Commit `new` over `old`, keeping server-owned metadata; no-op writes change nothing."""
        rtype = BY_PLURAL[plural]
        with self.lock:
            old_meta = old["metadata"]
            meta = new.setdefault("metadata", {})
            for field in SERVER_OWNED_METADATA:
                if field in old_meta:
                    meta[field] = old_meta[field]
                else:
                    meta.pop(field, None)
            new["kind"] = rtype.kind
            new["apiVersion"] = rtype.api_version
            meta["resourceVersion"] = old_meta["resourceVersion"]
            if old_meta.get("deletionTimestamp") and len(meta.get("finalizers") or []) > len(
                old_meta.get("finalizers") or []
            ):
                raise errors.invalid(rtype.kind, rtype.group, old_meta["name"], [(
                    "metadata.finalizers", "FieldValueForbidden",
                    "Forbidden: no new finalizers can be added if the object is being deleted",
                )])
            if rtype.has_spec_generation and new.get("spec") != old.get("spec"):
                meta["generation"] = old_meta.get("generation", 1) + 1
            if self.admission is not None and new.get("spec") != old.get("spec"):
                self.admission(rtype, new, old)
            if new == old:
                return old
            key = (old_meta.get("namespace", ""), old_meta["name"])
            if meta.get("deletionTimestamp") and not meta.get("finalizers") and self._finished_terminating(
                plural, new
            ):
                return self._remove(plural, key, new)
            return self._commit(plural, key, old, new)

    def delete(
        self,
        plural: str,
        namespace: str,
        name: str,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        preconditions: dict[str, str] | None = None,
    ) -> tuple[Obj, bool]:
        """DELETE semantics. Returns the object's last state and whether it is gone already.

        Pods bound to a node are deleted gracefully (the kubelet stand-in removes them); objects with
        finalizers wait for them; namespaces turn Terminating; `Foreground` and `Orphan` propagation
        add the finalizers the garbage collector acts on.
        """
        rtype = BY_PLURAL[plural]
        with self.lock:
            ns = self._ns(plural, namespace)
            old = self.get(plural, ns, name)
            old_meta = old["metadata"]
            if preconditions:
                if preconditions.get("uid") and preconditions["uid"] != old_meta["uid"]:
                    raise errors.ApiError(
                        409, "Conflict",
                        f'Operation cannot be fulfilled on {errors.qualified(plural, rtype.group)} "{name}": '
                        f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                        f"UID in object meta: {old_meta['uid']}",
                    )
                if preconditions.get("resourceVersion") and (
                    preconditions["resourceVersion"] != old_meta["resourceVersion"]
                ):
                    raise errors.conflict(plural, rtype.group, name)
            new = clone(old)
            meta = new["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            if propagation_policy == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
            elif propagation_policy == "Orphan" and "orphan" not in finalizers:
                finalizers.append("orphan")
            if finalizers != list(meta.get("finalizers") or []):
                if old_meta.get("deletionTimestamp"):
                    finalizers = list(meta.get("finalizers") or [])
                else:
                    meta["finalizers"] = finalizers
            now = self.clock.now()
            if plural == "namespaces":
                if not old_meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = rfc3339(now)
                    meta["deletionGracePeriodSeconds"] = 0
                    new.setdefault("status", {})["phase"] = "Terminating"
                    return self._commit(plural, (ns, name), old, new), False
                return old, False
            if plural == "pods":
                grace = self._pod_grace(old, grace_period_seconds)
                terminating = bool(old_meta.get("deletionTimestamp"))
                if terminating and grace >= (old_meta.get("deletionGracePeriodSeconds") or 0):
                    return old, False
                if grace > 0:
                    meta["deletionTimestamp"] = rfc3339(now + grace)
                    meta["deletionGracePeriodSeconds"] = grace
                    return self._commit(plural, (ns, name), old, new), False
                meta["deletionGracePeriodSeconds"] = 0
                meta.setdefault("deletionTimestamp", rfc3339(now))
                if finalizers:
                    return self._commit(plural, (ns, name), old, new), False
                return self._remove(plural, (ns, name), new), True
            if finalizers:
                if old_meta.get("deletionTimestamp"):
                    return old, False
                meta["deletionTimestamp"] = rfc3339(now)
                meta["deletionGracePeriodSeconds"] = 0
                return self._commit(plural, (ns, name), old, new), False
            return self._remove(plural, (ns, name), new), True

    def finalize_namespace(self, name: str) -> Obj:
        """Remove a Terminating namespace once the namespace controller has emptied it.

        (Added for the namespace controller: `delete` only marks a namespace Terminating and `write`
        never removes one, because only the controller knows when its content is gone.)
        """
        with self.lock:
            old = self.get("namespaces", "", name)
            if not old["metadata"].get("deletionTimestamp"):
                raise errors.conflict("namespaces", "", name)
            return self._remove("namespaces", ("", name), clone(old))

    # ----------------------------------------------------------------- watching

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(event)` for every change, under the store lock (it must be quick)."""
        with self.lock:
            self._listeners.append(listener)

    def events_after(self, revision: int, limit: int | None = None) -> list[WatchEvent]:
        """Events newer than `revision`; raises 410 Expired if some of them were compacted away."""
        with self.lock:
            if revision < self._compacted_through:
                raise errors.gone(f"too old resource version: {revision} ({self._compacted_through + 1})")
            start = bisect.bisect_right(self._log_revisions, revision)
            end = len(self._log) if limit is None else min(len(self._log), start + limit)
            return self._log[start:end]

    def wait_for_events(self, revision: int, timeout: float) -> list[WatchEvent]:
        """Block until an event newer than `revision` exists, or `timeout` seconds pass."""
        with self.changed:
            events = self.events_after(revision)
            if events:
                return events
            self.changed.wait(timeout)
            return self.events_after(revision)

    @property
    def oldest_available_revision(self) -> int:
        with self.lock:
            return self._compacted_through

    def compact(self, through_revision: int) -> None:
        """Drop events at or below `through_revision` (watches from there then get 410)."""
        with self.lock:
            cut = bisect.bisect_right(self._log_revisions, through_revision)
            del self._log[:cut]
            del self._log_revisions[:cut]
            self._compacted_through = max(self._compacted_through, through_revision)

    # ----------------------------------------------------------------- snapshots

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "revision": self.revision,
                "objects": {plural: [clone(o) for _, o in sorted(t.items())] for plural, t in self._objects.items()},
            }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace every object with the snapshot's; watchers see the difference as events."""
        with self.lock:
            wanted = {
                plural: {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objs}
                for plural, objs in snapshot["objects"].items()
            }
            for plural, table in self._objects.items():
                target = wanted.get(plural, {})
                for key in [k for k in table if k not in target]:
                    self._remove(plural, key, clone(table[key]))
                for key, obj in target.items():
                    old = table.get(key)
                    if old is None:
                        self._commit(plural, key, None, clone(obj))
                    elif old != obj:
                        self._commit(plural, key, old, clone(obj))

    # ----------------------------------------------------------------- helpers

    def new_uid(self) -> str:
        with self.lock:
            return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def random_suffix(self, length: int = 5) -> str:
        with self.lock:
            return "".join(self.rng.choice(NAME_ALPHABET) for _ in range(length))

    def _generate_name(self, plural: str, ns: str, prefix: str) -> str:
        for _ in range(8):
            name = f"{prefix}{self.random_suffix()}"
            if (ns, name) not in self._objects[plural]:
                return name
        raise errors.ApiError(500, "AlreadyExists", f"could not generate a unique name for prefix {prefix}")

    def _ns(self, plural: str, namespace: str | None) -> str:
        return (namespace or "") if BY_PLURAL[plural].namespaced else ""

    def _check_namespace_open(self, ns: str) -> None:
        namespace = self._objects["namespaces"].get(("", ns))
        if namespace is None:
            raise errors.not_found("namespaces", "", ns)
        if namespace["metadata"].get("deletionTimestamp"):
            raise errors.forbidden(
                f"unable to create new content in namespace {ns} because it is being terminated",
                {"name": ns, "kind": "namespaces"},
            )

    @staticmethod
    def _pod_grace(pod: Obj, requested: int | None) -> int:
        spec = pod.get("spec") or {}
        phase = (pod.get("status") or {}).get("phase")
        # The apiserver deletes unscheduled and finished pods at once: no kubelet has to stop them.
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return 0
        if requested is not None:
            return max(0, int(requested))
        return int(spec.get("terminationGracePeriodSeconds", 30))

    @staticmethod
    def _finished_terminating(plural: str, obj: Obj) -> bool:
        if plural == "pods":
            return obj["metadata"].get("deletionGracePeriodSeconds") == 0
        return plural != "namespaces"

    def _next_revision(self) -> int:
        self.revision += 1
        return self.revision

    def _commit(self, plural: str, key: Key, old: Obj | None, new: Obj) -> Obj:
        revision = self._next_revision()
        new["metadata"]["resourceVersion"] = str(revision)
        table = self._objects[plural]
        if key not in table:
            bisect.insort(self._sorted_keys[plural], key)
        table[key] = new
        if plural == "pods":
            self._index_pod(key, old, new)
        elif plural == "services":
            self._index_service_ip(old, new)
        self._record(WatchEvent(revision, "ADDED" if old is None else "MODIFIED", plural, key[0], new))
        return new

    def _remove(self, plural: str, key: Key, last: Obj) -> Obj:
        old = self._objects[plural].pop(key)
        keys = self._sorted_keys[plural]
        del keys[bisect.bisect_left(keys, key)]
        self.encoded.discard(plural, key)
        revision = self._next_revision()
        last["metadata"]["resourceVersion"] = str(revision)
        if plural == "pods":
            self._index_pod(key, old, None)
        elif plural == "services":
            self._index_service_ip(old, None)
        self._record(WatchEvent(revision, "DELETED", plural, key[0], last))
        return last

    def _index_service_ip(self, old: Obj | None, new: Obj | None) -> None:
        old_ip, new_ip = _cluster_ip(old), _cluster_ip(new)
        if old_ip != new_ip:
            self.service_ips.discard(old_ip)
            if new_ip:
                self.service_ips.add(new_ip)

    def _index_pod(self, key: Key, old: Obj | None, new: Obj | None) -> None:
        self._index_pod_labels(key, old, new)
        old_node = ((old or {}).get("spec") or {}).get("nodeName")
        new_node = ((new or {}).get("spec") or {}).get("nodeName")
        if old_node == new_node:
            return
        if old_node:
            bucket = self._pods_by_node.get(old_node)
            if bucket is not None:
                bucket.discard(key)
                if not bucket:
                    del self._pods_by_node[old_node]
        if new_node:
            self._pods_by_node.setdefault(new_node, set()).add(key)

    def _index_pod_labels(self, key: Key, old: Obj | None, new: Obj | None) -> None:
        old_labels = _labels_of(old)
        new_labels = _labels_of(new)
        # Most pod writes share the labels dict of the version they replace (status updates).
        if old_labels is new_labels or old_labels == new_labels:
            return
        namespace = key[0]
        for label, value in _indexable_labels(old_labels):
            if label not in new_labels or new_labels[label] != value:
                bucket = self._pods_by_label.get((namespace, label, value))
                if bucket is not None:
                    bucket.discard(key)
                    if not bucket:
                        del self._pods_by_label[(namespace, label, value)]
        for label, value in _indexable_labels(new_labels):
            self._pods_by_label.setdefault((namespace, label, value), set()).add(key)

    def _record(self, event: WatchEvent) -> None:
        self._log.append(event)
        self._log_revisions.append(event.revision)
        # Trim in chunks: deleting from the front of a long list on every write would be quadratic.
        if len(self._log) > self._log_size + self._log_size // 10:
            drop = len(self._log) - self._log_size
            self._compacted_through = self._log_revisions[drop - 1]
            del self._log[:drop]
            del self._log_revisions[:drop]
        for listener in self._listeners:
            listener(event)
        self.changed.notify_all()


def _cluster_ip(service: Obj | None) -> str:
    """A Service's allocated cluster IP ("" for none, a headless Service's "None" included)."""
    address = ((service or {}).get("spec") or {}).get("clusterIP") or ""
    return "" if address == "None" else address


def _labels_of(obj: Obj | None) -> dict:
    labels = obj["metadata"].get("labels") if obj is not None else None
    return labels if isinstance(labels, dict) else {}


def _indexable_labels(labels: dict) -> list[tuple[str, str]]:
    """The label pairs the pod label index can hold: string values (all a valid object has)."""
    return [(label, value) for label, value in labels.items() if isinstance(value, str)]


def _has_labels(pod: Obj, labels: dict[str, Any]) -> bool:
    pod_labels = pod["metadata"].get("labels") or {}
    return all(pod_labels.get(label) == value for label, value in labels.items())


class EncodedCache:
    """Serialised forms of stored objects, reused until the object is replaced.

    Stored dicts are immutable (every write commits a new dict with a new resourceVersion), so bytes
    encoded from one stay valid exactly as long as the store still holds that very dict. An entry is
    checked by identity and resourceVersion on every read, so a replaced object is re-encoded on
    its next use; removal drops the entry. A 500-pod list page is then a join of cached bytes
    instead of 500 `json.dumps` calls.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._entries: dict[tuple[str, str, str], tuple[Obj, str, bytes]] = {}

    def get(self, plural: str, obj: Obj, encode: Callable[[Obj], bytes]) -> bytes:
        """`encode(obj)`, from the cache when `obj` is the stored dict it was made from."""
        meta = obj["metadata"]
        cache_key = (plural, meta.get("namespace", ""), meta["name"])
        entry = self._entries.get(cache_key)
        if entry is not None and entry[0] is obj and entry[1] == meta.get("resourceVersion"):
            return entry[2]
        data = encode(obj)
        # Only the live version is cached: a reader holding an object that was replaced or deleted
        # since must not plant an entry that nothing would ever evict.
        if self._store._objects[plural].get(cache_key[1:]) is obj:
            self._entries[cache_key] = (obj, meta.get("resourceVersion", ""), data)
        return data

    def discard(self, plural: str, key: Key) -> None:
        self._entries.pop((plural, key[0], key[1]), None)

    def __len__(self) -> int:
        return len(self._entries)
