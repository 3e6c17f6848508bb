"""The Simulation: the store, the clock and the controllers that make it behave like a cluster.

One controller thread drains a work queue of `(controller, key)` items. The queue is fed two ways:
- a store listener, so every write (from the API or from a controller) triggers the reconciles that
  care about it, exactly once per pending key (a key already queued is not queued again);
- a timer heap keyed by simulated time, for stage delays (image pulls, model loads, backoffs, eviction
  deadlines). With a VirtualClock timers fire only inside `advance()`/`run_until()`, in time order,
  settling between them so chained stages within one advance all happen; with a ScaledClock the thread
  sleeps until the next timer is due in real time.

Determinism: controllers run on one thread in queue order, and every random choice (jitter, names,
uids) comes from generators seeded by `seed`, so the same seed and the same calls give the same cluster.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Protocol

from kubesim import nodes as node_catalogue
from kubesim.clock import Clock, ScaledClock, VirtualClock
from kubesim.store import Store, WatchEvent

log = logging.getLogger(__name__)

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
APISERVER_SERVICE_IP = "10.96.0.1"
APISERVER_ADVERTISE_IP = "10.0.0.2"  # below the node InternalIPs, which start at .4
APISERVER_PORT = 6443
FAILURE_MODES = frozenset({
    "ImagePullBackOff", "CrashLoopBackOff", "OOMKilled", "CreateContainerConfigError", "Failed",
    "ReadinessFlap", "NeverReady",
})
NODE_FAILURE_MODES = ("NotReady", "Unknown")


class Controller(Protocol):
    """What the Simulation needs of a controller."""

    name: str

    def keys_for(self, event: WatchEvent) -> Iterable[Hashable]:
        """Keys to reconcile because of `event`; called under the store lock, so it must be quick."""
        ...

    def reconcile(self, key: Hashable) -> None: ...

    def resync_keys(self) -> Iterable[Hashable]:
        """Every key this controller should look at after a restore."""
        ...

    def reset(self) -> None:
        """Forget in-memory state (caches, per-pod stages) after the store was replaced."""
        ...


class Simulation:
    """A simulated cluster: objects, time, controllers, node failures and pod behaviours."""

    def __init__(
        self,
        nodes: str = "",
        seed: int = 0,
        clock: Clock | None = None,
        with_daemonsets: bool = False,
    ) -> None:
        self.seed = seed
        self.clock: Clock = clock if clock is not None else VirtualClock()
        self.store = Store(self.clock, seed=seed)
        self.rng = random.Random(f"kubesim-sim-{seed}")
        self.loads: dict[tuple[str, str], dict] = {}
        self.metrics_available = True
        self.with_daemonsets = with_daemonsets
        self._behaviors: dict[str, dict] = {}
        self._behavior_ids = itertools.count(1)
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, Hashable]] = deque()
        self._queued: set[tuple[str, Hashable]] = set()
        self._timers: list[tuple[float, int, str, Hashable]] = []
        self._timer_seq = itertools.count()
        self._busy = False
        self._reconciling: str | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._advance_lock = threading.Lock()
        self.errors: list[str] = []  # reconcile failures, kept for tests and the admin API

        from kubesim.controllers import build_controllers
        from kubesim.controllers.events import EventRecorder

        self.events = EventRecorder(self.store)
        self.controllers: dict[str, Controller] = {c.name: c for c in build_controllers(self)}
        self.store.subscribe(self._on_store_event)
        self._bootstrap(nodes)
        self._initial_snapshot = self.snapshot()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="kubesim-controllers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def settle(self, timeout: float = 10.0) -> None:
        """Block until the queue is empty and the controller thread is idle (due timers included)."""
        if self._thread is None:
            raise RuntimeError("the simulation is not running; call start() first")
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy or self._has_due_timer():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"controllers did not settle within {timeout}s ({len(self._queue)} queued)")
                self._cond.notify_all()
                self._cond.wait(min(remaining, 0.05))

    def advance(self, seconds: float) -> None:
        """Move virtual time forward, firing due timers in time order and settling after each."""
        if not isinstance(self.clock, VirtualClock):
            raise ValueError("advance() needs a virtual clock; this simulation runs on a scaled real-time clock")
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        with self._advance_lock:
            target = self.clock.now() + seconds
            self.settle()
            while True:
                with self._cond:
                    next_due = self._timers[0][0] if self._timers else None
                if next_due is None or next_due > target:
                    break
                self.clock.advance_to(next_due)
                self.settle()
            self.clock.advance_to(target)
            self.settle()

    def run_until(self, predicate: Callable[[], bool], timeout: float, step: float = 1.0) -> bool:
        """Advance (virtual) or wait (scaled) in `step` simulated seconds until `predicate()` holds."""
        if step <= 0:
            raise ValueError("step must be positive")
        self.settle()
        if predicate():
            return True
        start = self.clock.now()
        while self.clock.now() - start < timeout:
            if isinstance(self.clock, VirtualClock):
                self.advance(min(step, timeout - (self.clock.now() - start)))
            else:
                speed = self.clock.speed if isinstance(self.clock, ScaledClock) else 1.0
                time.sleep(step / speed)
                self.settle()
            if predicate():
                return True
        return False

    # ----------------------------------------------------------------- scheduling work

    def enqueue(self, controller: str, key: Hashable) -> None:
        self._enqueue_all(((controller, key),))

    def _enqueue_all(self, items: Iterable[tuple[str, Hashable]]) -> None:
        """Queue `(controller, key)` items in order, under one acquisition of the queue lock (a write
        usually queues several controllers' keys)."""
        added = False
        with self._cond:
            for item in items:
                if item not in self._queued:
                    self._queued.add(item)
                    self._queue.append(item)
                    added = True
            if added:
                self._cond.notify_all()

    def schedule_at(self, instant: float, controller: str, key: Hashable) -> None:
        """Reconcile `key` with `controller` once simulated time reaches `instant`."""
        with self._cond:
            heapq.heappush(self._timers, (instant, next(self._timer_seq), controller, key))
            self._cond.notify_all()

    def schedule_in(self, seconds: float, controller: str, key: Hashable) -> None:
        self.schedule_at(self.clock.now() + max(0.0, seconds), controller, key)

    def write_binding(self, namespace: str, name: str, change: Callable[[dict], None]) -> dict:
        """Commit a pod's binding (spec.nodeName) as the pods/binding subresource does.

        Binding is not a pod update: the apiserver does not re-run pod validation for it, and skipping
        admission here keeps binding cheap when thousands of pods are scheduled at once. `change` gets
        shallow copies and must only assign top-level keys of `spec` and `status`.
        """
        with self.store.lock:
            old = self.store.get("pods", namespace, name)
            # Shallow copies: `change` assigns top-level keys of spec and status only.
            new = dict(old, metadata=dict(old["metadata"]), spec=dict(old.get("spec") or {}),
                       status=dict(old.get("status") or {}))
            change(new)
            saved, self.store.admission = self.store.admission, None
            try:
                return self.store.write("pods", old, new)
            finally:
                self.store.admission = saved

    def resync(self) -> None:
        """Queue every key of every controller (after a restore)."""
        with self.store.lock:
            for controller in self.controllers.values():
                for key in controller.resync_keys():
                    self.enqueue(controller.name, key)

    def _on_store_event(self, event: WatchEvent) -> None:
        # A controller that opts in (`ignores_own_writes`) is not re-queued by the writes it makes
        # while reconciling: it already acted on that state, and re-running it would double the work
        # of every pod transition. keys_for still runs, because it maintains caches.
        reconciling = self._reconciling if threading.current_thread() is self._thread else None
        items = []
        for controller in self.controllers.values():
            keys = controller.keys_for(event)
            if controller.name == reconciling and getattr(controller, "ignores_own_writes", False):
                continue
            items.extend((controller.name, key) for key in keys)
        if items:
            self._enqueue_all(items)

    def _has_due_timer(self) -> bool:
        return bool(self._timers) and self._timers[0][0] <= self.clock.now()

    def _fire_due_timers(self) -> None:
        now = self.clock.now()
        while self._timers and self._timers[0][0] <= now:
            _, _, controller, key = heapq.heappop(self._timers)
            item = (controller, key)
            if item not in self._queued:
                self._queued.add(item)
                self._queue.append(item)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    self._fire_due_timers()
                    if self._queue:
                        item = self._queue.popleft()
                        self._queued.discard(item)
                        self._busy = True
                        break
                    self._cond.notify_all()  # wake settle(): the queue is empty and we are idle
                    self._cond.wait(self._idle_wait())
            self._reconciling = item[0]
            try:
                self.controllers[item[0]].reconcile(item[1])
            except Exception as exc:  # a controller bug must not kill the cluster
                log.exception("reconcile %s %r failed", item[0], item[1])
                self.errors.append(f"{item[0]} {item[1]!r}: {exc!r}")
            finally:
                self._reconciling = None
                with self._cond:
                    self._busy = False
                    if not self._queue:
                        self._cond.notify_all()

    def _idle_wait(self) -> float | None:
        if isinstance(self.clock, ScaledClock) and self._timers:
            return max(0.001, min(1.0, self.clock.real_seconds_until(self._timers[0][0])))
        return None

    # ----------------------------------------------------------------- nodes

    def _bootstrap(self, spec: str) -> None:
        for namespace in DEFAULT_NAMESPACES:
            if self.store.try_get("namespaces", "", namespace) is None:
                self.store.create("namespaces", {
                    "metadata": {"name": namespace, "labels": {"kubernetes.io/metadata.name": namespace}},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                })
        if self.store.try_get("services", "default", "kubernetes") is None:
            self.store.create("services", _apiserver_service(), "default")
            self.store.create("endpoints", _apiserver_endpoints(), "default")
        if spec:
            self.add_nodes(spec)
        if self.with_daemonsets:
            from kubesim.controllers.daemonset import install_device_plugin

            install_device_plugin(self.store)

    def add_nodes(self, spec: str) -> list[str]:
        pools = node_catalogue.parse_spec(spec)
        with self.store.lock:
            existing = {n["metadata"]["name"] for n in self.store.list("nodes")[0]}
            used_indexes = {node_catalogue.node_index(n) for n in self.store.list("nodes")[0]}
            created = []
            for node in node_catalogue.build_nodes(pools, existing, used_indexes, self.clock.now(), self.rng):
                created.append(self.store.create("nodes", node)["metadata"]["name"])
        return created

    def remove_node(self, name: str) -> None:
        self.store.delete("nodes", "", name)
        self.node_lifecycle.forget(name)

    def fail_node(self, name: str, mode: str = "NotReady") -> None:
        if mode not in NODE_FAILURE_MODES:
            raise ValueError(f"mode must be one of {', '.join(NODE_FAILURE_MODES)}, not {mode!r}")
        self.store.get("nodes", "", name)
        self.node_lifecycle.fail(name, mode)

    def recover_node(self, name: str) -> None:
        self.store.get("nodes", "", name)
        self.node_lifecycle.recover(name)

    def set_node_gpus(self, name: str, allocatable: int) -> None:
        if isinstance(allocatable, bool) or not isinstance(allocatable, int) or allocatable < 0:
            raise ValueError("allocatable must be a non-negative integer")
        node = self.store.get("nodes", "", name)
        capacity = int((node.get("status") or {}).get("capacity", {}).get(node_catalogue.GPU_RESOURCE, "0"))
        if allocatable > capacity:
            raise ValueError(f"allocatable ({allocatable}) cannot exceed the node's GPU capacity ({capacity})")

        def change(obj: dict) -> None:
            obj["status"]["allocatable"][node_catalogue.GPU_RESOURCE] = str(allocatable)

        self.store.mutate("nodes", "", name, change)

    @property
    def node_lifecycle(self) -> Any:
        return self.controllers["node-lifecycle"]

    @property
    def owners(self) -> Any:
        return self.controllers["owner-index"]

    @property
    def replicasets(self) -> Any:
        return self.controllers["replicaset"]

    # ----------------------------------------------------------------- load and behaviours

    def set_load(self, namespace: str, deployment: str, load: dict) -> None:
        from kubesim.load import validate_load

        self.loads[(namespace, deployment)] = validate_load(load)

    def add_pod_behavior(self, behavior: dict) -> str:
        validated = validate_behavior(behavior)
        behavior_id = f"pb-{next(self._behavior_ids)}"
        validated["id"] = behavior_id
        self._behaviors[behavior_id] = validated
        return behavior_id

    def remove_pod_behavior(self, behavior_id: str) -> None:
        if behavior_id not in self._behaviors:
            raise KeyError(behavior_id)
        del self._behaviors[behavior_id]

    def pod_behaviors(self) -> list[dict]:
        return [dict(b) for b in self._behaviors.values()]

    def behavior_for(self, pod: dict) -> dict:
        """The merged behaviours whose selectors match `pod` (later behaviours win)."""
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        merged: dict = {}
        for behavior in tuple(self._behaviors.values()):  # a snapshot: the admin API may add one meanwhile
            selector = behavior["selector"]
            if selector.get("namespace") and selector["namespace"] != meta.get("namespace"):
                continue
            if any(labels.get(k) != v for k, v in (selector.get("labels") or {}).items()):
                continue
            merged.update({k: v for k, v in behavior.items() if k not in ("selector", "id")})
        return merged

    # ----------------------------------------------------------------- snapshots

    def snapshot(self) -> dict:
        return {
            "clock": self.clock.now(),
            "store": self.store.snapshot(),
            "loads": [{"namespace": ns, "deployment": d, "load": load} for (ns, d), load in self.loads.items()],
            "pod_behaviors": self.pod_behaviors(),
            "metrics_available": self.metrics_available,
        }

    def restore(self, data: dict) -> None:
        """Replace the cluster's state with a snapshot's; time never moves backwards."""
        if not isinstance(data, dict) or "store" not in data:
            raise ValueError("a snapshot needs a 'store' object")
        with self.store.lock:
            self.store.restore(data["store"])
            self.loads = {(e["namespace"], e["deployment"]): e["load"] for e in data.get("loads", [])}
            self._behaviors = {b["id"]: dict(b) for b in data.get("pod_behaviors", [])}
            self.metrics_available = bool(data.get("metrics_available", True))
            with self._cond:
                self._timers.clear()
            self.events.reset()
            for controller in self.controllers.values():
                controller.reset()
        if isinstance(self.clock, VirtualClock) and data.get("clock"):
            self.clock.advance_to(float(data["clock"]))
        self.resync()

    def reset(self) -> None:
        """Back to the cluster as it was right after start-up (nodes from the spec, default namespaces)."""
        self.restore(self._initial_snapshot)


def _apiserver_service() -> dict:
    """`default/kubernetes`, the Service every cluster has for its apiserver (first address of the range)."""
    return {
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": APISERVER_SERVICE_IP, "clusterIPs": [APISERVER_SERVICE_IP],
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": APISERVER_PORT}]},
    }


def _apiserver_endpoints() -> dict:
    """Its selector-less Endpoints, kept by the apiserver itself: the control plane's advertise address."""
    return {
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": APISERVER_ADVERTISE_IP}],
                     "ports": [{"name": "https", "port": APISERVER_PORT, "protocol": "TCP"}]}],
    }


