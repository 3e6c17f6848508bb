"""The retry contract shared by every job task, and the wrapper that moves the Job row through its states.

Tasks declare ``**JOB_TASK_OPTIONS`` (acks_late, time limits, autoretry on transient errors with
exponential backoff + jitter, a cap and a maximum) and call :func:`run_job`, which:
- claims the job: takes its lock and marks it RUNNING in one statement (a finished job is skipped and a copy
  that finds the lock taken is dropped: duplicate deliveries are harmless);
- on a transient error marks it RETRYING and re-raises for Celery to retry (honouring Retry-After);
  on the last attempt marks it FAILED with the reason instead: never left hanging;
- on a permanent error or a business-rule error marks it FAILED with the cluster's message at once;
- on success marks it SUCCEEDED with the operation's result (and the operation's own final writes, in the
  same statement, which also releases the lock) and, if asked, schedules the status poller first.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from models import DEFAULT_MAX_ATTEMPTS
from workers.cluster_errors import PermanentClusterError, TransientClusterError
from workers.domain import DomainError
from workers.job_lock import ClaimedJob, claimed_job
from workers.jobs import DeploymentChange
from workers.logs import log_context
from workers.queues import Queues

logger = logging.getLogger(__name__)

# Failures worth another attempt: the cluster (classified), the database (restart, failover), a hung call.
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (TransientClusterError, OperationalError, SoftTimeLimitExceeded)
MAX_RETRIES = DEFAULT_MAX_ATTEMPTS - 1  # retries after the first attempt: a job shows attempts <= max_attempts
RETRY_BACKOFF_SECONDS = 2
RETRY_BACKOFF_MAX_SECONDS = 60
SOFT_TIME_LIMIT_SECONDS = 120
TIME_LIMIT_SECONDS = 150

JOB_TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "autoretry_for": TRANSIENT_EXCEPTIONS,
    "retry_backoff": RETRY_BACKOFF_SECONDS,
    "retry_backoff_max": RETRY_BACKOFF_MAX_SECONDS,
    "retry_jitter": True,
    "max_retries": MAX_RETRIES,
    "soft_time_limit": SOFT_TIME_LIMIT_SECONDS,
    "time_limit": TIME_LIMIT_SECONDS,
    "queue": Queues.JOBS,
}

@dataclass(frozen=True)
class Outcome:
    """What an operation returns when more than its result must be written: ``change`` is written to the
    deployment by the same statement that marks the job SUCCEEDED, so neither happens alone."""

    result: dict[str, Any]
    change: DeploymentChange | None = None


# An operation gets the claimed job: its id, parameters and target (the deployment, read by the claim).
Operation = Callable[[ClaimedJob], "dict[str, Any] | Outcome"]
FailureHook = Callable[[str, dict[str, Any]], None]


def _error_of(error: BaseException) -> dict[str, Any]:
    if isinstance(error, TransientClusterError | PermanentClusterError):
        return error.to_job_error()
    if isinstance(error, DomainError):
        return {"code": error.code, "message": error.message, "retryable": False, "details": error.details}
    if isinstance(error, SoftTimeLimitExceeded):
        return {"code": "time_limit_exceeded", "message": "the operation ran past its time limit", "retryable": True}
    if isinstance(error, OperationalError):
        return {"code": "database_unavailable", "message": str(error.orig or error)[:500], "retryable": True}
    return {"code": "internal_error", "message": f"{type(error).__name__}: {error}"[:1000], "retryable": False}


def run_job(
    task: Any,
    job_id: str,
    operation: Operation,
    *,
    on_failure: FailureHook | None = None,
    after_success: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``operation(claimed job)`` under the job state machine (see module doc). ``task`` is the bound Celery task.

    Only one copy of a job runs at a time (:mod:`workers.job_lock`): a duplicate delivery that finds the job
    held by a live copy is dropped; that copy owns the job's retries, and if it dies its message comes back.
    """
    try:
        uuid.UUID(str(job_id))
    except ValueError:
        logger.error("job task called with a malformed id", extra={"job_id": job_id})
        return {"skipped": "malformed job id"}
    with claimed_job(job_id) as job:
        if not job.lock_held:
            logger.warning("duplicate delivery dropped: another copy of the job is running", extra={"job_id": job_id})
            return {"skipped": "another copy of the job is running"}
        if not job.started:
            return {"skipped": "job already finished"}
        with log_context(job_id=str(job_id)):
            return _run_claimed(task, job, operation, on_failure, after_success)


def _fail(job: ClaimedJob, error: dict[str, Any], on_failure: FailureHook | None) -> None:
    job.fail(error)
    if on_failure is not None:
        on_failure(job.job_id, error)


def _run_claimed(
    task: Any,
    job: ClaimedJob,
    operation: Operation,
    on_failure: FailureHook | None,
    after_success: Callable[[str, dict[str, Any]], None] | None,
) -> dict[str, Any]:
    attempt = int(getattr(task.request, "retries", 0) or 0)
    last_attempt = attempt >= int(task.max_retries if task.max_retries is not None else MAX_RETRIES)
    if job.cancel_requested:
        job.cancel("cancelled before it started")
        return {"skipped": "job already finished"}
    try:
        outcome = operation(job)
    except TRANSIENT_EXCEPTIONS as error:
        details = _error_of(error)
        if last_attempt:
            details = {**details, "message": f"gave up after {attempt + 1} attempts: {details['message']}"}
            logger.warning("job failed: retries exhausted", extra={"error": details})
            _fail(job, details, on_failure)
            return {"failed": details}
        job.mark_retrying(details)
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            raise task.retry(exc=error, countdown=retry_after) from error
        raise
    except (PermanentClusterError, DomainError) as error:
        details = _error_of(error)
        logger.warning("job failed", extra={"error": details})
        _fail(job, details, on_failure)
        return {"failed": details}
    except Exception as error:
        details = _error_of(error)
        logger.exception("job failed with an unexpected error")
        _fail(job, details, on_failure)
        raise
    if not isinstance(outcome, Outcome):
        outcome = Outcome(outcome)
    # Follow-up work (the status poller) is enqueued BEFORE the job is marked done: if the worker dies in
    # between, the redelivered job runs again (idempotently) and re-enqueues it, whereas in the other order
    # a finished job would be skipped on redelivery and its follow-up lost.
    if after_success is not None:
        after_success(job.job_id, outcome.result)
    job.succeed(outcome.result, change=outcome.change)
    return outcome.result
