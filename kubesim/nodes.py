"""The node catalogue: parse a pool SPEC and build Node objects that look like real GPU nodes.

SPEC is `COUNTxPRODUCT:GPUS[,…]`, e.g. `4xnvidia-l40s:8,2xnvidia-h100-80gb:8`. Nodes are named
`<product without "nvidia-">-<i>`, carry the labels GPU feature discovery sets, the
`nvidia.com/gpu=present:NoSchedule` taint GPU pools usually carry, and CPU/memory sized like the cloud
instances those GPUs come in (8 GPUs → 192 cores and 2 TiB), with allocatable a little below capacity
as kubelet reservations make it.
"""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass
from typing import Any

from kubesim.clock import rfc3339

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
KUBELET_VERSION = "v1.34.1"
CONTAINER_RUNTIME = "containerd://1.7.27"
OS_IMAGE = "Ubuntu 22.04.5 LTS"
KERNEL_VERSION = "6.8.0-1024-nvidia"
MAX_NODES_PER_SPEC = 5000

# MiB per GPU, as `nvidia.com/gpu.memory` reports it.
GPU_MEMORY_MIB = {
    "nvidia-l40s": 46068,
    "nvidia-h100-80gb": 81559,
    "nvidia-a100-80gb": 81920,
    "nvidia-a100-40gb": 40960,
    "nvidia-a10g": 23028,
    "nvidia-t4": 15360,
}
UNKNOWN_GPU_MEMORY_MIB = 24576

_POOL = re.compile(r"^(\d+)x([a-z0-9]([a-z0-9.-]*[a-z0-9])?):(\d+)\Z")
GIB_IN_KIB = 1024 * 1024


@dataclass(frozen=True)
class Pool:
    count: int
    product: str
    gpus_per_node: int

    @property
    def short_name(self) -> str:
        return self.product.removeprefix("nvidia-")


def parse_spec(spec: str) -> list[Pool]:
    """Parse `4xnvidia-l40s:8,2xnvidia-h100-80gb:8`; ValueError (a 400 for the API) on anything else."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("node spec must be a non-empty string like '4xnvidia-l40s:8,2xnvidia-h100-80gb:8'")
    pools = []
    for part in spec.split(","):
        match = _POOL.match(part.strip().lower())
        if not match:
            raise ValueError(
                f"invalid node pool {part.strip()!r}: expected COUNTxPRODUCT:GPUS, e.g. '4xnvidia-l40s:8'"
            )
        count, product, gpus = int(match.group(1)), match.group(2), int(match.group(4))
        if count < 1:
            raise ValueError(f"invalid node pool {part.strip()!r}: count must be at least 1")
        if gpus > 16:
            raise ValueError(f"invalid node pool {part.strip()!r}: at most 16 GPUs per node")
        pools.append(Pool(count, product, gpus))
    if sum(p.count for p in pools) > MAX_NODES_PER_SPEC:
        raise ValueError(f"at most {MAX_NODES_PER_SPEC} nodes per spec")
    return pools


def node_index(node: dict[str, Any]) -> int:
    """The cluster-wide index a node was built with (its pod CIDR is 10.244.<index>.0/24)."""
    cidr = (node.get("spec") or {}).get("podCIDR", "")
    try:
        third, fourth = cidr.split(".")[1:3]
        return (int(third) - 244) * 256 + int(fourth)
    except ValueError:
        return -1


def _index_cidr(index: int) -> tuple[str, str]:
    """Pod CIDR and InternalIP for the index-th node (10.244.x.0/24 pods, 10.0.x.y hosts)."""
    pod_cidr = f"10.{244 + index // 256}.{index % 256}.0/24"
    internal_ip = f"10.0.{index // 250}.{index % 250 + 4}"
    return pod_cidr, internal_ip


def build_nodes(
    pools: list[Pool], existing_names: set[str], used_indexes: set[int], now: float, rng: random.Random
) -> list[dict[str, Any]]:
    built = []
    taken = set(existing_names)
    indexes = set(used_indexes)
    for pool in pools:
        ordinal = 0
        for _ in range(pool.count):
            while f"{pool.short_name}-{ordinal}" in taken:
                ordinal += 1
            name = f"{pool.short_name}-{ordinal}"
            taken.add(name)
            index = 0
            while index in indexes:
                index += 1
            indexes.add(index)
            built.append(build_node(name, pool, index, now, rng))
    return built


def _sizing(gpus: int) -> tuple[int, int]:
    """(cores, memory GiB): cloud GPU instances give ~24 cores and ~256 GiB per GPU."""
    if gpus == 0:
        return 16, 64
    return 24 * gpus, 256 * gpus


def build_node(name: str, pool: Pool, index: int, now: float, rng: random.Random) -> dict[str, Any]:
    cores, memory_gib = _sizing(pool.gpus_per_node)
    memory_kib = memory_gib * GIB_IN_KIB - 2_400_000  # firmware and kernel reservations
    # kubelet's system-reserved/kube-reserved and the hard eviction threshold come off allocatable.
    allocatable_memory_kib = memory_kib - (4 + memory_gib // 64) * GIB_IN_KIB - 100 * 1024
    storage_kib = 1_844_741_528
    capacity = {
        "cpu": str(cores),
        "ephemeral-storage": f"{storage_kib}Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": f"{memory_kib}Ki",
        "pods": "110",
    }
    allocatable = dict(capacity, **{
        "cpu": f"{cores * 1000 - 500 - cores * 5}m",
        "ephemeral-storage": str(int(storage_kib * 1024 * 0.9)),
        "memory": f"{allocatable_memory_kib}Ki",
    })
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
    }
    taints = []
    if pool.gpus_per_node > 0:
        capacity[GPU_RESOURCE] = allocatable[GPU_RESOURCE] = str(pool.gpus_per_node)
        labels.update({
            "node-role.kubernetes.io/gpu-worker": "",
            "nvidia.com/gpu.product": pool.product,
            "nvidia.com/gpu.count": str(pool.gpus_per_node),
            "nvidia.com/gpu.memory": str(GPU_MEMORY_MIB.get(pool.product, UNKNOWN_GPU_MEMORY_MIB)),
            "nvidia.com/gpu.present": "true",
        })
        taints.append(dict(GPU_TAINT))
    else:
        labels["node-role.kubernetes.io/worker"] = ""
    pod_cidr, internal_ip = _index_cidr(index)
    stamp = rfc3339(now)
    spec: dict[str, Any] = {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "providerID": f"kubesim://{name}"}
    if taints:
        spec["taints"] = taints
    return {
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": healthy_conditions(stamp),
            "addresses": [{"type": "InternalIP", "address": internal_ip}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": f"{rng.getrandbits(128):032x}",
                "systemUUID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "bootID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "kernelVersion": KERNEL_VERSION,
                "osImage": OS_IMAGE,
                "containerRuntimeVersion": CONTAINER_RUNTIME,
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": [],
            "phase": "Running",
        },
    }


def healthy_conditions(stamp: str) -> list[dict[str, str]]:
    """The four conditions a healthy kubelet reports, in kubelet's order."""
    rows = (
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    )
    return [
        {"type": t, "status": s, "lastHeartbeatTime": stamp, "lastTransitionTime": stamp, "reason": r, "message": m}
        for t, s, r, m in rows
    ]
