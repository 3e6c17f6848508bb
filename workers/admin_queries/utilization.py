"""GPU utilization per GPU, node, deployment and cluster: what is allocated against what is used."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import GpuNode
from workers.admin_queries.dcgm import dcgm_gpus
from workers.admin_queries.live_pods import deployments_by_id, gpus_held, live_pods_by_node
from workers.domain import NotFoundError

# An allocated GPU below this utilization is counted as idle: held by a pod, doing (almost) nothing.
IDLE_GPU_UTILIZATION_PERCENT = 5.0


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def gpu_utilization(
    session: Session,
    *,
    prometheus: Any | None,
    prometheus_error: str | None = None,
    metrics_reader: Any | None = None,
    gpu_type: str | None = None,
    node_name: str | None = None,
) -> dict[str, Any]:
    """Utilization per GPU / node / deployment / cluster, with allocated-vs-used and CPU/memory.

    The allocation view (from Postgres) is always returned; the DCGM part needs ``prometheus`` (a
    :class:`workers.prometheus_client.PrometheusClient`) and the CPU/memory part ``metrics_reader`` (a
    callable returning :func:`resource_metrics`). When either fails, the response says so
    (``metrics_available: false`` with the reason) instead of failing: an admin looking at a broken
    cluster needs this page most.
    """
    from workers.prometheus_client import PrometheusUnavailableError

    node_query = select(GpuNode).where(GpuNode.present.is_(True)).order_by(GpuNode.name)
    if gpu_type:
        node_query = node_query.where(GpuNode.gpu_product == gpu_type)
    if node_name:
        node_query = node_query.where(GpuNode.name == node_name)
    nodes = list(session.scalars(node_query))
    if node_name and not any(node.name == node_name for node in nodes):
        # One node asked for: a name no present node has is the node views' 404, not an empty page. (A node of
        # another GPU type than the one filtered on is a real, empty answer.)
        known = session.scalar(select(GpuNode.name).where(GpuNode.name == node_name, GpuNode.present.is_(True)))
        if known is None:
            raise NotFoundError("node_not_found", f"no GPU node named {node_name!r}", {"node": node_name})
    node_names = [node.name for node in nodes]
    pods_by_node = live_pods_by_node(session, node_names)
    pods = [pod for node_pods in pods_by_node.values() for pod in node_pods]
    deployments = deployments_by_id(session, {pod.deployment_id for pod in pods if pod.deployment_id})
    deployment_of_pod = {(pod.namespace, pod.pod_name): pod.deployment_id for pod in pods}

    gpu_samples: list[dict[str, Any]] = []
    reasons: list[str] = []
    gpu_metrics_available = False
    if prometheus is None:
        reasons.append(prometheus_error or "PROMETHEUS_URL is not configured")
    else:
        try:
            gpu_samples = [gpu for gpu in dcgm_gpus(prometheus) if gpu["node"] in set(node_names)]
            gpu_metrics_available = True
        except PrometheusUnavailableError as error:
            reasons.append(f"GPU metrics unavailable: {error.reason}")
    usage: dict[str, Any] = {"nodes": {}, "pods": {}}
    resource_metrics_available = False
    if metrics_reader is not None:
        try:
            usage = metrics_reader()
            resource_metrics_available = True
        except Exception as error:  # metrics.k8s.io down (503), unreachable, or refused
            reasons.append(f"metrics.k8s.io unavailable: {type(error).__name__}: {_short(error)}")
    else:
        reasons.append("metrics.k8s.io not queried: no cluster client")

    allocated = {node.name: gpus_held(pods_by_node.get(node.name, [])) for node in nodes}
    free = {node.name: max(node.gpu_allocatable - allocated[node.name], 0) for node in nodes}
    node_views = []
    for node in nodes:
        samples = [gpu for gpu in gpu_samples if gpu["node"] == node.name]
        for gpu in samples:
            gpu["memory_total_mb"] = node.gpu_memory_mb
            deployment_id = deployment_of_pod.get((gpu["namespace"], gpu["pod"])) if gpu["pod"] else None
            gpu["deployment_id"] = str(deployment_id) if deployment_id else None
            gpu["idle"] = bool(
                gpu["pod"] and (gpu["utilization_percent"] or 0.0) < IDLE_GPU_UTILIZATION_PERCENT
            )
        allocated_samples = [gpu for gpu in samples if gpu["pod"]]
        node_views.append(
            {
                "name": node.name,
                "gpu_product": node.gpu_product,
                "gpus": {"capacity": node.gpu_capacity, "allocatable": node.gpu_allocatable,
                         "allocated": allocated[node.name], "free": free[node.name]},
                "utilization_percent": _mean([g["utilization_percent"] for g in samples
                                              if g["utilization_percent"] is not None]),
                "memory_used_mb": sum(g["memory_used_mb"] or 0 for g in samples) if samples else None,
                "memory_total_mb": (node.gpu_memory_mb or 0) * node.gpu_capacity if node.gpu_memory_mb else None,
                "allocated_idle_gpus": (
                    sum(1 for g in allocated_samples if g["idle"]) if gpu_metrics_available else None
                ),
                "cpu_used_millicores": usage["nodes"].get(node.name, {}).get("cpu_millicores"),
                "cpu_allocatable_millicores": node.cpu_allocatable_millicores,
                "memory_used_bytes": usage["nodes"].get(node.name, {}).get("memory_bytes"),
                "memory_allocatable_bytes": node.memory_allocatable_bytes,
                "last_observed_at": node.last_seen_at,
            }
        )

    deployment_views = []
    for deployment_id, deployment in sorted(deployments.items(), key=lambda item: item[1].name):
        own_pods = [pod for pod in pods if pod.deployment_id == deployment_id]
        own_gpus = [gpu for gpu in gpu_samples if gpu.get("deployment_id") == str(deployment_id)]
        pod_usage = [usage["pods"].get((pod.namespace, pod.pod_name)) for pod in own_pods]
        deployment_views.append(
            {
                "deployment_id": str(deployment_id),
                "name": deployment.name,
                "tenant_id": deployment.tenant_id,
                "model_id": deployment.model_id,
                "pods": len(own_pods),
                "gpus_allocated": sum(pod.gpus for pod in own_pods),
                "utilization_percent": _mean([g["utilization_percent"] for g in own_gpus
                                              if g["utilization_percent"] is not None]),
                "memory_used_mb": sum(g["memory_used_mb"] or 0 for g in own_gpus) if own_gpus else None,
                "allocated_idle_gpus": sum(1 for g in own_gpus if g["idle"]) if gpu_metrics_available else None,
                "cpu_used_millicores": sum(u["cpu_millicores"] for u in pod_usage if u) if resource_metrics_available
                else None,
                "memory_used_bytes": sum(u["memory_bytes"] for u in pod_usage if u) if resource_metrics_available
                else None,
            }
        )

    allocated_total = sum(allocated.values())
    allocated_busy = sum(1 for gpu in gpu_samples if gpu["pod"] and not gpu["idle"])
    cluster = {
        "gpus": {
            "capacity": sum(node.gpu_capacity for node in nodes),
            "allocatable": sum(node.gpu_allocatable for node in nodes),
            "allocated": allocated_total,
            "free": sum(free.values()),
        },
        "utilization_percent": _mean([g["utilization_percent"] for g in gpu_samples
                                      if g["utilization_percent"] is not None]),
        "allocated_utilization_percent": _mean([g["utilization_percent"] or 0.0 for g in gpu_samples if g["pod"]]),
        "allocated_busy_gpus": allocated_busy if gpu_metrics_available else None,
        "allocated_idle_gpus": sum(1 for g in gpu_samples if g["idle"]) if gpu_metrics_available else None,
        "memory_used_mb": sum(g["memory_used_mb"] or 0 for g in gpu_samples) if gpu_metrics_available else None,
    }
    return {
        "metrics_available": gpu_metrics_available and resource_metrics_available,
        "gpu_metrics_available": gpu_metrics_available,
        "resource_metrics_available": resource_metrics_available,
        "reason": "; ".join(reasons) or None,
        "idle_threshold_percent": IDLE_GPU_UTILIZATION_PERCENT,
        "cluster": cluster,
        "nodes": node_views,
        "deployments": deployment_views,
        "gpus": gpu_samples,
    }


def _short(error: BaseException) -> str:
    text = str(getattr(error, "reason", None) or error)
    return text.splitlines()[0][:300] if text else ""
