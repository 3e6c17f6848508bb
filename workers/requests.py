"""The transactional half of every POST: business rules, admission, rows. Never commits.

Each ``request_*`` takes the caller's open session, writes the Job (PENDING, with a pre-generated Celery
task id) and the desired state, and returns a :class:`Submitted`. The caller commits, then calls
``workers.dispatch.enqueue(job)`` (commit-then-enqueue). Any exception leaves nothing behind once the
caller rolls back: "never a partial change".

Idempotency: a key is scoped to the tenant (or, for admin calls without a tenant, the requester). The
same key with the same fingerprint returns the first job with ``replayed=True``; a different
fingerprint is a 409. Two racing requests with one key are serialised by an advisory lock on the key,
so the second sees the first's committed job instead of tripping the unique index.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    Column,
    ColumnDefault,
    Select,
    Table,
    bindparam,
    func,
    insert,
    inspect,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, make_transient_to_detached

from models import (
    TERMINAL_JOB_STATES,
    Base,
    Deployment,
    DeploymentStatus,
    GpuReservation,
    Job,
    JobType,
    ScalingEvent,
    ScalingEventStatus,
    ScalingTrigger,
    TargetKind,
)
from models.driver_sql import DriverStatement
from settings import get_settings
from workers import admission, idempotency_keys
from workers.domain import ConflictError, InvalidRequestError, NotFoundError
from workers.manifests import endpoint_url
from workers.vllm_args import validate_vllm_args

K8S_NAME_MAX = 63
# Replicas of one deployment, whoever asks (create, manual scale, autoscaling bounds).
MAX_REPLICAS = 64
_SLUG_INVALID = re.compile(r"[^a-z0-9-]+")
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?\Z")
# A restart may only start from a settled state; anything else has a rollout or an operation in flight.
RESTARTABLE_STATUSES = (DeploymentStatus.RUNNING, DeploymentStatus.DEGRADED)
# Settled states a scale moves to SCALING until the status poll sees it converge.
_SETTLED_STATUSES = (DeploymentStatus.RUNNING, DeploymentStatus.STOPPED, DeploymentStatus.DEGRADED)
SCALABLE_STATUSES = (
    DeploymentStatus.RUNNING,
    DeploymentStatus.STOPPED,
    DeploymentStatus.DEGRADED,
    DeploymentStatus.CREATING,
    DeploymentStatus.SCALING,
    DeploymentStatus.FAILED,
)


@dataclass
class CreateDeploymentSpec:
    """A create request, already validated for shape by the web schema."""

    model_id: str
    replicas: int = 1
    gpus_per_replica: int = 1
    name: str | None = None
    gpu_type: str | None = None
    max_model_len: int | None = None
    dtype: str | None = None
    vllm_args: list[str] = field(default_factory=list)
    autoscaling_enabled: bool = False
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_gpu_utilization: int | None = None
    autoscaling_targets: dict[str, float] = field(default_factory=dict)


@dataclass
class Submitted:
    job: Job
    deployment: Deployment | None
    replayed: bool = False


# ----------------------------------------------------------------------------------------------- names
def slugify(text_value: str) -> str:
    slug = _SLUG_INVALID.sub("-", text_value.lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)
    slug = slug.lstrip("0123456789-")
    return slug or "model"


def default_name(model_id: str) -> str:
    """``<slug of the model id's last path part>-<5 random chars>``, a valid DNS-1035 label."""
    suffix = secrets.token_hex(3)[:5]
    base = slugify(model_id.rsplit("/", 1)[-1])[: K8S_NAME_MAX - len(suffix) - 1].rstrip("-")
    return f"{base}-{suffix}"


def k8s_name_for(name: str, tenant_id: str, *, disambiguate: bool = False) -> str:
    """``<name>-<tenant>``; trimmed to 63 characters and suffixed with a hash of the pair when too long (so two
    long names that share a prefix still get distinct object names), or when ``disambiguate``d: two pairs can
    make the same ``<name>-<tenant>`` (``foo-bar`` + ``baz``, ``foo`` + ``bar-baz``), never the same hash input."""
    full = f"{name}-{tenant_id}"
    if len(full) <= K8S_NAME_MAX and not disambiguate:
        return full
    digest = hashlib.sha256(f"{tenant_id}/{name}".encode()).hexdigest()[:8]
    return f"{full[: K8S_NAME_MAX - len(digest) - 1].rstrip('-')}-{digest}"


