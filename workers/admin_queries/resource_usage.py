"""CPU and memory usage per node and per pod from metrics.k8s.io (metrics-server)."""

from __future__ import annotations

from typing import Any


def _cpu_millicores(quantity: str) -> float:
    quantity = str(quantity)
    if quantity.endswith("n"):
        return float(quantity[:-1]) / 1e6
    if quantity.endswith("u"):
        return float(quantity[:-1]) / 1e3
    if quantity.endswith("m"):
        return float(quantity[:-1])
    return float(quantity) * 1000


_MEMORY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def _memory_bytes(quantity: str) -> int:
    quantity = str(quantity)
    for suffix, factor in _MEMORY_SUFFIXES.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(float(quantity))


def resource_metrics(custom_objects_api: Any, *, timeout: float) -> dict[str, Any]:
    """CPU/memory usage per node and per pod from metrics.k8s.io (raises on any failure)."""
    nodes = custom_objects_api.list_cluster_custom_object(
        "metrics.k8s.io", "v1beta1", "nodes", _request_timeout=timeout
    )
    pods = custom_objects_api.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "pods", _request_timeout=timeout)
    node_usage = {
        item["metadata"]["name"]: {
            "cpu_millicores": round(_cpu_millicores(item["usage"].get("cpu", "0"))),
            "memory_bytes": _memory_bytes(item["usage"].get("memory", "0")),
        }
        for item in nodes.get("items") or []
    }
    pod_usage = {}
    for item in pods.get("items") or []:
        containers = item.get("containers") or []
        pod_usage[(item["metadata"].get("namespace", ""), item["metadata"]["name"])] = {
            "cpu_millicores": round(sum(_cpu_millicores(c["usage"].get("cpu", "0")) for c in containers)),
            "memory_bytes": sum(_memory_bytes(c["usage"].get("memory", "0")) for c in containers),
        }
    return {"nodes": node_usage, "pods": pod_usage}
