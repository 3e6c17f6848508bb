"""Reads for the API, from Postgres only: the API stays up when the cluster is slow or down."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from models import Deployment, DeploymentStatus, GpuReservation, Job, PodAllocation, Tenant
from workers import admission
from workers.domain import InvalidRequestError, NotFoundError

MAX_PAGE_SIZE = 200


def _uuid_or_404(value: uuid.UUID | str, code: str, what: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFoundError(code, f"{what} {value} not found") from None


def get_deployment(session: Session, tenant_id: str | None, deployment_id: uuid.UUID | str) -> Deployment:
    """The deployment, or 404 if it does not exist or belongs to another tenant (``tenant_id=None``: any)."""
    deployment = session.get(Deployment, _uuid_or_404(deployment_id, "deployment_not_found", "deployment"))
    if deployment is None or (tenant_id is not None and deployment.tenant_id != tenant_id):
        raise NotFoundError("deployment_not_found", f"deployment {deployment_id} not found")
    return deployment


def get_job(session: Session, tenant_id: str | None, job_id: uuid.UUID | str) -> Job:
    job = session.get(Job, _uuid_or_404(job_id, "job_not_found", "job"))
    if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
        raise NotFoundError("job_not_found", f"job {job_id} not found")
    return job


def _encode_cursor(created_at: datetime, deployment_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(deployment_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, deployment_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(created_at), uuid.UUID(deployment_id)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidRequestError(
            "invalid_cursor", "cursor is not one this API returned", {"field": "cursor"}
        ) from None


def list_deployments(
    session: Session,
    tenant_id: str | None,
    *,
    status: str | None = None,
    model_id: str | None = None,
    gpu_type: str | None = None,
    name: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    include_deleted: bool = False,
) -> tuple[list[Deployment], str | None]:
    """Newest first, keyset-paginated on (created_at, id) so pages stay stable while rows are added."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    query = select(Deployment)
    if tenant_id is not None:
        query = query.where(Deployment.tenant_id == tenant_id)
    if status is not None:
        try:
            query = query.where(Deployment.status == DeploymentStatus(status))
        except ValueError:
            raise InvalidRequestError(
                "invalid_status", f"unknown status {status!r}", {"field": "status", "allowed": list(DeploymentStatus)}
            ) from None
    elif not include_deleted:
        query = query.where(Deployment.status != DeploymentStatus.DELETED)
    if model_id is not None:
        query = query.where(Deployment.model_id == model_id)
    if gpu_type is not None:
        query = query.where(Deployment.gpu_type == gpu_type)
    if name is not None:
        query = query.where(Deployment.name == name)
    if cursor:
        created_at, last_id = _decode_cursor(cursor)
        query = query.where(
            or_(Deployment.created_at < created_at, and_(Deployment.created_at == created_at, Deployment.id < last_id))
        )
    rows = list(
        session.execute(query.order_by(Deployment.created_at.desc(), Deployment.id.desc()).limit(limit + 1)).scalars()
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _encode_cursor(rows[-1].created_at, rows[-1].id)
    return rows, next_cursor


def deployment_status(session: Session, tenant_id: str | None, deployment_id: uuid.UUID | str) -> dict[str, Any]:
    """Status view: desired vs ready, endpoint, pods, last observation, the job in flight."""
    # One query for the deployment and its job in flight, one for its pods: this endpoint is polled.
    row = session.execute(
        select(Deployment, Job)
        .outerjoin(Job, Job.id == Deployment.active_job_id)
        .where(Deployment.id == _uuid_or_404(deployment_id, "deployment_not_found", "deployment"))
    ).first()
    if row is None or (tenant_id is not None and row[0].tenant_id != tenant_id):
        raise NotFoundError("deployment_not_found", f"deployment {deployment_id} not found")
    deployment, active_job = row
    pods = session.execute(
        select(PodAllocation)
        .where(PodAllocation.deployment_id == deployment.id, PodAllocation.terminated_at.is_(None))
        .order_by(PodAllocation.pod_name)
    ).scalars()
    return {
        "deployment_id": str(deployment.id),
        "name": deployment.name,
        "status": str(deployment.status),
        "reason": deployment.status_reason,
        "message": deployment.status_message,
        "replicas": {"desired": deployment.replicas_desired, "ready": deployment.replicas_ready},
        "endpoint": deployment.endpoint,
        "pods": [
            {
                "name": pod.pod_name,
                "node": pod.node_name,
                "phase": pod.phase,
                "ready": pod.ready,
                "restarts": pod.restarts,
                "reason": pod.reason,
            }
            for pod in pods
        ],
        "last_observed_at": deployment.last_observed_at,
        "active_job": (
            {"id": str(active_job.id), "type": str(active_job.type), "state": str(active_job.state)}
            if active_job is not None
            else None
        ),
    }


def available_resources(session: Session, tenant_id: str) -> dict[str, Any]:
    """Free GPUs per type and node, largest block per type, reservations in flight, the tenant's quota."""
    capacity = admission.current_capacity(session)
    quota, used = admission.tenant_quota(session, tenant_id)
    in_flight = session.execute(
        select(GpuReservation.gpu_type, func.count(), func.sum(GpuReservation.gpus))
        .join(Job, Job.id == GpuReservation.job_id)
        .where(GpuReservation.released_at.is_(None), Job.state.in_(("PENDING", "RUNNING", "RETRYING")))
        .group_by(GpuReservation.gpu_type)
    ).all()
    return {
        "gpu_types": {
            gpu_type: {
                "free_total": capacity.free_total(gpu_type),
                "largest_block": capacity.largest_block(gpu_type),
                "max_gpus_per_node": capacity.max_node_gpus_by_type.get(gpu_type, 0),
                "nodes": dict(sorted(nodes.items())),
            }
            for gpu_type, nodes in sorted(capacity.free_by_type.items())
        },
        "reservations_in_flight": {
            gpu_type: {"reservations": int(count), "gpus": int(gpus or 0)} for gpu_type, count, gpus in in_flight
        },
        "quota": {"limit": quota, "used": used, "remaining": max(quota - used, 0)},
    }


def ensure_tenant(session: Session, tenant_id: str, name: str | None = None) -> Tenant:
    """The tenant row, created on first sight (``INSERT ... ON CONFLICT DO NOTHING`` so racing requests agree)."""
    from sqlalchemy.dialects.postgresql import insert

    tenant = session.get(Tenant, tenant_id)
    if tenant is not None:
        return tenant
    session.execute(insert(Tenant).values(id=tenant_id, name=name or tenant_id).on_conflict_do_nothing())
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:  # only if the INSERT was refused by a constraint, which raises first
        raise NotFoundError("tenant_not_found", f"tenant {tenant_id} not found")
    return tenant
