"""Write a drain job, or ask one to stop; the API calls these, the steps run later in a worker."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import TERMINAL_JOB_STATES, Job, JobState, JobType
from workers import node_ops
from workers.domain import ConflictError, InvalidRequestError, NotFoundError
from workers.drain.options import MAX_TIMEOUT_SECONDS, DrainOptions
from workers.drain.progress import PHASE_CORDON


def request_drain(
    session: Session,
    *,
    node_name: str,
    options: DrainOptions,
    requested_by: str,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
) -> node_ops.NodeJobSubmitted:
    """Write the drain job (one per node: 409 ``drain_in_progress``); the caller commits, then enqueues."""
    if not 1 <= options.timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise InvalidRequestError(
            "invalid_timeout", f"timeout_seconds must be 1-{MAX_TIMEOUT_SECONDS}", {"field": "timeout_seconds"}
        )
    submitted = node_ops.request_node_job(
        session,
        node_name=node_name,
        job_type=JobType.NODE_DRAIN,
        params=options.to_params(),
        requested_by=requested_by,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
    if not submitted.replayed:
        submitted.job.progress = {"phase": PHASE_CORDON, "step_token": submitted.job.celery_task_id}
    return submitted


def request_cancel(session: Session, job_id: uuid.UUID | str) -> Job:
    """Ask a drain to stop at its next step (cancelling a finished job is a 409)."""
    try:
        job_uuid = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        job = None  # text that is not a UUID names no job
    else:
        job = session.scalar(select(Job).where(Job.id == job_uuid).with_for_update())
    if job is None:
        raise NotFoundError("job_not_found", f"no job {job_id}", {"job_id": str(job_id)})
    if job.type != JobType.NODE_DRAIN:
        raise ConflictError("job_not_cancellable", f"a {job.type} job cannot be cancelled", {"job_id": str(job.id)})
    if JobState(job.state) in TERMINAL_JOB_STATES:
        raise ConflictError(
            "job_finished", f"job {job.id} already ended {job.state}", {"job_id": str(job.id), "state": str(job.state)}
        )
    job.cancel_requested = True
    session.flush()
    return job