# ----------------------------------------------------------------------------------------- idempotency
def default_fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _replay(session: Session, scope: str, key: str | None, fingerprint: str) -> Submitted | None:
    job = idempotency_keys.earlier_job(session, scope, key, fingerprint)
    if job is None:
        return None
    deployment = None
    if job.target_kind == TargetKind.DEPLOYMENT:
        deployment = session.get(Deployment, uuid.UUID(job.target_id))
    return Submitted(job=job, deployment=deployment, replayed=True)


def _new_job(
    *,
    job_type: JobType,
    tenant_id: str | None,
    target_id: uuid.UUID,
    requested_by: str,
    scope: str,
    idempotency_key: str | None,
    fingerprint: str,
    params: dict[str, Any],
) -> Job:
    return Job(
        id=uuid.uuid4(),
        type=job_type,
        tenant_id=tenant_id,
        requested_by=requested_by,
        target_kind=TargetKind.DEPLOYMENT,
        target_id=str(target_id),
        celery_task_id=str(uuid.uuid4()),
        idempotency_scope=scope if idempotency_key else None,
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint if idempotency_key else None,
        params=params,
    )


@dataclass(frozen=True)
class _DeploymentRequest:
    """What every operation on an existing deployment shares: who asks, and its idempotency scope and key."""

    scope: str
    requested_by: str
    idempotency_key: str | None
    fingerprint: str

    def job(self, deployment: Deployment, job_type: JobType, params: dict[str, Any]) -> Job:
        return _new_job(
            job_type=job_type,
            tenant_id=deployment.tenant_id,
            target_id=deployment.id,
            requested_by=self.requested_by,
            scope=self.scope,
            idempotency_key=self.idempotency_key,
            fingerprint=self.fingerprint,
            params=params,
        )


def _begin(
    session: Session,
    *,
    tenant_id: str | None,
    requested_by: str,
    idempotency_key: str | None,
    fingerprint: str | None,
    request_fields: dict[str, Any],
) -> tuple[_DeploymentRequest, Submitted | None]:
    """The request's idempotency identity, and the earlier job if this is a replay of it."""
    request = _DeploymentRequest(
        scope=idempotency_keys.scope_for(tenant_id, requested_by),
        requested_by=requested_by,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint or default_fingerprint(request_fields),
    )
    return request, _replay(session, request.scope, idempotency_key, request.fingerprint)


# ------------------------------------------------------------------------------------------ lookups
def _load_deployment(session: Session, tenant_id: str | None, deployment_id: uuid.UUID | str) -> Deployment:
    try:
        deployment_uuid = deployment_id if isinstance(deployment_id, uuid.UUID) else uuid.UUID(str(deployment_id))
    except ValueError:
        raise NotFoundError("deployment_not_found", f"deployment {deployment_id} not found") from None
    deployment = session.get(Deployment, deployment_uuid)
    if deployment is None or (tenant_id is not None and deployment.tenant_id != tenant_id):
        raise NotFoundError("deployment_not_found", f"deployment {deployment_id} not found")
    if deployment.status == DeploymentStatus.DELETED:
        raise NotFoundError("deployment_not_found", f"deployment {deployment_id} was deleted")
    return deployment


