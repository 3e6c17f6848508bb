"""Reads for the API, from Postgres only: the API stays up when the cluster is slow or down."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Any, cast

import psycopg
from sqlalchemy import Engine, Select, and_, bindparam, func, literal_column, or_, select, text
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.pool import PoolProxiedConnection

from models import Deployment, DeploymentStatus, GpuReservation, Job, PodAllocation, Tenant
from models.driver_sql import DriverStatement
from workers import admission
from workers.domain import InvalidRequestError, NotFoundError
from workers.health_monitor import last_observed_at_column

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
    deployment_uuid = _uuid_or_404(deployment_id, "deployment_not_found", "deployment")
    row = session.execute(select(Deployment, last_observed_at_column()).where(Deployment.id == deployment_uuid)).first()
    if row is None or (tenant_id is not None and row[0].tenant_id != tenant_id):
        raise NotFoundError("deployment_not_found", f"deployment {deployment_id} not found")
    return _as_observed(*row)


def _as_observed(deployment: Deployment, last_observed_at: datetime | None) -> Deployment:
    """The deployment with ``last_observed_at`` as readers see it (:func:`last_observed_at_column`), set as the
    loaded value: a view for the response, not a change to flush."""
    set_committed_value(deployment, "last_observed_at", last_observed_at)
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
    query = select(Deployment, last_observed_at_column())
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
    rows = [
        _as_observed(deployment, last_observed_at)
        for deployment, last_observed_at in session.execute(
            query.order_by(Deployment.created_at.desc(), Deployment.id.desc()).limit(limit + 1)
        )
    ]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _encode_cursor(rows[-1].created_at, rows[-1].id)
    return rows, next_cursor


def _status_query() -> Select:
    """The status statement, built once: constructing a 13-column select with a subquery costs more Python
    time than running it, and this endpoint is polled.

    Its columns are read by position in :func:`_status_view`; a column added here is added there."""
    # The keys are SQL literals, not bound parameters: constants sent with every execution cost time for nothing.
    pod_json = func.json_build_object(
        literal_column("'name'"), PodAllocation.pod_name,
        literal_column("'node'"), PodAllocation.node_name,
        literal_column("'phase'"), PodAllocation.phase,
        literal_column("'ready'"), PodAllocation.ready,
        literal_column("'restarts'"), PodAllocation.restarts,
        literal_column("'reason'"), PodAllocation.reason,
    )  # fmt: skip
    pods = (
        select(func.coalesce(func.json_agg(aggregate_order_by(pod_json, PodAllocation.pod_name)), text("'[]'::json")))
        .where(PodAllocation.deployment_id == Deployment.id, PodAllocation.terminated_at.is_(None))
        .correlate(Deployment)
        .scalar_subquery()
    )
    return (
        select(
            Deployment.tenant_id,
            Deployment.name,
            Deployment.status,
            Deployment.status_reason,
            Deployment.status_message,
            Deployment.replicas_desired,
            Deployment.replicas_ready,
            Deployment.endpoint,
            last_observed_at_column(),
            Job.id.label("job_id"),
            Job.type.label("job_type"),
            Job.state.label("job_state"),
            pods.label("pods"),
        )
        .outerjoin(Job, Job.id == Deployment.active_job_id)
        .where(Deployment.id == bindparam("deployment_id"))
    )


# Clients poll the status: it runs on the psycopg connection itself (see models.driver_sql); every column is a
# plain value psycopg converts (text, int, uuid, timestamptz, json).
_STATUS = DriverStatement(_status_query)


def _status_view(
    connection: psycopg.Connection[Any], tenant_id: str | None, deployment_id: uuid.UUID | str
) -> dict[str, Any]:
    deployment_uuid = _uuid_or_404(deployment_id, "deployment_not_found", "deployment")
    row = _STATUS.execute(connection, {"deployment_id": deployment_uuid}).fetchone()
    if row is None or (tenant_id is not None and row[0] != tenant_id):  # row[0]: the deployment's tenant
        raise NotFoundError("deployment_not_found", f"deployment {deployment_id} not found")
    (
        _tenant_id,
        name,
        status,
        reason,
        message,
        desired,
        ready,
        endpoint,
        last_observed_at,
        job_id,
        job_type,
        job_state,
        pods,
    ) = row
    return {
        "deployment_id": str(deployment_uuid),
        "name": name,
        "status": status,
        "reason": reason,
        "message": message,
        "replicas": {"desired": desired, "ready": ready},
        "endpoint": endpoint,
        "pods": pods,
        "last_observed_at": last_observed_at,
        "active_job": {"id": str(job_id), "type": job_type, "state": job_state} if job_id is not None else None,
    }


def _psycopg_connection(pooled: PoolProxiedConnection) -> psycopg.Connection[Any]:
    # Typed optional because an invalidated proxy has none; a connection in use always has one.
    return cast(psycopg.Connection[Any], pooled.driver_connection)


def deployment_status(session: Session, tenant_id: str | None, deployment_id: uuid.UUID | str) -> dict[str, Any]:
    """Status view: desired vs ready, endpoint, pods, last observation, the job in flight.

    Clients poll this, so it is ONE round trip: the deployment's columns, its job in flight (outer join) and
    its live pods aggregated to JSON by a correlated subquery, read as plain rows (no ORM objects built).
    Runs on the session's connection, so it sees the session's uncommitted work.
    """
    return _status_view(_psycopg_connection(session.connection().connection), tenant_id, deployment_id)


def read_deployment_status(engine: Engine, tenant_id: str | None, deployment_id: uuid.UUID | str) -> dict[str, Any]:
    """:func:`deployment_status` for a caller whose whole database work is this one read (the API).

    The statement runs on a pooled connection in autocommit, without a ``Session``: no ``BEGIN``/``ROLLBACK``
    round trips (one statement reads one snapshot anyway), and none of the session's per-use Python cost,
    which is several times the Python cost of the read itself."""
    pooled = engine.raw_connection()
    connection = _psycopg_connection(pooled)
    try:
        connection.autocommit = True
        return _status_view(connection, tenant_id, deployment_id)
    finally:
        if not connection.closed:
            try:
                # Back to the pool as every other user expects it: statements grouped in transactions.
                connection.autocommit = False
            except psycopg.Error:
                connection.close()  # still busy with an interrupted statement: not fit for the pool
        if connection.closed:
            # Lost mid-statement (server restart, backend terminated) or closed above: discard it.
            pooled.invalidate()
        pooled.close()


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
