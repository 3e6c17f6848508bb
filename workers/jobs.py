"""Job state transitions, each one a guarded UPDATE so concurrent workers cannot move a job backwards.

PENDING|RETRYING|RUNNING -> RUNNING (RUNNING again when acks_late redelivers the task of a killed
worker), -> RETRYING between attempts, -> SUCCEEDED | FAILED | CANCELLED. Terminal states never change:
every UPDATE is filtered on the non-terminal states, and a duplicate delivery of a finished job is a no-op.
Ending a job also releases the deployment it held (``Deployment.active_job_id``), in the same statement
batch, so "one operation at a time" never outlives the operation.

Functions take an open session (or connection) and do not commit: the caller decides the transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Select,
    Uuid,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from models import ACTIVE_JOB_STATES, Deployment, DeploymentStatus, Job, JobState, TargetKind
from models.driver_sql import DriverStatement

_RESTARTABLE = (JobState.PENDING, JobState.RETRYING, JobState.RUNNING)


def _as_uuid(job_id: uuid.UUID | str) -> uuid.UUID:
    return job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))


def _start(job_id: Any, *guards: Any) -> Any:
    """The UPDATE that marks a job RUNNING and counts the attempt, for a job not yet ended (and ``guards``)."""
    return (
        update(Job)
        .where(Job.id == job_id, Job.state.in_(_RESTARTABLE), *guards)
        .values(
            state=JobState.RUNNING,
            attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, func.now()),
            updated_at=func.now(),
        )
    )


def start(session: Session, job_id: uuid.UUID | str) -> Job | None:
    """Mark the job RUNNING and count the attempt; ``None`` if it is already terminal (nothing to do).

    One statement: the UPDATE returns the whole row, loaded into the session (``populate_existing`` so an
    instance already in the session shows the new state)."""
    return (
        session.execute(
            _start(_as_uuid(job_id)).returning(Job),
            execution_options={"populate_existing": True, "synchronize_session": False},
        )
        .scalars()
        .first()
    )


@dataclass(frozen=True)
class DeploymentChange:
    """Values to write to a deployment in the same statement that ends its job (see :func:`_finish`).

    ``values`` are (column, value or SQL expression) pairs, meant to be a module-level constant: the
    statement is built once per distinct ``values`` and reused (see :func:`_finish_statement`)."""

    deployment_id: uuid.UUID
    values: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class DeploymentRow:
    """The deployment a job acts on, as the claim read it: what the operations and the manifest builders
    (``workers.manifests.DeploymentLike``) need, copied out so no connection is held during cluster calls."""

    id: uuid.UUID
    tenant_id: str
    model_id: str
    image: str
    gpu_type: str
    gpus_per_replica: int
    replicas_desired: int
    max_model_len: int | None
    dtype: str | None
    vllm_args: list[Any]
    k8s_namespace: str
    k8s_name: str
    status: DeploymentStatus


_DEPLOYMENT_ROW_COLUMNS = tuple(field.name for field in fields(DeploymentRow))


@dataclass(frozen=True)
class Claim:
    """What :func:`claim` found: whether this connection now holds the job's lock, and, if it started the job,
    the job's parameters, its target and (for a deployment job) the deployment, read by the same statement."""

    lock_held: bool
    started: bool
    cancel_requested: bool
    params: dict[str, Any] = field(default_factory=dict)
    target_id: str | None = None
    deployment: DeploymentRow | None = None


