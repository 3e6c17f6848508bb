"""The second half of every change request: commit, then enqueue, then answer 202.

Committing first means a worker can never pick up a job id whose row is not yet visible; enqueueing
after the commit means a rolled-back request never leaves a task behind. If the broker is down after the
commit, the job row still exists (PENDING): the client gets 503 ``queue_unavailable`` with the job id, and a
retry with the same Idempotency-Key replays that job and sends it again.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app, url_for
from redis.exceptions import RedisError

from models import JobState, JobType
from web.database import request_session
from web.errors import ApiError
from web.observability import api_metrics
from workers import dispatch
from workers.lost_jobs import broker_holds_task
from workers.node_ops import NodeJobSubmitted
from workers.requests import Submitted

logger = logging.getLogger(__name__)


def commit_and_enqueue(submitted: Submitted | NodeJobSubmitted) -> None:
    session = request_session()
    session.commit()
    job = submitted.job
    # A replay of a job that never started is sent again, but only if the broker no longer holds its
    # message: the first request may have committed and then failed to reach the broker. A message that is
    # still queued, or already delivered to a worker, must not be doubled: both copies would run the job.
    if submitted.replayed and (JobState(job.state) != JobState.PENDING or _broker_holds(job)):
        return
    try:
        dispatch.enqueue(job)
    except Exception as error:
        logger.exception("job committed but not enqueued", extra={"job_id": str(job.id)})
        raise ApiError(
            503,
            "queue_unavailable",
            "The job was recorded but could not be queued; retry with the same Idempotency-Key to send it again.",
            {"job_id": str(job.id)},
        ) from error
    if not submitted.replayed:
        api_metrics(current_app).jobs_submitted.labels(JobType(job.type).value).inc()
    logger.info(
        "job submitted",
        extra={"job_id": str(job.id), "job_type": str(job.type), "replayed": submitted.replayed},
    )


def _broker_holds(job: Any) -> bool:
    try:
        return broker_holds_task(job.celery_task_id)
    except RedisError:
        return False  # the enqueue below fails the same way and answers 503 queue_unavailable


def accepted_response(submitted: Submitted) -> tuple[dict[str, Any], int, dict[str, str]]:
    """202 with the job to poll; ``Location`` points at the job."""
    job = submitted.job
    deployment_id = submitted.deployment.id if submitted.deployment is not None else job.target_id
    job_url = url_for("Jobs.JobById", job_id=job.id)
    body = {
        "job_id": job.id,
        "deployment_id": deployment_id,
        "state": JobState(job.state).value,
        "status_url": url_for("Deployments.DeploymentStatusById", deployment_id=deployment_id),
        "job_url": job_url,
        "replayed": submitted.replayed,
    }
    return accepted(body, job_url, replayed=submitted.replayed)


def accepted(body: dict[str, Any], job_url: str, *, replayed: bool) -> tuple[dict[str, Any], int, dict[str, str]]:
    """202 with ``body``; ``Location`` is the job to poll, ``Idempotent-Replayed`` marks a replayed request."""
    headers = {"Location": job_url}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return body, 202, headers
