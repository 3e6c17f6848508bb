"""The scheduler: kube-scheduler's default filters, GPU-aware scoring and its exact failure messages.

Filters, in kube-scheduler's plugin order: NodeUnschedulable, TaintToleration, NodeAffinity
(nodeSelector + required node affinity), NodeResourcesFit (cpu, memory, pod count and extended
resources such as nvidia.com/gpu, integral and never overcommitted). The first three depend only on
the pod's placement constraints and the node, so their verdicts are cached per constraint signature
until a node changes; resource totals per node are kept incrementally from pod events, which is what
keeps 10,000 pods on 1,000 nodes fast.

Scoring: MostAllocated (bin-packing) for pods that request GPUs, LeastAllocated (spreading) for the
rest, over every feasible node (kube-scheduler with percentageOfNodesToScore: 100); ties go to the
first node in name order. Nodes are grouped by resource state (allocatable and requested cpu, memory,
GPUs, pods): nodes in one state get the same verdict, and a big cluster has few states, so each pod
costs one evaluation per state rather than one per node.

An unschedulable pod gets PodScheduled=False/Unschedulable with the real message and a FailedScheduling
event (aggregated), and is retried when the cluster changes, after a 1-10 s backoff, or every 5 minutes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable, Iterable

from kubesim.clock import rfc3339
from kubesim.controllers.common import (
    Controller,
    Obj,
    ObjKey,
    is_deleting,
    is_terminal,
    key_of,
    node_allocatable,
    pod_requests,
    write_fields,
)
from kubesim.store import WatchEvent

SCHEDULER_NAME = "default-scheduler"
GPU = "nvidia.com/gpu"
UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
MAX_IN_UNSCHEDULABLE_SECONDS = 300.0
INITIAL_BACKOFF, MAX_BACKOFF = 1.0, 10.0
MSG_UNSCHEDULABLE = "node(s) were unschedulable"
MSG_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
PREEMPTION_NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"


class NodeInfo:
    """A node as the scheduler sees it; cpu/memory/GPU/pods are plain attributes for the hot loop."""

    __slots__ = ("alloc_cpu", "alloc_gpu", "alloc_mem", "alloc_pods", "allocatable", "inv_cpu", "inv_gpu",
                 "inv_mem", "labels", "name", "pods", "req_cpu", "req_gpu", "req_mem", "requested",
                 "state", "static_signature", "taints", "unschedulable")

    def __init__(self, node: Obj) -> None:
        self.name = node["metadata"]["name"]
        self.allocatable = node_allocatable(node)
        self.labels = dict(node["metadata"].get("labels") or {})
        self.taints = [dict(t) for t in (node.get("spec") or {}).get("taints") or []]
        self.unschedulable = bool((node.get("spec") or {}).get("unschedulable"))
        self.alloc_cpu = self.allocatable.get("cpu", 0.0)
        self.alloc_mem = self.allocatable.get("memory", 0.0)
        self.alloc_gpu = self.allocatable.get(GPU, 0.0)
        self.alloc_pods = self.allocatable.get("pods", 110.0)
        self.inv_cpu = 1 / self.alloc_cpu if self.alloc_cpu > 0 else 0.0
        self.inv_mem = 1 / self.alloc_mem if self.alloc_mem > 0 else 0.0
        self.inv_gpu = 1 / self.alloc_gpu if self.alloc_gpu > 0 else 0.0
        self.requested: dict[str, float] = {}  # every resource, including the three below
        self.req_cpu = self.req_mem = self.req_gpu = 0.0
        self.pods = 0
        self.state = self._state()
        self.static_signature = json.dumps(
            [self.allocatable, self.labels, self.taints, self.unschedulable], sort_keys=True
        )

    def add(self, requests: dict[str, float], sign: int) -> None:
        for resource, amount in requests.items():
            self.requested[resource] = self.requested.get(resource, 0.0) + sign * amount
        self.req_cpu = self.requested.get("cpu", 0.0)
        self.req_mem = self.requested.get("memory", 0.0)
        self.req_gpu = self.requested.get(GPU, 0.0)
        self.pods += sign
        self.state = self._state()

    def take_usage_from(self, other: NodeInfo) -> None:
        self.requested, self.pods = other.requested, other.pods
        self.req_cpu, self.req_mem, self.req_gpu = other.req_cpu, other.req_mem, other.req_gpu
        self.state = self._state()

    def _state(self) -> tuple[float, ...]:
        """Everything fit and score read, for cpu/memory/GPU pods: equal states give equal verdicts."""
        return (self.alloc_cpu, self.alloc_mem, self.alloc_gpu, self.alloc_pods,
                self.req_cpu, self.req_mem, self.req_gpu, float(self.pods))


def tolerates(toleration: Obj, taint: Obj) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    operator = toleration.get("operator") or "Equal"
    if not toleration.get("key"):
        return operator == "Exists"
    if toleration["key"] != taint.get("key"):
        return False
    if operator == "Exists":
        return True
    return (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated(tolerations: list[Obj], taints: list[Obj], effects: tuple[str, ...]) -> Obj | None:
    for taint in taints:
        if taint.get("effect") in effects and not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


def _match_expression(expr: Obj, labels: dict[str, str]) -> bool:
    key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    present = key in labels
    value = labels.get(key)
    if operator == "In":
        return present and value in values
    if operator == "NotIn":
        return not present or value not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and len(values) == 1:
        try:
            left, right = int(value), int(values[0])  # type: ignore[arg-type]
        except ValueError:
            return False
        return left > right if operator == "Gt" else left < right
    return False


def matches_node_affinity(pod: Obj, node: NodeInfo) -> bool:
    spec = pod.get("spec") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if node.labels.get(key) != value:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if not required:
        return True
    fields = {"metadata.name": node.name}
    for term in required.get("nodeSelectorTerms") or []:
        expressions = term.get("matchExpressions") or []
        field_expressions = term.get("matchFields") or []
        if not expressions and not field_expressions:
            continue
        if all(_match_expression(e, node.labels) for e in expressions) and all(
            _match_expression(e, fields) for e in field_expressions
        ):
            return True
    return False


def static_verdict(pod: Obj, node: NodeInfo) -> str | None:
    """The first failing non-resource filter's reason, or None if the node passes them all."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    if node.unschedulable and not any(tolerates(t, UNSCHEDULABLE_TAINT) for t in tolerations):
        return MSG_UNSCHEDULABLE
    taint = untolerated(tolerations, node.taints, ("NoSchedule", "NoExecute"))
    if taint is not None:
        return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
    if not matches_node_affinity(pod, node):
        return MSG_AFFINITY
    return None


