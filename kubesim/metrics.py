"""metrics.k8s.io/v1beta1, as metrics-server serves it (kubesim-reference §3.9).

- NodeMetrics: the sum of the node's running pods' usage plus the node's own overhead (kubelet,
  container runtime, system daemons). Nodes whose kubelet is unreachable (Ready=Unknown) have no metrics,
  as metrics-server cannot scrape them.
- PodMetrics: running pods only, per container, and only once metrics-server has scraped them: a pod
  appears `SCRAPE_LAG_SECONDS` of sim time after it started Running ("metrics not available yet").
  Pods on an unreachable node have none either.
- CPU is written in nanocores (`"1100000000n"`) and memory in Ki, as metrics-server writes them.
- `sim.metrics_available = False` models metrics-server being down: every call is a 503.

There are no GPU metrics here, just as on a real cluster; see kubesim/prometheus.py for those.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from typing import Any

from kubesim.clock import rfc3339
from kubesim.errors import ApiError
from kubesim.load import (
    SCRAPE_INTERVAL_SECONDS,
    LoadContext,
    parse_quantity,
    pod_load,
    running_since,
    shared_context,
)

Obj = dict[str, Any]
Predicate = Callable[[Obj], bool]

GROUP = "metrics.k8s.io"
API_VERSION = "metrics.k8s.io/v1beta1"
WINDOW = "20s"
SCRAPE_LAG_SECONDS = SCRAPE_INTERVAL_SECONDS

# What a GPU node spends on itself: kubelet, containerd, the NVIDIA driver daemons, node exporters.
NODE_OVERHEAD_CPU_NANOCORES = 250_000_000
NODE_OVERHEAD_MEMORY_BYTES = 1536 * 1024 * 1024


def _unavailable() -> ApiError:
    # What the aggregator answers when the metrics-server APIService is not available.
    return ApiError(
        503, "ServiceUnavailable", "the server is currently unable to handle the request",
        {"group": GROUP, "kind": "nodes"},
    )


def _check_available(sim: Any) -> None:
    if not getattr(sim, "metrics_available", True):
        raise _unavailable()


def _not_found(plural: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{plural}.{GROUP} "{name}" not found', {"name": name, "group": GROUP,
                                                                           "kind": plural})


def _cpu(nanocores: float) -> str:
    return f"{int(nanocores)}n"


def _memory(size: float) -> str:
    return f"{int(size) // 1024}Ki"


def _scrape_time(ctx: LoadContext) -> str:
    """The start of the current scrape interval: metrics-server reports when it scraped, not now."""
    return rfc3339(ctx.bucket * SCRAPE_INTERVAL_SECONDS)


def _node_reachable(node: Obj) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") != "Unknown"
    return True


def _pod_visible(ctx: LoadContext, pod: Obj) -> bool:
    """Scraped already, and on a kubelet metrics-server can reach."""
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        return False
    started = running_since(pod)
    if started is None or ctx.now - started < SCRAPE_LAG_SECONDS:
        return False
    node = ctx.sim.store.try_get("nodes", "", node_name)
    return node is not None and _node_reachable(node)


def _node_metrics(ctx: LoadContext, node: Obj) -> Obj:
    """One NodeMetrics item, rendered once per state (the context's memo) however often it is listed."""
    key = ("node-metrics", node["metadata"]["name"])
    item = ctx.memo.get(key)
    if item is None:
        item = ctx.memo[key] = _render_node_metrics(ctx, node)
    return item


def _render_node_metrics(ctx: LoadContext, node: Obj) -> Obj:
    name = node["metadata"]["name"]
    cpu = NODE_OVERHEAD_CPU_NANOCORES
    memory = NODE_OVERHEAD_MEMORY_BYTES
    for pod in ctx.sim.store.pods_on_node(name):
        if running_since(pod) is not None:
            usage = pod_load(ctx.sim, pod, ctx)
            cpu += usage.cpu_nanocores
            memory += usage.memory_bytes
    rng = random.Random(f"{node['metadata'].get('uid', name)}/node/{ctx.bucket}")
    cpu *= 1 + rng.uniform(-0.03, 0.03)
    memory *= 1 + rng.uniform(-0.01, 0.01)
    capacity = (node.get("status") or {}).get("capacity") or {}
    with contextlib.suppress(KeyError, ValueError):  # no declared capacity: nothing to cap against
        cpu = min(cpu, parse_quantity(capacity["cpu"]) * 1e9)
        memory = min(memory, parse_quantity(capacity["memory"]))
    return {
        "metadata": {
            "name": name,
            "labels": dict(node["metadata"].get("labels") or {}),
            "creationTimestamp": rfc3339(ctx.now),
        },
        "timestamp": _scrape_time(ctx),
        "window": WINDOW,
        "usage": {"cpu": _cpu(cpu), "memory": _memory(memory)},
    }


def _pod_metrics(ctx: LoadContext, pod: Obj) -> Obj:
    """One PodMetrics item, rendered once per state (the context's memo) however often it is listed."""
    key = ("pod-metrics", pod["metadata"]["namespace"], pod["metadata"]["name"])
    item = ctx.memo.get(key)
    if item is None:
        item = ctx.memo[key] = _render_pod_metrics(ctx, pod)
    return item


def _render_pod_metrics(ctx: LoadContext, pod: Obj) -> Obj:
    usage = pod_load(ctx.sim, pod, ctx)
    return {
        "metadata": {
            "name": pod["metadata"]["name"],
            "namespace": pod["metadata"]["namespace"],
            "labels": dict(pod["metadata"].get("labels") or {}),
            "creationTimestamp": rfc3339(ctx.now),
        },
        "timestamp": _scrape_time(ctx),
        "window": WINDOW,
        "containers": [
            {"name": c.name, "usage": {"cpu": _cpu(c.cpu_nanocores), "memory": _memory(c.memory_bytes)}}
            for c in usage.containers
        ],
    }


def _with_kind(item: Obj, kind: str) -> Obj:
    return {"kind": kind, "apiVersion": API_VERSION, **item}


def list_node_metrics(sim: Any, label_predicate: Predicate | None = None) -> Obj:
    """NodeMetricsList; `label_predicate` is called with each Node object (a parsed labelSelector)."""
    _check_available(sim)
    with sim.store.lock:
        ctx = shared_context(sim)
        nodes, _ = sim.store.list("nodes", predicate=label_predicate)
        items = [_node_metrics(ctx, node) for node in nodes if _node_reachable(node)]
    return {"kind": "NodeMetricsList", "apiVersion": API_VERSION, "metadata": {}, "items": items}


def get_node_metrics(sim: Any, name: str) -> Obj:
    _check_available(sim)
    with sim.store.lock:
        node = sim.store.try_get("nodes", "", name)
        if node is None or not _node_reachable(node):
            raise _not_found("nodemetrics", name)
        return _with_kind(_node_metrics(shared_context(sim), node), "NodeMetrics")


def list_pod_metrics(sim: Any, namespace: str | None, label_predicate: Predicate | None = None) -> Obj:
    """PodMetricsList of running, already-scraped pods; `label_predicate` is called with each Pod object."""
    _check_available(sim)
    with sim.store.lock:
        ctx = shared_context(sim)
        pods, _ = sim.store.list("pods", namespace or None, predicate=label_predicate)
        items = [_pod_metrics(ctx, pod) for pod in pods if _pod_visible(ctx, pod)]
    return {"kind": "PodMetricsList", "apiVersion": API_VERSION, "metadata": {}, "items": items}


def get_pod_metrics(sim: Any, namespace: str, name: str) -> Obj:
    _check_available(sim)
    with sim.store.lock:
        ctx = shared_context(sim)
        pod = sim.store.try_get("pods", namespace, name)
        if pod is None or not _pod_visible(ctx, pod):
            # metrics-server names the pod as namespace/name in this message.
            raise _not_found("podmetrics", f"{namespace}/{name}")
        return _with_kind(_pod_metrics(ctx, pod), "PodMetrics")