def _claim(session: Session, deployment: Deployment, job: Job) -> None:
    """Make ``job`` the deployment's one active operation, or raise 409 deployment_busy.

    An atomic UPDATE ... WHERE (no active job, or the recorded one already ended): two requests
    racing for one deployment cannot both win, whatever the isolation level.
    """
    session.add(job)
    session.flush()
    terminal_jobs = select(Job.id).where(Job.state.in_(tuple(TERMINAL_JOB_STATES)))
    claimed = session.execute(
        update(Deployment)
        .where(
            Deployment.id == deployment.id,
            or_(Deployment.active_job_id.is_(None), Deployment.active_job_id.in_(terminal_jobs)),
        )
        .values(active_job_id=job.id, updated_at=func.now())
        .returning(Deployment.id)
    ).first()
    if claimed is None:
        session.refresh(deployment, ["active_job_id"])
        holder = session.get(Job, deployment.active_job_id) if deployment.active_job_id else None
        job_type = str(holder.type) if holder is not None else None
        # A node job (an admin's drain moving this deployment's replicas) is not the tenant's to read: the type
        # says what blocks, and the deployment's status shows the job in flight until it ends.
        message = (
            "a node drain is moving this deployment's replicas; retry when it has finished"
            if job_type == JobType.NODE_DRAIN
            else "another operation is in progress on this deployment"
        )
        raise ConflictError(
            "deployment_busy",
            message,
            {"job_id": str(deployment.active_job_id) if deployment.active_job_id else None, "job_type": job_type},
        )
    session.refresh(deployment)


# ------------------------------------------------------------------------------------------- create
def request_create(
    session: Session,
    *,
    tenant_id: str,
    spec: CreateDeploymentSpec,
    requested_by: str,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
) -> Submitted:
    """Validate, admit and record a new deployment plus its create job."""
    settings = get_settings()
    fingerprint = fingerprint or default_fingerprint({"op": "create", **asdict(spec)})
    replayed = _replay(session, tenant_id, idempotency_key, fingerprint)
    if replayed is not None:
        return replayed
    vllm_args = validate_vllm_args(list(spec.vllm_args or []))
    name = spec.name or default_name(spec.model_id)
    if not DNS_1035.match(name):
        raise InvalidRequestError(
            "invalid_name", "name must be a DNS-1035 label: lowercase letters, digits and '-'", {"field": "name"}
        )
    gpu_type = spec.gpu_type or settings.gpu_type
    min_replicas = spec.min_replicas if spec.min_replicas is not None else min(spec.replicas, 1)
    max_replicas = spec.max_replicas if spec.max_replicas is not None else max(spec.replicas, min_replicas)
    if spec.autoscaling_enabled and not min_replicas <= spec.replicas <= max_replicas:
        raise InvalidRequestError(
            "replicas_outside_autoscaling_range",
            f"replicas {spec.replicas} must lie within min_replicas {min_replicas} and max_replicas {max_replicas}",
            {"field": "replicas"},
        )
    if max_replicas < min_replicas:
        raise InvalidRequestError(
            "invalid_autoscaling_range", "max_replicas must be >= min_replicas", {"field": "max_replicas"}
        )
    if spec.autoscaling_enabled and max_replicas == min_replicas:
        # Accepted, this would be an autoscaler that can never act (max_replicas defaults to the replicas asked for).
        raise InvalidRequestError(
            "empty_autoscaling_range",
            f"with autoscaling enabled, max_replicas must be above min_replicas ({min_replicas}), or the autoscaler "
            "has nothing to do: give max_replicas, or leave autoscaling out",
            {"field": "max_replicas"},
        )
    # Serialises creates cluster-wide (admission needs it anyway), which also makes the name check race-free.
    # The read takes the lock, and under it ONE statement answers both the name check and admission.
    k8s_name = k8s_name_for(name, tenant_id)
    state = admission.read_admission_state(session, tenant_id, name=name, k8s_name=(settings.k8s_namespace, k8s_name))
    if state.name_taken_by is not None:
        raise ConflictError(
            "name_taken", f"a deployment named {name!r} already exists", {"deployment_id": str(state.name_taken_by)}
        )
    if state.k8s_name_taken:
        k8s_name = k8s_name_for(name, tenant_id, disambiguate=True)
    deployment = Deployment(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        name=name,
        model_id=spec.model_id,
        image=settings.vllm_image,
        gpu_type=gpu_type,
        gpus_per_replica=spec.gpus_per_replica,
        replicas_desired=spec.replicas,
        replicas_ready=0,
        max_model_len=spec.max_model_len,
        dtype=spec.dtype,
        vllm_args=vllm_args,
        autoscaling_enabled=spec.autoscaling_enabled,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_gpu_utilization=spec.target_gpu_utilization,
        autoscaling_targets=dict(spec.autoscaling_targets or {}),
        k8s_namespace=settings.k8s_namespace,
        k8s_name=k8s_name,
        status=DeploymentStatus.PENDING,
    )
    deployment.endpoint = endpoint_url(deployment)
    job = _new_job(
        job_type=JobType.DEPLOYMENT_CREATE,
        tenant_id=tenant_id,
        target_id=deployment.id,
        requested_by=requested_by,
        scope=tenant_id,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        params={"replicas": spec.replicas},
    )
    placement = None
    if spec.replicas > 0:
        # Decided before anything is written, so the job row carries its placement from the first INSERT.
        placement = admission.decide(
            session,
            tenant_id=tenant_id,
            gpu_type=gpu_type,
            gpus_per_replica=spec.gpus_per_replica,
            replicas=spec.replicas,
            state=state,
        )
        job.params = {"replicas": spec.replicas, "placement": placement.replicas_by_node}
    deployment.active_job_id = job.id
    reservations = []
    if placement is not None:
        reservations = admission.reservation_rows(
            placement,
            tenant_id=tenant_id,
            deployment_id=deployment.id,
            job_id=job.id,
            gpu_type=gpu_type,
            gpus_per_replica=spec.gpus_per_replica,
        )
    _insert_created_rows(session, job, deployment, reservations)
    return Submitted(job=job, deployment=deployment, replayed=False)