def _pinned_nodes(spec: Obj) -> set[str] | None:
    """Node names a pod's required affinity restricts it to by `matchFields` metadata.name, if it does."""
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    names: set[str] = set()
    for term in terms:
        fields = term.get("matchFields") or []
        pins = [f for f in fields if f.get("key") == "metadata.name" and f.get("operator") == "In"]
        if not pins:
            return None
        names.update(pins[0].get("values") or [])
    return names if terms else None


def needs_scheduling(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    return (
        not spec.get("nodeName")
        and (spec.get("schedulerName") or SCHEDULER_NAME) == SCHEDULER_NAME
        and not is_deleting(pod)
        and not is_terminal(pod)
    )


class Scheduler(Controller):
    name = "scheduler"
    ignores_own_writes = True

    def reset(self) -> None:
        self._nodes: dict[str, NodeInfo] = {}
        self._order: list[str] = []
        self._usage: dict[ObjKey, tuple[str, dict[str, float]]] = {}
        self._epoch = 0
        self._static_cache: dict[str, tuple[int, list[NodeInfo], set[str], Counter]] = {}
        self._groups: dict[tuple[float, ...], set[str]] = {}  # resource state → nodes in it
        self._unschedulable: dict[ObjKey, tuple[int, float]] = {}  # attempts, last attempt
        self._retry_at: dict[ObjKey, float] = {}
        with self.store.lock:
            for node in self.store.list("nodes")[0]:
                self._update_node(node)
            for pod in self.store.list("pods")[0]:
                self._account(key_of(pod), pod)

    # ----------------------------------------------------------------- cache upkeep (under the store lock)

    def keys_for(self, event: WatchEvent) -> Iterable[Hashable]:
        if event.plural == "pods":
            key = (event.namespace, event.obj["metadata"]["name"])
            freed = self._account(key, None if event.type == "DELETED" else event.obj)
            if freed:
                self._cluster_changed()
            if event.type != "DELETED" and needs_scheduling(event.obj) and key not in self._unschedulable:
                return (key,)
            return ()
        if event.plural == "nodes":
            name = event.obj["metadata"]["name"]
            if event.type == "DELETED":
                self._remove_node(name)
            elif self._update_node(event.obj):
                self._cluster_changed()
        return ()

    def resync_keys(self) -> Iterable[Hashable]:
        return [key_of(p) for p in self.store.list("pods")[0] if needs_scheduling(p)]

    def _update_node(self, node: Obj) -> bool:
        """Refresh a node's cached view; True when something scheduling depends on changed."""
        info = NodeInfo(node)
        old = self._nodes.get(info.name)
        if old is not None:
            if old.static_signature == info.static_signature:
                return False
            info.take_usage_from(old)
            self._ungroup(old)
        else:
            self._order = sorted([*self._order, info.name])
        self._nodes[info.name] = info
        self._group(info)
        self._epoch += 1
        return True

    def _remove_node(self, name: str) -> None:
        info = self._nodes.pop(name, None)
        if info is not None:
            self._ungroup(info)
            self._order.remove(name)
            self._epoch += 1

    def _group(self, info: NodeInfo) -> None:
        self._groups.setdefault(info.state, set()).add(info.name)

    def _ungroup(self, info: NodeInfo) -> None:
        members = self._groups.get(info.state)
        if members is not None:
            members.discard(info.name)
            if not members:
                del self._groups[info.state]

    def _change_usage(self, info: NodeInfo, requests: dict[str, float], sign: int) -> None:
        self._ungroup(info)
        info.add(requests, sign)
        self._group(info)

    def _account(self, key: ObjKey, pod: Obj | None) -> bool:
        """Keep per-node requested totals; True when resources were released."""
        node_name = (pod.get("spec") or {}).get("nodeName") if pod is not None else None
        counts = pod is not None and bool(node_name) and not is_terminal(pod)
        current = self._usage.get(key)
        if current is not None and counts and current[0] == node_name:
            return False
        released = False
        if current is not None:
            info = self._nodes.get(current[0])
            if info is not None:
                self._change_usage(info, current[1], -1)
            del self._usage[key]
            released = True
        if counts:
            requests = pod_requests(pod)  # type: ignore[arg-type]
            self._usage[key] = (node_name, requests)  # type: ignore[assignment]
            info = self._nodes.get(node_name)  # type: ignore[arg-type]
            if info is not None:
                self._change_usage(info, requests, 1)
        if pod is None or counts:
            self._unschedulable.pop(key, None)
            self._retry_at.pop(key, None)
        return released

    def node_usage(self, name: str) -> tuple[dict[str, float], int, dict[str, float]] | None:
        """(requested totals, pod count, allocatable) of a node, counting every bound non-terminal pod."""
        info = self._nodes.get(name)
        if info is None:
            return None
        return dict(info.requested), info.pods, dict(info.allocatable)

    def _cluster_changed(self) -> None:
        """Something that may make pending pods fit happened: retry them once their backoff ends."""
        now = self.sim.clock.now()
        for key, (attempts, last) in self._unschedulable.items():
            at = max(now, last + min(MAX_BACKOFF, INITIAL_BACKOFF * 2 ** max(0, attempts - 1)))
            if self._retry_at.get(key, float("inf")) > at:
                self._retry_at[key] = at
                self.sim.schedule_at(at, self.name, key)

    # ----------------------------------------------------------------- scheduling

    def reconcile(self, key: Hashable) -> None:
        with self.store.lock:
            self._retry_at.pop(key, None)  # type: ignore[arg-type]
            pod = self.store.try_get("pods", *key)  # type: ignore[misc]
            if pod is None or not needs_scheduling(pod):
                self._unschedulable.pop(key, None)  # type: ignore[arg-type]
                return
            node_name, message = self._place(pod)
            if node_name is not None:
                self._bind(pod, node_name)
            else:
                self._reject(key, pod, message)  # type: ignore[arg-type]

    def _static(self, pod: Obj) -> tuple[list[NodeInfo], set[str], Counter]:
        spec = pod.get("spec") or {}
        signature = json.dumps(
            [spec.get("tolerations"), spec.get("nodeSelector"), (spec.get("affinity") or {}).get("nodeAffinity")],
            sort_keys=True,
        )
        cached = self._static_cache.get(signature)
        if cached is not None and cached[0] == self._epoch:
            return cached[1], cached[2], cached[3]
        eligible, reasons = [], Counter()
        pinned = _pinned_nodes(spec)
        for name in self._order:
            info = self._nodes[name]
            # A pod pinned by name (DaemonSet pods) skips the full filter on every other node.
            verdict = MSG_AFFINITY if pinned is not None and name not in pinned else static_verdict(pod, info)
            if verdict is None:
                eligible.append(info)
            else:
                reasons[verdict] += 1
        if len(self._static_cache) > 256:
            self._static_cache.clear()
        names = {info.name for info in eligible}
        self._static_cache[signature] = (self._epoch, eligible, names, reasons)
        return eligible, names, reasons

    def _place(self, pod: Obj) -> tuple[str | None, str]:
        total = len(self._order)
        if total == 0:
            return None, "no nodes available to schedule pods"
        eligible, eligible_names, static_reasons = self._static(pod)
        wanted = pod_requests(pod)
        cpu, mem, gpu = wanted.get("cpu", 0.0), wanted.get("memory", 0.0), wanted.get(GPU, 0.0)
        others = [(r, a) for r, a in wanted.items() if a > 0 and r not in ("cpu", "memory", GPU)]
        everywhere = len(eligible_names) == total
        best_name: str | None = None
        best_score = -1.0
        for members in self._groups.values():
            if others:  # extended resources beyond GPUs: judge node by node
                candidates = sorted(n for n in members if n in eligible_names)
            else:
                first = min(members) if everywhere else min((n for n in members if n in eligible_names), default=None)
                candidates = [first] if first is not None else []
            for name in candidates:
                score = self._fit_score(self._nodes[name], cpu, mem, gpu, others)
                if score < 0:
                    continue
                if score > best_score or (score == best_score and name < best_name):  # type: ignore[operator]
                    best_name, best_score = name, score
                break
        if best_name is not None:
            return best_name, ""
        fit_reasons: Counter = Counter()
        requests = [(r, a) for r, a in wanted.items() if a > 0]
        for info in eligible:
            fit_reasons.update(self._misfit(info, requests))
        return None, self._message(total, static_reasons, fit_reasons, len(eligible))

    @staticmethod
    def _fit_score(info: NodeInfo, cpu: float, mem: float, gpu: float, others: list[tuple[str, float]]) -> float:
        """-1 if the pod does not fit, else its score on this node (higher is better)."""
        if (info.pods >= info.alloc_pods
                or (cpu and info.req_cpu + cpu > info.alloc_cpu)
                or (mem and info.req_mem + mem > info.alloc_mem)
                or (gpu and info.req_gpu + gpu > info.alloc_gpu)):
            return -1.0
        if others and any(info.requested.get(r, 0.0) + a > info.allocatable.get(r, 0.0) for r, a in others):
            return -1.0
        used_cpu = (info.req_cpu + cpu) * info.inv_cpu
        used_mem = (info.req_mem + mem) * info.inv_mem
        if gpu:  # MostAllocated: pack GPU pods so whole nodes stay free for 8-GPU models
            return 2 * (info.req_gpu + gpu) * info.inv_gpu + (used_cpu + used_mem) / 2
        return (2 - used_cpu - used_mem) / 2  # LeastAllocated: spread everything else

    @staticmethod
    def _misfit(info: NodeInfo, requests: list[tuple[str, float]]) -> list[str]:
        reasons = []
        if info.pods + 1 > info.alloc_pods:
            reasons.append("Too many pods")
        for resource, amount in requests:
            if info.requested.get(resource, 0.0) + amount > info.allocatable.get(resource, 0.0) + 1e-9:
                reasons.append(f"Insufficient {resource}")
        return reasons

    @staticmethod
    def _message(total: int, static_reasons: Counter, fit_reasons: Counter, fit_nodes: int) -> str:
        reasons = Counter(static_reasons)
        reasons.update(fit_reasons)
        summary = ", ".join(sorted(f"{count} {reason}" for reason, count in reasons.items()))
        preemption = Counter()
        not_helpful = total - fit_nodes
        if fit_nodes:
            preemption[NO_VICTIMS] = fit_nodes
        if not_helpful:
            preemption[PREEMPTION_NOT_HELPFUL] = not_helpful
        preemption_summary = ", ".join(sorted(f"{count} {reason}" for reason, count in preemption.items()))
        return (f"0/{total} nodes are available: {summary}. "
                f"preemption: 0/{total} nodes are available: {preemption_summary}.")

    def _bind(self, pod: Obj, node_name: str) -> None:
        meta = pod["metadata"]
        now = self.sim.clock.now()
        self._unschedulable.pop((meta["namespace"], meta["name"]), None)

        def bind(obj: Obj) -> None:
            obj["spec"]["nodeName"] = node_name
            status = obj.setdefault("status", {})
            conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conditions.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                               "lastTransitionTime": rfc3339(now)})
            status["conditions"] = conditions
            status.setdefault("phase", "Pending")

        bound = self.sim.write_binding(meta["namespace"], meta["name"], bind)
        self.sim.events.record(bound, "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} "
                               f"to {node_name}", "Normal", component=SCHEDULER_NAME)

    def _reject(self, key: ObjKey, pod: Obj, message: str) -> None:
        now = self.sim.clock.now()
        attempts = self._unschedulable.get(key, (0, now))[0] + 1
        self._unschedulable[key] = (attempts, now)
        old = next((c for c in (pod.get("status") or {}).get("conditions") or []
                    if c.get("type") == "PodScheduled"), None)
        if old is None or old.get("status") != "False" or old.get("message") != message:
            status = dict(pod.get("status") or {})
            status.setdefault("phase", "Pending")
            conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conditions.append({"type": "PodScheduled", "status": "False", "lastProbeTime": None,
                               "lastTransitionTime": rfc3339(now), "reason": "Unschedulable", "message": message})
            status["conditions"] = conditions
            pod = write_fields(self.store, "pods", pod, status=status)
        self.sim.events.record(pod, "FailedScheduling", message, "Warning", component=SCHEDULER_NAME)
        at = now + MAX_IN_UNSCHEDULABLE_SECONDS
        if self._retry_at.get(key, float("inf")) > at:
            self._retry_at[key] = at
            self.sim.schedule_at(at, self.name, key)
