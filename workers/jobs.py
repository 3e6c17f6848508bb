"""Job state transitions, each one a guarded UPDATE so concurrent workers cannot move a job backwards.

PENDING|RETRYING|RUNNING -> RUNNING (RUNNING again when acks_late redelivers the task of a killed
worker), -> RETRYING between attempts, -> SUCCEEDED | FAILED | CANCELLED. Terminal states never change:
every UPDATE is filtered on the non-terminal states, and a duplicate delivery of a finished job is a no-op.
Ending a job also releases the deployment it held (``Deployment.active_job_id``), in the same statement
batch, so "one operation at a time" never outlives the operation.

Functions take an open session and do not commit: the caller decides the transaction.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from models import ACTIVE_JOB_STATES, Deployment, Job, JobState

_RESTARTABLE = (JobState.PENDING, JobState.RETRYING, JobState.RUNNING)


def _as_uuid(job_id: uuid.UUID | str) -> uuid.UUID:
    return job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))


def start(session: Session, job_id: uuid.UUID | str) -> Job | None:
    """Mark the job RUNNING and count the attempt; ``None`` if it is already terminal (nothing to do).

    One statement: the UPDATE returns the whole row, loaded into the session (``populate_existing`` so an
    instance already in the session shows the new state)."""
    job_uuid = _as_uuid(job_id)
    return (
        session.execute(
            update(Job)
            .where(Job.id == job_uuid, Job.state.in_(_RESTARTABLE))
            .values(
                state=JobState.RUNNING,
                attempts=Job.attempts + 1,
                started_at=func.coalesce(Job.started_at, func.now()),
                updated_at=func.now(),
            )
            .returning(Job),
            execution_options={"populate_existing": True, "synchronize_session": False},
        )
        .scalars()
        .first()
    )


def mark_retrying(session: Session, job_id: uuid.UUID | str, error: dict[str, Any]) -> bool:
    """RUNNING -> RETRYING with the error that caused the retry; False if the job is no longer running."""
    result = session.execute(
        update(Job)
        .where(Job.id == _as_uuid(job_id), Job.state.in_(_RESTARTABLE))
        .values(state=JobState.RETRYING, error=error, updated_at=func.now())
    )
    return bool(getattr(result, "rowcount", 0))


def _finish(session: Session, job_id: uuid.UUID | str, state: JobState, **values: Any) -> bool:
    """End the job and release the deployment it held, as ONE statement (two data-modifying CTEs), so the
    pair is atomic even outside a transaction and costs one round trip."""
    job_uuid = _as_uuid(job_id)
    finished = (
        update(Job)
        .where(Job.id == job_uuid, Job.state.in_(tuple(ACTIVE_JOB_STATES)))
        .values(state=state, finished_at=func.now(), updated_at=func.now(), **values)
        .returning(Job.id)
        .cte("finished_job")
    )
    released = (
        update(Deployment)
        .where(Deployment.active_job_id == job_uuid)
        .values(active_job_id=None)
        .returning(Deployment.id)
        .cte("released_deployment")
    )
    count = session.execute(
        select(select(func.count()).select_from(finished).scalar_subquery()).add_cte(released)
    ).scalar_one()
    return bool(count)


def succeed(session: Session, job_id: uuid.UUID | str, result: dict[str, Any] | None = None) -> bool:
    return _finish(session, job_id, JobState.SUCCEEDED, result=result or {}, error=None)


def fail(session: Session, job_id: uuid.UUID | str, error: dict[str, Any]) -> bool:
    return _finish(session, job_id, JobState.FAILED, error=error)


def cancel(session: Session, job_id: uuid.UUID | str, reason: str = "cancelled") -> bool:
    error = {"code": "cancelled", "message": reason, "retryable": False}
    return _finish(session, job_id, JobState.CANCELLED, error=error)


def update_progress(session: Session, job_id: uuid.UUID | str, progress: dict[str, Any]) -> None:
    """Merge ``progress`` into the job's progress (JSONB ||), leaving other keys in place."""
    session.execute(
        update(Job)
        .where(Job.id == _as_uuid(job_id), Job.state.in_(tuple(ACTIVE_JOB_STATES)))
        .values(progress=Job.progress.op("||")(literal(progress, type_=JSONB)), updated_at=func.now())
    )