# The create's rows are written by ONE statement, still under the admission lock: three ORM flushes would be
# three round trips (the foreign keys, deployment -> job and reservation -> both, order them, and the models
# have no relationships that would let one flush do it), each with the unit of work's Python cost.
@cache
def _insert_columns(model: type[Base]) -> tuple[tuple[str, Column[Any]], ...]:
    """(attribute, column) of every column a new row is written with: all but those only the database fills
    in (a server default and no Python default: the timestamps, which RETURNING reports)."""
    mapper = inspect(model)
    return tuple(
        (mapper.get_property_by_column(column).key, column)
        for column in _table(model).columns
        if column.default is not None or column.server_default is None
    )


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


def _python_default(column: Column[Any]) -> Any:
    default = column.default
    if default is None:
        return None
    if not isinstance(default, ColumnDefault):
        raise TypeError(f"{column} has a default that is not a Python value or function")
    return default.arg(None) if default.is_callable else default.arg


def _insert_row(instance: Base, prefix: str) -> dict[str, Any]:
    """``instance``'s INSERT parameters (see :func:`_created_rows_statement`). Attributes left unset get the
    column's Python default, set on ``instance`` as a flush would, so the object matches its row."""
    row = {}
    for key, column in _insert_columns(type(instance)):
        if key not in instance.__dict__:
            setattr(instance, key, _python_default(column))
        row[f"{prefix}_{column.name}"] = getattr(instance, key)
    return row


# Per-node columns of the create's reservations, sent as one array each; the rest are the new deployment's.
_RESERVATION_NODE_COLUMNS = ("id", "node_name", "gpus", "replicas")


