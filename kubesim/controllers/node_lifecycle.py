"""Node lifecycle: heartbeats, NotReady/Unknown, the taints they imply, taint-based eviction, cordon, pod GC.

- A healthy kubelet refreshes `lastHeartbeatTime` every 40 simulated seconds (not on every tick, so
  resourceVersions do not churn).
- `fail(name, "NotReady")`: the kubelet reports Ready=False at once; the controller adds the
  `node.kubernetes.io/not-ready` NoSchedule and NoExecute taints.
- `fail(name, "Unknown")`: heartbeats stop; after the 40 s node-monitor grace period every condition
  turns Unknown and the `node.kubernetes.io/unreachable` taints appear.
- Pods on a node that is not Ready lose readiness (MarkPodsNotReady); NoExecute taints evict them after
  their `tolerationSeconds` (300 s from the DefaultTolerationSeconds admission plugin when the pod does
  not say). Evicted pods on an unreachable node stay Terminating: no kubelet confirms the kill.
- `spec.unschedulable` (cordon) adds/removes `node.kubernetes.io/unschedulable:NoSchedule`.
- When a node object disappears, pods bound to it are deleted (pod garbage collection).
- Each node has a Lease in kube-node-lease (owned by the node, so it goes with it) that its kubelet
  renews with every heartbeat; `kubectl describe node` shows it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from datetime import UTC, datetime

from kubesim import errors
from kubesim.clock import parse_rfc3339, rfc3339
from kubesim.controllers.common import Controller, Obj, get_condition, is_deleting, key_of, write_fields
from kubesim.controllers.scheduler import tolerates
from kubesim.nodes import healthy_conditions
from kubesim.store import WatchEvent

HEARTBEAT_SECONDS = 40.0
NODE_MONITOR_GRACE_SECONDS = 40.0
DEFAULT_TOLERATION_SECONDS = 300
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
MANAGED_TAINTS = {NOT_READY, UNREACHABLE, UNSCHEDULABLE}
HEARTBEAT_KEY = ("heartbeat",)
LEASE_NAMESPACE = "kube-node-lease"
NOT_READY_MESSAGE = ("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
                     "message:Network plugin returns error: cni plugin not initialized")


class NodeLifecycleController(Controller):
    name = "node-lifecycle"
    ignores_own_writes = True

    def reset(self) -> None:
        """Rebuild failure state from the nodes' conditions (after a restore) and restart heartbeats."""
        self._failed: dict[str, tuple[str, float]] = {}
        self._noexecute: set[str] = set()
        self._cordoned: dict[str, bool] = {}  # last unschedulable value seen, to report cordons once
        with self.store.lock:
            for node in self.store.list("nodes")[0]:
                ready = get_condition(node, "Ready") or {}
                name = node["metadata"]["name"]
                if ready.get("status") == "Unknown":
                    self._failed[name] = ("Unknown", parse_rfc3339(ready.get("lastHeartbeatTime")
                                                                   or rfc3339(self.sim.clock.now())))
                elif ready.get("status") == "False" and ready.get("reason") == "KubeletNotReady":
                    self._failed[name] = ("NotReady", self.sim.clock.now())
                self._cordoned[name] = bool((node.get("spec") or {}).get("unschedulable"))
                if any(t.get("effect") == "NoExecute" for t in (node.get("spec") or {}).get("taints") or []):
                    self._noexecute.add(name)
        self.sim.schedule_in(HEARTBEAT_SECONDS, self.name, HEARTBEAT_KEY)

    # ----------------------------------------------------------------- API used by Simulation

    def kubelet_state(self, name: str) -> str:
        """What the node's kubelet is doing: "Ready", "NotReady" (alive, unhealthy) or "Unknown" (silent)."""
        failed = self._failed.get(name)
        return failed[0] if failed else "Ready"

    def fail(self, name: str, mode: str) -> None:
        with self.store.lock:
            self._failed[name] = (mode, self.sim.clock.now())
        self.sim.enqueue(self.name, name)

    def recover(self, name: str) -> None:
        with self.store.lock:
            self._failed.pop(name, None)
        self.sim.enqueue(self.name, name)

    def forget(self, name: str) -> None:
        with self.store.lock:
            self._failed.pop(name, None)
            self._noexecute.discard(name)
            self._cordoned.pop(name, None)

    # ----------------------------------------------------------------- queueing

    def keys_for(self, event: WatchEvent) -> Iterable[Hashable]:
        if event.plural == "nodes":
            return (event.obj["metadata"]["name"],)
        if event.plural == "pods" and event.type != "DELETED":
            node_name = (event.obj.get("spec") or {}).get("nodeName")
            if node_name and node_name in self._noexecute and not is_deleting(event.obj):
                return (node_name,)
        return ()

    def resync_keys(self) -> Iterable[Hashable]:
        return [n["metadata"]["name"] for n in self.store.list("nodes")[0]]

    # ----------------------------------------------------------------- reconcile

    def reconcile(self, key: Hashable) -> None:
        if key == HEARTBEAT_KEY:
            self._heartbeat()
        elif isinstance(key, tuple) and key[0] == "evict":
            self._evict(key[1], key[2], key[3])
        else:
            self._sync_node(str(key))

    def _heartbeat(self) -> None:
        now = self.sim.clock.now()
        stamp = rfc3339(now)
        with self.store.lock:
            for node in self.store.list("nodes")[0]:
                name = node["metadata"]["name"]
                if self.kubelet_state(name) == "Unknown":
                    continue

                conditions = [dict(c, lastHeartbeatTime=stamp) for c in node["status"].get("conditions") or []]
                write_fields(self.store, "nodes", node, status=dict(node["status"], conditions=conditions))
                self._renew_lease(node, now)
        self.sim.schedule_at(now + HEARTBEAT_SECONDS, self.name, HEARTBEAT_KEY)

    def _sync_node(self, name: str) -> None:
        with self.store.lock:
            node = self.store.try_get("nodes", "", name)
            if node is None:
                self._collect_orphan_pods(name)
                return
            now = self.sim.clock.now()
            mode, since = self._failed.get(name, (None, now))
            unreachable = mode == "Unknown" and now >= since + NODE_MONITOR_GRACE_SECONDS
            if mode == "Unknown" and not unreachable:
                self.sim.schedule_at(since + NODE_MONITOR_GRACE_SECONDS, self.name, name)
            wanted_taints = self._wanted_taints(node, mode, unreachable, now)
            conditions = self._wanted_conditions(node, mode, unreachable, now)
            spec = node.get("spec") or {}
            if wanted_taints != (spec.get("taints") or []) or conditions != node["status"].get("conditions"):
                def change(obj: Obj) -> None:
                    if wanted_taints:
                        obj["spec"]["taints"] = wanted_taints
                    else:
                        obj["spec"].pop("taints", None)
                    obj["status"]["conditions"] = conditions

                before = node
                node = self.store.mutate("nodes", "", name, change)
                self._status_events(before, node)
            if self.store.try_get("leases", LEASE_NAMESPACE, name) is None and mode != "Unknown":
                self._renew_lease(node, now)
            noexecute = [t for t in wanted_taints if t.get("effect") == "NoExecute"]
            if noexecute:
                self._noexecute.add(name)
            else:
                self._noexecute.discard(name)
            if mode == "NotReady" or unreachable:
                self._mark_pods_not_ready(name, now)
            if noexecute:
                self._schedule_evictions(name, noexecute, now)

    def _status_events(self, before: Obj, after: Obj) -> None:
        """The events `kubectl describe node` lists when a node changes state."""
        name = after["metadata"]["name"]
        was = (get_condition(before, "Ready") or {}).get("status")
        now = (get_condition(after, "Ready") or {}).get("status")
        if was != now:
            if now == "True":
                self.sim.events.record(after, "NodeReady", f"Node {name} status is now: NodeReady",
                                       component="kubelet", host=name)
            else:
                self.sim.events.record(after, "NodeNotReady", f"Node {name} status is now: NodeNotReady",
                                       component="node-controller")
        cordoned = bool((after.get("spec") or {}).get("unschedulable"))
        if cordoned != self._cordoned.get(name, False):
            self._cordoned[name] = cordoned
            state = "NodeNotSchedulable" if cordoned else "NodeSchedulable"
            self.sim.events.record(after, state, f"Node {name} status is now: {state}", component="kubelet",
                                   host=name)

    def _renew_lease(self, node: Obj, now: float) -> None:
        """The kubelet's node Lease: created on first sight, renewTime moved on every heartbeat."""
        name = node["metadata"]["name"]
        renew = datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease = self.store.try_get("leases", LEASE_NAMESPACE, name)
        if lease is not None:
            write_fields(self.store, "leases", lease, spec=dict(lease.get("spec") or {}, renewTime=renew))
            return
        try:
            self.store.create("leases", {
                "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}]},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": int(NODE_MONITOR_GRACE_SECONDS),
                         "renewTime": renew},
            })
        except errors.ApiError:
            return  # kube-node-lease was deleted: nodes work without leases

    def _wanted_taints(self, node: Obj, mode: str | None, unreachable: bool, now: float) -> list[Obj]:
        current = (node.get("spec") or {}).get("taints") or []
        kept = [t for t in current if t.get("key") not in MANAGED_TAINTS]
        wanted: list[tuple[str, str]] = []
        if (node.get("spec") or {}).get("unschedulable"):
            wanted.append((UNSCHEDULABLE, "NoSchedule"))
        if mode == "NotReady":
            wanted += [(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")]
        elif unreachable:
            wanted += [(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]
        for key, effect in wanted:
            existing = next((t for t in current if t.get("key") == key and t.get("effect") == effect), None)
            kept.append(existing if existing is not None else {"key": key, "effect": effect,
                                                               "timeAdded": rfc3339(now)})
        return kept

    def _wanted_conditions(self, node: Obj, mode: str | None, unreachable: bool, now: float) -> list[Obj]:
        current = [dict(c) for c in node["status"].get("conditions") or []]
        stamp = rfc3339(now)
        if not current:
            current = healthy_conditions(stamp)
        by_type = {c["type"]: c for c in current}
        if unreachable:
            for condition in current:
                if condition.get("status") != "Unknown":
                    condition.update(status="Unknown", reason="NodeStatusUnknown",
                                     message="Kubelet stopped posting node status.", lastTransitionTime=stamp)
            return current
        healthy = {c["type"]: c for c in healthy_conditions(stamp)}
        for kind, template in healthy.items():
            condition = by_type.get(kind)
            if condition is None:
                current.append(template)
                continue
            status, reason, message = template["status"], template["reason"], template["message"]
            if kind == "Ready" and mode == "NotReady":
                status, reason, message = "False", "KubeletNotReady", NOT_READY_MESSAGE
            if condition.get("status") != status or condition.get("reason") != reason:
                condition.update(status=status, reason=reason, message=message, lastTransitionTime=stamp,
                                 lastHeartbeatTime=stamp)
        return current

    def _mark_pods_not_ready(self, node_name: str, now: float) -> None:
        stamp = rfc3339(now)
        for pod in self.store.pods_on_node(node_name):
            ready = get_condition(pod, "Ready")
            if ready is None or ready.get("status") == "False":
                continue

            def change(obj: Obj) -> None:
                for condition in obj["status"].get("conditions") or []:
                    if condition.get("type") == "Ready":
                        condition["status"] = "False"
                        condition["lastTransitionTime"] = stamp

            self.store.mutate("pods", pod["metadata"]["namespace"], pod["metadata"]["name"], change)

    # ----------------------------------------------------------------- taint-based eviction

    @staticmethod
    def _toleration_seconds(pod: Obj, taint: Obj) -> float | None:
        """Seconds the pod may stay under `taint`; None means forever, 0 means evict now."""
        tolerations = (pod.get("spec") or {}).get("tolerations") or []
        matching = [t for t in tolerations if tolerates(t, taint)]
        if not matching:
            if taint.get("key") in (NOT_READY, UNREACHABLE):
                return DEFAULT_TOLERATION_SECONDS  # what DefaultTolerationSeconds admission adds
            return 0
        seconds = [t.get("tolerationSeconds") for t in matching]
        if any(s is None for s in seconds):
            return None
        return max(0, min(int(s) for s in seconds))  # type: ignore[arg-type]

    def _eviction_time(self, pod: Obj, taints: list[Obj], now: float) -> float | None:
        deadline: float | None = None
        for taint in taints:
            seconds = self._toleration_seconds(pod, taint)
            if seconds is None:
                continue
            added = parse_rfc3339(taint["timeAdded"]) if taint.get("timeAdded") else now
            at = added + seconds
            deadline = at if deadline is None else min(deadline, at)
        return deadline

    def _schedule_evictions(self, node_name: str, taints: list[Obj], now: float) -> None:
        for pod in self.store.pods_on_node(node_name):
            if is_deleting(pod):
                continue
            at = self._eviction_time(pod, taints, now)
            if at is None:
                continue
            namespace, pod_name = key_of(pod)
            key = ("evict", node_name, namespace, pod_name)
            if at <= now:
                self._evict(node_name, namespace, pod_name)
            else:
                self.sim.schedule_at(at, self.name, key)

    def _evict(self, node_name: str, namespace: str, pod_name: str) -> None:
        with self.store.lock:
            pod = self.store.try_get("pods", namespace, pod_name)
            node = self.store.try_get("nodes", "", node_name)
            if pod is None or node is None or is_deleting(pod) or pod["spec"].get("nodeName") != node_name:
                return
            taints = [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("effect") == "NoExecute"]
            now = self.sim.clock.now()
            at = self._eviction_time(pod, taints, now)
            if at is None or at > now:
                return
            self.sim.events.record(pod, "TaintManagerEviction", f"Marking for deletion Pod {namespace}/{pod_name}",
                                   component="taint-eviction-controller")
            try:
                self.store.delete("pods", namespace, pod_name)
            except errors.ApiError:
                return

    def _collect_orphan_pods(self, node_name: str) -> None:
        """PodGC: pods bound to a node that no longer exists are force-deleted."""
        for pod in self.store.pods_on_node(node_name):
            try:
                self.store.delete("pods", pod["metadata"]["namespace"], pod["metadata"]["name"],
                                  grace_period_seconds=0)
            except errors.ApiError:
                continue