# The statements of a job's own life (claim, finish) run for every job: each is built once, with bound
# parameters, because building a SQLAlchemy statement costs more CPU than Postgres spends running it.
@cache
def _claim_statement() -> Select:
    # The claim's commit does not wait for the WAL flush (synchronous_commit off for this one transaction):
    # RUNNING is only a progress mark, and losing it in a database crash loses nothing, since the lock dies
    # with the crash and the job is claimed again. Every other transition, the ending above all, stays durable.
    lock = (
        select(
            func.pg_try_advisory_lock(bindparam("lock_key", type_=BigInteger)).label("held"),
            func.set_config("synchronous_commit", "off", true()).label("commit_mode"),
        )
        .cte("job_lock")
        .prefix_with("MATERIALIZED")
    )
    started = (
        _start(bindparam("job_id"), select(lock.c.held).scalar_subquery())
        .returning(Job.id, Job.cancel_requested, Job.params, Job.target_kind, Job.target_id)
        .cte("started_job")
    )
    # The job's deployment comes with the claim (one round trip, not two). The target id is text (a node job
    # names a node): it is cast only when it is a UUID, so a malformed one finds no deployment instead of
    # failing the statement; CASE evaluates the cast only for the rows that pass the test.
    target_uuid = case(
        (
            and_(started.c.target_kind == TargetKind.DEPLOYMENT, started.c.target_id.regexp_match(_UUID_PATTERN)),
            cast(started.c.target_id, Uuid),
        ),
    )
    deployment_columns = [Deployment.__table__.c[name].label(f"deployment_{name}") for name in _DEPLOYMENT_ROW_COLUMNS]
    return select(
        lock.c.held, started.c.id.label("job_id"), started.c.cancel_requested, started.c.params, started.c.target_id,
        *deployment_columns,
    ).select_from(
        lock.outerjoin(started, true()).outerjoin(Deployment, Deployment.id == target_uuid)
    )  # fmt: skip


# What Postgres's uuid input accepts: hyphens optional between groups, braces optional.
_UUID_PATTERN = r"^\{?[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}\}?$"


_CLAIM = DriverStatement(_claim_statement)


def claim(connection: Connection | Session, job_id: uuid.UUID | str, lock_key: int) -> Claim:
    """Take the job's session-level advisory lock and, only if it was free, mark the job RUNNING: ONE statement.

    A copy that finds the lock taken changes nothing (another live copy runs the job). The lock CTE is
    MATERIALIZED: referenced twice, it must run exactly once. With the lock taken but the job already
    finished, ``lock_held`` is True and ``started`` False: the caller still has to unlock."""
    row = _CLAIM.execute(connection, {"job_id": _as_uuid(job_id), "lock_key": lock_key}).fetchone()
    if row is None:  # one row whatever happens: the lock CTE's
        raise RuntimeError("the job claim returned no row")
    held, claimed_id, cancel_requested, params, target_id, *deployment_values = row
    if claimed_id is None:
        return Claim(lock_held=bool(held), started=False, cancel_requested=False)
    deployment = None
    if deployment_values[0] is not None:  # the primary key: set exactly when the deployment row was found
        columns = dict(zip(_DEPLOYMENT_ROW_COLUMNS, deployment_values, strict=True))
        deployment = DeploymentRow(**{**columns, "status": DeploymentStatus(columns["status"])})
    return Claim(
        lock_held=bool(held),
        started=True,
        cancel_requested=bool(cancel_requested),
        # Guarded: the job is RUNNING from here on, and an exception now would leave it so without its lock.
        params=dict(params) if isinstance(params, dict) else {},
        target_id=target_id,
        deployment=deployment,
    )


def mark_retrying(session: Connection | Session, job_id: uuid.UUID | str, error: dict[str, Any]) -> bool:
    """RUNNING -> RETRYING with the error that caused the retry; False if the job is no longer running."""
    result = session.execute(
        update(Job)
        .where(Job.id == _as_uuid(job_id), Job.state.in_(_RESTARTABLE))
        .values(state=JobState.RETRYING, error=error, updated_at=func.now())
    )
    return bool(getattr(result, "rowcount", 0))


@lru_cache(maxsize=64)
def _finish_driver_statement(
    state: JobState, job_columns: tuple[str, ...], change: tuple[tuple[str, Any], ...] | None, unlock: bool
) -> DriverStatement:
    return DriverStatement(lambda: _finish_statement(state, job_columns, change, unlock))