def _created_rows_statement() -> Select[Any]:
    """INSERT the job, the deployment and its reservations as data-modifying CTEs of one statement, returning
    the job's and the deployment's timestamps. Postgres checks the foreign keys between the three at the end of
    the statement, when all of them hold their rows.

    Compiled once (``_CREATED_ROWS``), with bind parameters: ``job_<column>``, ``deployment_<column>``, and
    for the reservations an array per column of :data:`_RESERVATION_NODE_COLUMNS`, ``reservation_<column>``,
    unnested into rows (a multi-row VALUES would be a different statement for each number of reservations).
    The reservations take deployment, tenant, job and GPU type from the new deployment's row, which keeps the
    parameters within the 50 that psycopg caches the parsing of a statement for."""

    def parameters(model: type[Base], prefix: str) -> dict[Column[Any], Any]:
        return {
            column: bindparam(f"{prefix}_{column.name}", type_=column.type) for _, column in _insert_columns(model)
        }

    new_job = (
        insert(_table(Job)).values(parameters(Job, "job")).returning(Job.created_at, Job.updated_at).cte("new_job")
    )
    new_deployment = (
        insert(_table(Deployment))
        .values(parameters(Deployment, "deployment"))
        .returning(
            Deployment.id,
            Deployment.tenant_id,
            Deployment.active_job_id,
            Deployment.gpu_type,
            Deployment.created_at,
            Deployment.updated_at,
        )
        .cte("new_deployment")
    )
    reservations = _table(GpuReservation).c
    new_reservations = insert(_table(GpuReservation)).from_select(
        [
            reservations.deployment_id,
            reservations.tenant_id,
            reservations.job_id,
            reservations.gpu_type,
            *(reservations[name] for name in _RESERVATION_NODE_COLUMNS),
        ],
        select(
            new_deployment.c.id,
            new_deployment.c.tenant_id,
            new_deployment.c.active_job_id,
            new_deployment.c.gpu_type,
            *(
                func.unnest(bindparam(f"reservation_{name}", type_=ARRAY(reservations[name].type)))
                for name in _RESERVATION_NODE_COLUMNS
            ),
        ),
    )
    return (
        select(new_job.c.created_at, new_job.c.updated_at, new_deployment.c.created_at, new_deployment.c.updated_at)
        .select_from(new_job.join(new_deployment, true()))
        .add_cte(new_reservations.cte("new_reservations"))
    )


_CREATED_ROWS = DriverStatement(_created_rows_statement)


def _insert_created_rows(
    session: Session, job: Job, deployment: Deployment, reservations: list[dict[str, Any]]
) -> None:
    """Write the new rows (one round trip), then make ``job`` and ``deployment`` the session's persistent
    objects for them, exactly as a flush would have left them (no lazy load on any attribute)."""
    parameters = {**_insert_row(job, "job"), **_insert_row(deployment, "deployment")}
    for name in _RESERVATION_NODE_COLUMNS:
        parameters[f"reservation_{name}"] = [reservation[name] for reservation in reservations]
    row = _CREATED_ROWS.execute(session, parameters).fetchone()
    if row is None:  # the statement's one row: a failed INSERT raises instead
        raise RuntimeError("the create's INSERT returned no row")
    job.created_at, job.updated_at, deployment.created_at, deployment.updated_at = row
    for instance in (job, deployment):
        make_transient_to_detached(instance)
        session.add(instance)


# ------------------------------------------------------------------------------------------- delete
def request_delete(
    session: Session,
    *,
    tenant_id: str | None,
    deployment_id: uuid.UUID | str,
    requested_by: str,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
) -> Submitted:
    """Record a delete job; the deployment shows DELETING until the worker has removed it from the cluster."""
    request, replayed = _begin(
        session, tenant_id=tenant_id, requested_by=requested_by, idempotency_key=idempotency_key,
        fingerprint=fingerprint, request_fields={"op": "delete", "deployment_id": str(deployment_id)},
    )
    if replayed is not None:
        return replayed
    deployment = _load_deployment(session, tenant_id, deployment_id)
    # The status it had, for a delete the cluster refuses to put back (workers.deployments.fail_delete).
    job = request.job(deployment, JobType.DEPLOYMENT_DELETE, {"status_before": str(deployment.status)})
    _claim(session, deployment, job)
    deployment.status = DeploymentStatus.DELETING
    deployment.status_reason = None
    deployment.status_message = None
    session.flush()
    return Submitted(job=job, deployment=deployment, replayed=False)


