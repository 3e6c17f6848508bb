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
    """Mark the job RUNNING and count the attempt; ``None`` if it is already terminal (nothing to do)."""
    job_uuid = _as_uuid(job_id)
    row = session.execute(
        update(Job)
        .where(Job.id == job_uuid, Job.state.in_(_RESTARTABLE))
        .values(
            state=JobState.RUNNING,
            attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, func.now()),
            updated_at=func.now(),
        )
        .returning(Job.id)
    ).first()
    if row is None:
        return None
    return session.execute(select(Job).where(Job.id == job_uuid).execution_options(populate_existing=True)).scalar_one()


def mark_retrying(session: Session, job_id: uuid.UUID | str, error: dict[str, Any]) -> bool:
    """RUNNING -> RETRYING with the error that caused the retry; False if the job is no longer running."""
    result = session.execute(
        update(Job)
        .where(Job.id == _as_uuid(job_id), Job.state.in_(_RESTARTABLE))
        .values(state=JobState.RETRYING, error=error, updated_at=func.now())
    )
    return bool(getattr(result, "rowcount", 0))


def _finish(session: Session, job_id: uuid.UUID | str, state: JobState, **values: Any) -> bool:
    job_uuid = _as_uuid(job_id)
    result = session.execute(
        update(Job)
        .where(Job.id == job_uuid, Job.state.in_(tuple(ACTIVE_JOB_STATES)))
        .values(state=state, finished_at=func.now(), updated_at=func.now(), **values)
    )
    session.execute(update(Deployment).where(Deployment.active_job_id == job_uuid).values(active_job_id=None))
    return bool(getattr(result, "rowcount", 0))


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