def _finish_statement(
    state: JobState, job_columns: tuple[str, ...], change: tuple[tuple[str, Any], ...] | None, unlock: bool
) -> Select:
    """The ending statement for one combination of its shape; values arrive as bound parameters: ``job_id``,
    one per name in ``job_columns``, ``deployment_id`` with a ``change``, ``lock_key`` with ``unlock``."""
    job_id = bindparam("job_id", type_=Job.__table__.c.id.type)
    finished = (
        update(Job)
        .where(Job.id == job_id, Job.state.in_(tuple(ACTIVE_JOB_STATES)))
        .values(
            state=state,
            finished_at=func.now(),
            updated_at=func.now(),
            **{name: bindparam(name, type_=Job.__table__.c[name].type) for name in job_columns},
        )
        .returning(Job.id)
        .cte("finished_job")
    )
    held_by_job = Deployment.active_job_id == job_id
    released = update(Deployment).where(held_by_job).values(active_job_id=None)
    if change is not None:
        released = (
            update(Deployment)
            .where(or_(held_by_job, Deployment.id == bindparam("deployment_id", type_=Deployment.__table__.c.id.type)))
            .values(active_job_id=case((held_by_job, None), else_=Deployment.active_job_id), **dict(change))
        )
    released_deployment = released.returning(Deployment.id).cte("released_deployment")
    # Both writes are read in the select list, before the unlock: Postgres evaluates it left to right, and an
    # unread data-modifying CTE would only run after it. So a write that fails leaves the lock held (a session
    # lock is not given back by the rollback), and no second copy can claim a job whose ending did not happen.
    statement = select(
        select(func.count()).select_from(finished).scalar_subquery(),
        select(func.count()).select_from(released_deployment).scalar_subquery(),
    )
    if unlock:
        statement = statement.add_columns(func.pg_advisory_unlock(bindparam("lock_key", type_=BigInteger)))
    return statement


def _finish(
    session: Connection | Session,
    job_id: uuid.UUID | str,
    state: JobState,
    *,
    change: DeploymentChange | None = None,
    unlock_key: int | None = None,
    **values: Any,
) -> bool:
    """End the job and release the deployment it held, as ONE statement (data-modifying CTEs), so the pair
    is atomic even outside a transaction and costs one round trip.

    ``change``: values the job's outcome writes to its deployment, in the same UPDATE that releases it (one
    statement may not update a row twice). ``unlock_key``: the job's advisory lock (:func:`claim`), released
    by the same statement; a copy that takes the lock before it commits blocks on the job row, then sees
    the job finished."""
    statement = _finish_driver_statement(
        state, tuple(sorted(values)), change.values if change is not None else None, unlock_key is not None
    )
    parameters = {**values, "job_id": _as_uuid(job_id)}
    if change is not None:
        parameters["deployment_id"] = change.deployment_id
    if unlock_key is not None:
        parameters["lock_key"] = unlock_key
    row = statement.execute(session, parameters).fetchone()
    return bool(row is not None and row[0])


def succeed(
    session: Connection | Session,
    job_id: uuid.UUID | str,
    result: dict[str, Any] | None = None,
    *,
    change: DeploymentChange | None = None,
    unlock_key: int | None = None,
) -> bool:
    return _finish(
        session, job_id, JobState.SUCCEEDED, change=change, unlock_key=unlock_key, result=result or {}, error=None
    )


def fail(
    session: Connection | Session, job_id: uuid.UUID | str, error: dict[str, Any], *, unlock_key: int | None = None
) -> bool:
    return _finish(session, job_id, JobState.FAILED, unlock_key=unlock_key, error=error)


def cancel(
    session: Connection | Session,
    job_id: uuid.UUID | str,
    reason: str = "cancelled",
    *,
    unlock_key: int | None = None,
) -> bool:
    error = {"code": "cancelled", "message": reason, "retryable": False}
    return _finish(session, job_id, JobState.CANCELLED, unlock_key=unlock_key, error=error)


def update_progress(session: Session, job_id: uuid.UUID | str, progress: dict[str, Any]) -> None:
    """Merge ``progress`` into the job's progress (JSONB ||), leaving other keys in place."""
    session.execute(
        update(Job)
        .where(Job.id == _as_uuid(job_id), Job.state.in_(tuple(ACTIVE_JOB_STATES)))
        .values(progress=Job.progress.op("||")(literal(progress, type_=JSONB)), updated_at=func.now())
    )