# ------------------------------------------------------------------------------------------ restart
def request_restart(
    session: Session,
    *,
    tenant_id: str | None,
    deployment_id: uuid.UUID | str,
    requested_by: str,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
) -> Submitted:
    """Record a rolling restart. A single-replica deployment needs room for one temporary extra replica
    (so its only replica never goes down); that surge is admitted here, so "no room" is an immediate 409."""
    request, replayed = _begin(
        session, tenant_id=tenant_id, requested_by=requested_by, idempotency_key=idempotency_key,
        fingerprint=fingerprint, request_fields={"op": "restart", "deployment_id": str(deployment_id)},
    )
    if replayed is not None:
        return replayed
    deployment = _load_deployment(session, tenant_id, deployment_id)
    if deployment.status != DeploymentStatus.STOPPED and deployment.status not in RESTARTABLE_STATUSES:
        raise ConflictError(
            "invalid_state",
            f"a deployment can be restarted only when RUNNING or DEGRADED, not {deployment.status}",
            {"status": str(deployment.status)},
        )
    if deployment.status == DeploymentStatus.STOPPED or deployment.replicas_desired == 0:
        raise ConflictError(
            "nothing_to_restart", "the deployment is scaled to 0 replicas: there are no pods to restart",
            {"replicas": 0},
        )
    surge = deployment.replicas_desired == 1
    job = request.job(deployment, JobType.DEPLOYMENT_RESTART, {"surge": surge})
    _claim(session, deployment, job)
    if surge:
        admission.admit_replicas(session, deployment, replicas=1, job_id=job.id, check_quota=False)
    deployment.status = DeploymentStatus.RESTARTING
    session.flush()
    return Submitted(job=job, deployment=deployment, replayed=False)


# -------------------------------------------------------------------------------------------- scale
def request_scale(
    session: Session,
    *,
    tenant_id: str | None,
    deployment_id: uuid.UUID | str,
    replicas: int,
    reason: str,
    requested_by: str,
    trigger: str = "manual",
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    inputs: dict[str, Any] | None = None,
) -> Submitted:
    """Record a scale job: scale-up admits the extra replicas, scale-down releases reservations; either way
    a ScalingEvent (status pending, completed by the worker) records who asked and why."""
    if replicas < 0:
        raise InvalidRequestError("invalid_replicas", "replicas must be >= 0", {"field": "replicas"})
    request, replayed = _begin(
        session, tenant_id=tenant_id, requested_by=requested_by, idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        request_fields={"op": "scale", "deployment_id": str(deployment_id), "replicas": replicas, "trigger": trigger},
    )
    if replayed is not None:
        return replayed
    deployment = _load_deployment(session, tenant_id, deployment_id)
    if deployment.status not in SCALABLE_STATUSES:
        raise ConflictError(
            "invalid_state", f"a {deployment.status} deployment cannot be scaled", {"status": str(deployment.status)}
        )
    # The autoscaler would undo a manual scale outside its range at its next sweep; 0 stops the deployment,
    # which the autoscaler then leaves alone.
    outside = not deployment.min_replicas <= replicas <= deployment.max_replicas
    if trigger == "manual" and deployment.autoscaling_enabled and replicas != 0 and outside:
        raise ConflictError(
            "outside_autoscaling_range",
            f"autoscaling keeps this deployment between {deployment.min_replicas} and {deployment.max_replicas} "
            "replicas: scale within that range, or to 0 to stop it",
            {"replicas": replicas, "min_replicas": deployment.min_replicas, "max_replicas": deployment.max_replicas},
        )
    before = deployment.replicas_desired
    job = request.job(
        deployment,
        JobType.DEPLOYMENT_SCALE,
        {"replicas_before": before, "replicas_after": replicas, "trigger": trigger, "reason": reason},
    )
    _claim(session, deployment, job)
    if replicas > before:
        admission.admit_replicas(session, deployment, replicas=replicas - before, job_id=job.id)
    elif replicas < before:
        admission.release_replicas(session, deployment.id, before - replicas)
    deployment.replicas_desired = replicas
    if deployment.status in _SETTLED_STATUSES and replicas != before:
        deployment.status = DeploymentStatus.SCALING
    session.add(
        ScalingEvent(
            deployment_id=deployment.id,
            tenant_id=deployment.tenant_id,
            model_id=deployment.model_id,
            trigger=ScalingTrigger(trigger),
            reason=reason,
            replicas_before=before,
            replicas_after=replicas,
            status=ScalingEventStatus.PENDING,
            inputs=dict(inputs or {}),
            actor=requested_by,
            job_id=job.id,
        )
    )
    session.flush()
    return Submitted(job=job, deployment=deployment, replayed=False)
