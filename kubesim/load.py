"""The synthetic load model: what each pod would be doing if real traffic reached it.

An operator or a test sets a load per Deployment (`Simulation.set_load`), as total concurrent requests.
Like a Service spreading traffic evenly, every *serving* replica (Ready and not terminating) gets
`concurrency / serving_replicas` of it. From that share this module derives the figures that
metrics.k8s.io (CPU/memory), the DCGM exporter (GPU) and vLLM (queue, KV cache) would report.

Formulas (per serving replica; `capacity` = vLLM's max running sequences, default 16):
- running   = min(capacity, share); waiting = max(0, share - capacity); busy = running / capacity;
- GPU util  = 0 when nothing runs, else 97 · busy^0.6 ± 2 (percent). Continuous batching keeps a GPU
              busy well before the batch is full, hence the concave curve; ~95-99 % near capacity;
- KV cache  = 0.9 · busy, rising towards 1.0 as requests queue (vLLM queues once the cache is full);
- GPU memory = 0.9 of each GPU (vLLM's default gpu_memory_utilization) once the model is loaded. While
              the container runs but is not Ready yet (loading weights) it rises linearly from 0 over the
              model-load time (pod behaviour or `kubesim.io/model-load-seconds`, else the 90 s stage default);
- CPU       = (0.05 + 0.5 · busy) × the container's cpu request; memory = (0.6 + 0.1 · busy) × request.
Load overrides (`gpu_utilization`, `kv_cache_usage`, `gpu_memory_fraction`, `cpu_fraction`) replace the
computed figure for every serving pod of the deployment.

Noise is seeded by the pod's UID (itself seeded) and the 15 s scrape bucket of the sim clock, so two
queries within one scrape interval agree and every run with one seed sees the same numbers. The model
never draws from `sim.rng`, so querying metrics cannot change what the controllers do.

Pods outside any Deployment, or of a Deployment without a load, get idle figures. The kwok annotations
`kwok.x-k8s.io/usage-cpu` / `kwok.x-k8s.io/usage-memory` (quantities, per pod) override CPU/memory.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from kubesim.clock import parse_rfc3339
from kubesim.stages import STAGES

Obj = dict[str, Any]

SCRAPE_INTERVAL_SECONDS = 15.0  # metrics-server's and a typical Prometheus scrape interval
DEFAULT_CAPACITY_PER_REPLICA = 16.0  # vLLM max_num_seqs on a small GPU profile
VLLM_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default --gpu-memory-utilization
DEFAULT_MODEL_LOAD_SECONDS = STAGES["model-load"].delay
GPU_RESOURCE = "nvidia.com/gpu"
USAGE_CPU_ANNOTATION = "kwok.x-k8s.io/usage-cpu"
USAGE_MEMORY_ANNOTATION = "kwok.x-k8s.io/usage-memory"
MODEL_LOAD_ANNOTATION = "kubesim.io/model-load-seconds"

NOISE_GPU, NOISE_KV, NOISE_CONTAINERS = 0, 1, 2  # noise channels: GPU, KV cache, then cpu/memory per container

# Containers without requests still use something: what a small sidecar uses.
FALLBACK_CPU_NANOCORES = 10_000_000  # 10m
FALLBACK_MEMORY_BYTES = 32 * 1024 * 1024  # 32Mi

_LOAD_LIMITS: dict[str, tuple[float, float | None]] = {
    # key: (minimum, maximum or None)
    "concurrency": (0.0, None),
    "capacity_per_replica": (1e-9, None),
    "gpu_utilization": (0.0, 100.0),
    "kv_cache_usage": (0.0, 1.0),
    "gpu_memory_fraction": (0.0, 1.0),
    "cpu_fraction": (0.0, None),
}


def validate_load(load: Any) -> dict[str, float]:
    """Check a load dict and return it with defaults filled in; ValueError says what is wrong."""
    if not isinstance(load, dict):
        raise ValueError(f"load must be an object, got {type(load).__name__}")
    unknown = sorted(set(load) - set(_LOAD_LIMITS))
    if unknown:
        raise ValueError(f"unknown load keys {unknown}; allowed: {sorted(_LOAD_LIMITS)}")
    checked: dict[str, float] = {}
    for key, value in load.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"load.{key} must be a finite number, got {value!r}")
        low, high = _LOAD_LIMITS[key]
        if value < low or (high is not None and value > high):
            bounds = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
            if key == "capacity_per_replica":
                bounds = "> 0"
            raise ValueError(f"load.{key} must be {bounds}, got {value!r}")
        checked[key] = float(value)
    checked.setdefault("concurrency", 0.0)
    checked.setdefault("capacity_per_replica", DEFAULT_CAPACITY_PER_REPLICA)
    return checked


# --------------------------------------------------------------------------- quantities

_QUANTITY_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?\Z")
_SUFFIX = {
    None: 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}


def parse_quantity(text: Any) -> float:
    """A Kubernetes resource quantity ("500m", "16Gi", "2", 1.5) as a plain number; ValueError if malformed."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    return _parse_quantity_text(str(text))