def validate_behavior(behavior: Any) -> dict:
    """Check a pod behaviour (see `Simulation.add_pod_behavior`); ValueError says what is wrong."""
    if not isinstance(behavior, dict):
        raise ValueError("a pod behavior must be an object")
    unknown = set(behavior) - {"selector", "failure", "image_pull_seconds", "model_load_seconds", "id"}
    if unknown:
        raise ValueError(f"unknown pod behavior fields: {', '.join(sorted(unknown))}")
    selector = behavior.get("selector", {})
    if not isinstance(selector, dict) or set(selector) - {"namespace", "labels"}:
        raise ValueError("selector must be an object with optional 'namespace' and 'labels'")
    if "namespace" in selector and not isinstance(selector["namespace"], str):
        raise ValueError("selector.namespace must be a string")
    labels = selector.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ValueError("selector.labels must map strings to strings")
    out: dict = {"selector": dict(selector)}
    if "failure" in behavior:
        if behavior["failure"] not in FAILURE_MODES:
            raise ValueError(f"failure must be one of {', '.join(sorted(FAILURE_MODES))}")
        out["failure"] = behavior["failure"]
    for field in ("image_pull_seconds", "model_load_seconds"):
        if field in behavior:
            value = behavior[field]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{field} must be a non-negative number")
            out[field] = float(value)
    return out
