"""The GPU node list and detail, with the deployments on each node and any drain under way."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import ACTIVE_JOB_STATES, Deployment, GpuNode, Job, JobType, PodAllocation, TargetKind
from workers.admin_queries.cursors import MAX_PAGE_SIZE, decode_cursor, encode_cursor
from workers.admin_queries.live_pods import deployments_by_id, gpus_held, live_pods_by_node


def _is_drain_job_active(session: Session, node_name: str) -> uuid.UUID | None:
    return session.scalar(
        select(Job.id).where(
            Job.target_kind == TargetKind.NODE,
            Job.target_id == node_name,
            Job.type == JobType.NODE_DRAIN,
            Job.state.in_(ACTIVE_JOB_STATES),
        )
    )


def node_view(node: GpuNode, pods: list[PodAllocation], deployments: dict[uuid.UUID, Deployment]) -> dict[str, Any]:
    """One node as the admin API shows it."""
    by_deployment: dict[uuid.UUID, dict[str, Any]] = {}
    for pod in pods:
        if pod.deployment_id is None or pod.deployment_id not in deployments:
            continue
        deployment = deployments[pod.deployment_id]
        entry = by_deployment.setdefault(
            deployment.id,
            {
                "deployment_id": str(deployment.id),
                "name": deployment.name,
                "tenant_id": deployment.tenant_id,
                "model_id": deployment.model_id,
                "pods": 0,
                "gpus": 0,
            },
        )
        entry["pods"] += 1
        entry["gpus"] += pod.gpus
    allocated = gpus_held(pods)
    return {
        "name": node.name,
        "internal_ip": node.internal_ip,
        "gpu": {
            "product": node.gpu_product,
            "memory_mb": node.gpu_memory_mb,
            "capacity": node.gpu_capacity,
            "allocatable": node.gpu_allocatable,
            "allocated": allocated,
            "free": max(node.gpu_allocatable - allocated, 0),
        },
        "cpu": {"capacity_millicores": node.cpu_capacity_millicores,
                "allocatable_millicores": node.cpu_allocatable_millicores},
        "memory": {"capacity_bytes": node.memory_capacity_bytes, "allocatable_bytes": node.memory_allocatable_bytes},
        "ready_status": node.ready_status,
        "schedulable": not node.unschedulable,
        # Who cordoned it and why are recorded by our cordon jobs; a node uncordoned outside the API (kubectl)
        # keeps them in its row, and they describe no current cordon.
        "cordon": {
            "cordoned": node.unschedulable,
            "by": node.cordoned_by if node.unschedulable else None,
            "reason": node.cordon_reason if node.unschedulable else None,
        },
        "taints": list(node.taints or []),
        "labels": dict(node.labels or {}),
        "conditions": list(node.conditions or []),
        "deployments": sorted(by_deployment.values(), key=lambda item: item["name"]),
        "pods": [
            {
                "namespace": pod.namespace,
                "name": pod.pod_name,
                "deployment_id": str(pod.deployment_id) if pod.deployment_id else None,
                "tenant_id": pod.tenant_id,
                "gpus": pod.gpus,
                "phase": pod.phase,
                "ready": pod.ready,
                "restarts": pod.restarts,
                "reason": pod.reason,
            }
            for pod in sorted(pods, key=lambda item: (item.namespace, item.pod_name))
        ],
        "present": node.present,
        "first_seen_at": node.first_seen_at,
        "last_observed_at": node.last_seen_at,
    }


def list_nodes(
    session: Session,
    *,
    gpu_type: str | None = None,
    status: str | None = None,
    schedulable: bool | None = None,
    include_absent: bool = False,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """GPU nodes ordered by name, filtered, one keyset page at a time."""
    query = select(GpuNode).order_by(GpuNode.name)
    if not include_absent:
        query = query.where(GpuNode.present.is_(True))
    if gpu_type:
        query = query.where(GpuNode.gpu_product == gpu_type)
    if status:
        query = query.where(GpuNode.ready_status == status)
    if schedulable is not None:
        query = query.where(GpuNode.unschedulable.is_(not schedulable))
    if cursor:
        (after_name,) = decode_cursor(cursor, 1)
        query = query.where(GpuNode.name > str(after_name))
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    nodes = list(session.scalars(query.limit(limit + 1)))
    next_cursor = encode_cursor([nodes[limit - 1].name]) if len(nodes) > limit else None
    nodes = nodes[:limit]
    return _node_views(session, nodes), next_cursor


def _node_views(session: Session, nodes: list[GpuNode]) -> list[dict[str, Any]]:
    pods_by_node = live_pods_by_node(session, [node.name for node in nodes])
    deployment_ids = {pod.deployment_id for pods in pods_by_node.values() for pod in pods if pod.deployment_id}
    deployments = deployments_by_id(session, deployment_ids)
    views = []
    for node in nodes:
        view = node_view(node, pods_by_node.get(node.name, []), deployments)
        drain_job = _is_drain_job_active(session, node.name)
        view["active_drain_job_id"] = str(drain_job) if drain_job else None
        views.append(view)
    return views


def node_detail(session: Session, node_name: str) -> dict[str, Any] | None:
    """One node's view (present or not), or None."""
    node = session.get(GpuNode, node_name)
    return _node_views(session, [node])[0] if node is not None else None
