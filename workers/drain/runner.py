"""Run one drain step in one transaction, and turn cluster errors into a retry or a clean failure."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models import TERMINAL_JOB_STATES, Deployment, Job, JobState
from workers import cluster_errors, jobs
from workers.drain.endings import Finished, finish_aborted
from workers.drain.options import MAX_BACKOFF_SECONDS, POLL_SECONDS
from workers.drain.phases import advance
from workers.drain.progress import DrainStep
from workers.drain.step_tokens import issue_next_token, seconds_until_adoptable


@dataclass(frozen=True)
class StepOutcome:
    """What the task does next: nothing (``countdown is None``), or send the next step with this id."""

    state: str
    countdown: float | None = None
    next_token: str | None = None


def run_step(session: Session, job_id: uuid.UUID | str, step_token: str) -> StepOutcome:
    """Run one step of the drain ``job_id``; commits. The task sends the next step when ``countdown`` is set.

    A message that cannot act now is never just dropped while the job is active, because it may be the only
    one left: if the job row is locked (another delivery mid-step, or a cancel being written) it comes back
    in a second; if a newer step owns the job it comes back when that step would count as lost.
    """
    job_uuid = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    job = session.scalar(select(Job).where(Job.id == job_uuid).with_for_update(skip_locked=True))
    if job is None:
        session.rollback()
        state = session.scalar(select(Job.state).where(Job.id == job_uuid))
        session.rollback()
        if state is None or JobState(state) in TERMINAL_JOB_STATES:
            return StepOutcome("skipped")
        return StepOutcome("deferred", countdown=POLL_SECONDS / 2, next_token=step_token)
    if JobState(job.state) in TERMINAL_JOB_STATES:
        session.rollback()
        return StepOutcome("skipped")
    wait = seconds_until_adoptable(job, step_token)
    if wait > 0:
        session.rollback()
        return StepOutcome("deferred", countdown=wait + 1.0, next_token=step_token)
    if job.state != JobState.RUNNING:
        jobs.start(session, job.id)
        session.refresh(job)
    step = DrainStep(session, job)
    try:
        phase, countdown = advance(step)
    except Finished as finished:
        _release_claims(session, job_uuid)
        session.commit()
        return StepOutcome(finished.state)
    except cluster_errors.TransientClusterError as error:
        session.rollback()
        return _after_transient_error(session, job_uuid, error)
    except cluster_errors.PermanentClusterError as error:
        session.rollback()
        return _after_permanent_error(session, job_uuid, error)
    next_token = issue_next_token(step.progress, countdown)
    step.save()
    session.commit()
    return StepOutcome(phase, countdown=countdown, next_token=next_token)


def _release_claims(session: Session, job_id: uuid.UUID) -> None:
    session.execute(update(Deployment).where(Deployment.active_job_id == job_id).values(active_job_id=None))


def _after_transient_error(session: Session, job_id: uuid.UUID, error: cluster_errors.ClusterError) -> StepOutcome:
    """Keep the phase; try the step again with backoff until the deadline, then fail cleanly."""
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or JobState(job.state) in TERMINAL_JOB_STATES:
        session.rollback()
        return StepOutcome("skipped")
    step = DrainStep(session, job)
    failures = int(step.progress.get("transient_errors", 0)) + 1
    step.progress["transient_errors"] = failures
    step.progress["last_error"] = error.to_job_error()
    if "deadline" in step.progress and step.past_deadline():
        return _abort_with_cleanup(session, step, error)
    countdown = error.retry_after or min(1.0 * 2 ** min(failures, 5), MAX_BACKOFF_SECONDS)
    next_token = issue_next_token(step.progress, countdown)
    step.save()
    session.commit()
    return StepOutcome(str(step.progress.get("phase")), countdown=countdown, next_token=next_token)


def _after_permanent_error(session: Session, job_id: uuid.UUID, error: cluster_errors.ClusterError) -> StepOutcome:
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or JobState(job.state) in TERMINAL_JOB_STATES:
        session.rollback()
        return StepOutcome("skipped")
    return _abort_with_cleanup(session, DrainStep(session, job), error)


def _abort_with_cleanup(session: Session, step: DrainStep, error: cluster_errors.ClusterError) -> StepOutcome:
    try:
        finish_aborted(step, JobState.FAILED, error.code, error.message)
    except Finished as finished:
        _release_claims(session, step.job.id)
        session.commit()
        return StepOutcome(finished.state)
    except cluster_errors.ClusterError as cleanup_error:
        # The cluster is still failing: record the failure without the scale-back (the health monitor
        # reconciles replicas from desired state later) rather than leaving the job hanging.
        session.rollback()
        jobs.fail(session, step.job.id, {**error.to_job_error(), "details": {"cleanup_error": str(cleanup_error)}})
        _release_claims(session, step.job.id)
        session.commit()
        return StepOutcome(str(JobState.FAILED))
    raise AssertionError("finish_aborted always raises")