@functools.lru_cache(maxsize=4096)  # a cluster uses a handful of distinct quantities, 10,000s of times per query
def _parse_quantity_text(text: str) -> float:
    match = _QUANTITY_RE.match(text.strip())
    if match is None:
        raise ValueError(f"quantities must match the regular expression for a resource quantity, got {text!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def _quantity_or(text: Any, default: float) -> float:
    try:
        return parse_quantity(text)
    except ValueError:
        return default


def container_requests(container: Obj) -> dict[str, Any]:
    """Requests as the apiserver defaults them: a limit without a request is also the request."""
    resources = container.get("resources") or {}
    merged = dict(resources.get("limits") or {})
    merged.update(resources.get("requests") or {})
    return merged


def pod_gpu_count(pod: Obj) -> int:
    return sum(
        int(_quantity_or(container_requests(c).get(GPU_RESOURCE, 0), 0))
        for c in (pod.get("spec") or {}).get("containers") or []
    )


# --------------------------------------------------------------------------- pod state


def pod_is_ready(pod: Obj) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def running_since(pod: Obj) -> float | None:
    """When the pod's containers started running (the earliest container), None if not running."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return None
    starts = []
    for container_status in status.get("containerStatuses") or []:
        started = ((container_status.get("state") or {}).get("running") or {}).get("startedAt")
        if started:
            starts.append(parse_rfc3339(started))
    if starts:
        return min(starts)
    if status.get("startTime"):
        return parse_rfc3339(status["startTime"])
    return None


def _controller_owner(obj: Obj, kind: str) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("controller", True):
            return ref.get("name")
    return None


def _is_model_server(pod: Obj, gpus: int) -> bool:
    """A vLLM-style model server: it requests GPUs, runs a vLLM image, or is started with --model."""
    if gpus > 0:
        return True
    for container in (pod.get("spec") or {}).get("containers") or []:
        words = [*(container.get("command") or []), *(container.get("args") or [])]
        if "vllm" in (container.get("image") or "") or any(w == "--model" or w.startswith("--model=") for w in words):
            return True
    return False


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ContainerUsage:
    name: str
    cpu_nanocores: int
    memory_bytes: int


@dataclass(frozen=True)
class PodLoad:
    """What one pod is doing now. GPU figures are per GPU (every GPU of a pod does the same work)."""

    deployment: str | None
    model_server: bool
    ready: bool  # Ready and not terminating: it receives traffic and exports vLLM metrics
    gpus: int
    gpu_utilization: float  # percent, 0-100
    gpu_memory_fraction: float  # of each GPU's memory
    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float = 0.0  # 0-1
    containers: tuple[ContainerUsage, ...] = field(default_factory=tuple)

    @property
    def exports_vllm_metrics(self) -> bool:
        return self.model_server and self.ready

    @property
    def cpu_nanocores(self) -> int:
        return sum(c.cpu_nanocores for c in self.containers)

    @property
    def memory_bytes(self) -> int:
        return sum(c.memory_bytes for c in self.containers)


class LoadContext:
    """Owner resolution and serving-replica counts, computed once per request instead of once per pod.

    `memo` is free for the metric endpoints to keep what they derive from this context (rendered items,
    series): it lives exactly as long as the context, so it can never outlive the state it was built from.
    """

    def __init__(self, sim: Any, now: float | None = None) -> None:
        self.sim = sim
        self.now = sim.clock.now() if now is None else now
        self.bucket = int(self.now // SCRAPE_INTERVAL_SECONDS)
        self.memo: dict[Any, Any] = {}
        self._rs_owner: dict[tuple[str, str], str | None] = {}
        self._serving: dict[str, dict[str, int]] = {}  # namespace -> deployment -> serving pods
        self.loads: dict[tuple[str, str], PodLoad] = {}  # (uid, resourceVersion) -> figures, per request
        self._noise: dict[str, list[float]] = {}
        self._gpus: dict[str, int] = {}

    def gpu_count(self, pod: Obj) -> int:
        """`pod_gpu_count`, once per pod per request (the DCGM and vLLM series both need it)."""
        uid = pod["metadata"].get("uid") or pod["metadata"]["name"]
        count = self._gpus.get(uid)
        if count is None:
            count = self._gpus[uid] = pod_gpu_count(pod)
        return count

    def deployment_of(self, pod: Obj) -> str | None:
        namespace = pod["metadata"].get("namespace", "")
        rs_name = _controller_owner(pod, "ReplicaSet")
        if rs_name is None:
            return None
        key = (namespace, rs_name)
        if key not in self._rs_owner:
            rs = self.sim.store.try_get("replicasets", namespace, rs_name)
            self._rs_owner[key] = _controller_owner(rs, "Deployment") if rs is not None else None
        return self._rs_owner[key]

    def serving_replicas(self, namespace: str, deployment: str) -> int:
        if namespace not in self._serving:
            counts: dict[str, int] = {}
            pods, _ = self.sim.store.list("pods", namespace)
            for pod in pods:
                if _serving(pod):
                    owner = self.deployment_of(pod)
                    if owner is not None:
                        counts[owner] = counts.get(owner, 0) + 1
            self._serving[namespace] = counts
        return self._serving[namespace].get(deployment, 0)

    def noise(self, pod: Obj, channel: int, amplitude: float) -> float:
        """Uniform noise in ±amplitude, fixed for (pod, channel, scrape bucket); channels 0-15."""
        uid = pod["metadata"].get("uid") or pod["metadata"]["name"]
        draws = self._noise.get(uid)
        if draws is None:
            # One 64-byte hash gives sixteen draws: hashing per channel dominated 10,000-pod queries.
            digest = hashlib.blake2b(f"{uid}/{self.bucket}".encode(), digest_size=64).digest()
            draws = self._noise[uid] = [int.from_bytes(digest[i:i + 4], "big") / 2.0**32 for i in range(0, 64, 4)]
        return (2 * draws[channel % 16] - 1) * amplitude


_SHARED: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], LoadContext]] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def _state_key(sim: Any, now: float) -> tuple[Any, ...]:
    """Everything a pod's figures depend on: the store (its revision moves on every write, restores
    included), the instant, and the loads and pod behaviours (compared by value: tests and the admin API
    replace or edit them in place)."""
    behaviors = sim.pod_behaviors() if hasattr(sim, "pod_behaviors") else ()
    return (sim.store.revision, now, repr(getattr(sim, "loads", {})), repr(behaviors))


def shared_context(sim: Any) -> LoadContext:
    """The `LoadContext` of the cluster's current state, shared by every metrics request until it changes.

    metrics-server and Prometheus answer from what they last scraped rather than recomputing per request;
    likewise every request at one instant of one state (a sweep's metrics lists and PromQL queries, a
    dashboard's refresh) reuses one context and so each pod's figures are computed once, not once per
    request. Call with `sim.store.lock` held, so the state cannot move while the context is filled.
    """
    now = sim.clock.now()
    key = _state_key(sim, now)
    with _SHARED_LOCK:
        cached = _SHARED.get(sim)
        if cached is not None and cached[0] == key:
            return cached[1]
        context = LoadContext(sim, now)
        _SHARED[sim] = (key, context)
        return context


def _serving(pod: Obj) -> bool:
    return pod_is_ready(pod) and not pod["metadata"].get("deletionTimestamp")


def pod_load(sim: Any, pod: Obj, context: LoadContext | None = None) -> PodLoad:
    """The pod's current figures; pass one `LoadContext` when evaluating many pods in one request."""
    ctx = context or LoadContext(sim)
    key = (pod["metadata"].get("uid", ""), pod["metadata"].get("resourceVersion", ""))
    cached = ctx.loads.get(key)
    if cached is None:
        cached = ctx.loads[key] = _compute_pod_load(sim, pod, ctx)
    return cached


def _compute_pod_load(sim: Any, pod: Obj, ctx: LoadContext) -> PodLoad:
    namespace = pod["metadata"].get("namespace", "")
    deployment = ctx.deployment_of(pod)
    gpus = ctx.gpu_count(pod)
    model_server = _is_model_server(pod, gpus)
    started = running_since(pod)
    load = sim.loads.get((namespace, deployment)) if deployment is not None else None

    if started is None:  # not running: pending, pulling, finished, or failed
        return PodLoad(deployment, model_server, False, gpus, 0.0, 0.0, containers=_containers(ctx, pod, 0.0, 0.0))

    if not _serving(pod):
        # Running but not Ready: loading weights into GPU memory (or failing readiness, or terminating).
        loaded = 1.0
        if model_server and not pod["metadata"].get("deletionTimestamp"):
            load_seconds = _model_load_seconds(sim, pod)
            loaded = 1.0 if load_seconds <= 0 else min(1.0, max(0.0, (ctx.now - started) / load_seconds))
        gpu_memory = VLLM_GPU_MEMORY_UTILIZATION * loaded if gpus else 0.0
        cpu = 0.5 if model_server else 0.1
        return PodLoad(
            deployment, model_server, False, gpus, 0.0, gpu_memory,
            containers=_containers(ctx, pod, cpu, 0.1 + 0.5 * loaded),
        )

    load = load or {}
    capacity = load.get("capacity_per_replica", DEFAULT_CAPACITY_PER_REPLICA)
    replicas = ctx.serving_replicas(namespace, deployment) if deployment is not None else 1
    share = load.get("concurrency", 0.0) / max(1, replicas)
    running = min(capacity, share)
    waiting = max(0.0, share - capacity)
    busy = running / capacity

    if "gpu_utilization" in load:
        utilization = load["gpu_utilization"]
    elif running <= 0:
        utilization = 0.0
    else:
        utilization = _clamp(97.0 * busy**0.6 + ctx.noise(pod, NOISE_GPU, 2.0), 1.0, 100.0)
    if "kv_cache_usage" in load:
        kv_cache = load["kv_cache_usage"]
    elif waiting > 0:
        kv_cache = min(1.0, 0.9 + 0.1 * min(1.0, waiting / capacity))
    else:
        kv_cache = _clamp(0.9 * busy + (ctx.noise(pod, NOISE_KV, 0.01) if running > 0 else 0.0), 0.0, 1.0)
    gpu_memory = load.get("gpu_memory_fraction", VLLM_GPU_MEMORY_UTILIZATION) if gpus else 0.0
    cpu_fraction = load.get("cpu_fraction", 0.05 + 0.5 * busy)
    return PodLoad(
        deployment, model_server, True, gpus, round(utilization, 2), gpu_memory,
        running=running, waiting=waiting, kv_cache_usage=round(kv_cache, 4),
        containers=_containers(ctx, pod, cpu_fraction, 0.6 + 0.1 * busy),
    )


def _model_load_seconds(sim: Any, pod: Obj) -> float:
    """The kubelet stand-in's model-load time for this pod: pod behaviour, annotation, else the stage default."""
    behavior_for = getattr(sim, "behavior_for", None)
    if behavior_for is not None:
        configured = behavior_for(pod).get("model_load_seconds")
        if configured is not None:
            return float(configured)
    return _quantity_or((pod["metadata"].get("annotations") or {}).get(MODEL_LOAD_ANNOTATION),
                        DEFAULT_MODEL_LOAD_SECONDS)


def _containers(ctx: LoadContext, pod: Obj, cpu_fraction: float, memory_fraction: float) -> tuple[ContainerUsage, ...]:
    """Per-container usage: kwok usage annotations if set, else a fraction of requests, with ±5 % noise."""
    containers = (pod.get("spec") or {}).get("containers") or []
    annotations = pod["metadata"].get("annotations") or {}
    cpu_override = _quantity_or(annotations.get(USAGE_CPU_ANNOTATION), -1.0)
    memory_override = _quantity_or(annotations.get(USAGE_MEMORY_ANNOTATION), -1.0)
    out = []
    for index, container in enumerate(containers):
        requests = container_requests(container)
        if cpu_override >= 0:
            cpu = cpu_override * 1e9 / len(containers)
        else:
            cpu_request = _quantity_or(requests.get("cpu"), 0.0) * 1e9
            noisy = cpu_fraction * (1 + ctx.noise(pod, NOISE_CONTAINERS + 2 * index, 0.05))
            cpu = cpu_request * noisy if cpu_request else FALLBACK_CPU_NANOCORES * (1 + noisy)
        if memory_override >= 0:
            memory = memory_override / len(containers)
        else:
            memory_request = _quantity_or(requests.get("memory"), 0.0)
            noisy = memory_fraction * (1 + ctx.noise(pod, NOISE_CONTAINERS + 2 * index + 1, 0.02))
            memory = memory_request * noisy if memory_request else FALLBACK_MEMORY_BYTES * (0.5 + noisy)
        out.append(ContainerUsage(container.get("name", f"container-{index}"), int(cpu), int(memory)))
    return tuple(out)


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))
