"""Hand a committed job to Celery.

Call only AFTER the transaction that wrote the job has committed: a worker can pick the message up
within milliseconds, and a job row it cannot see yet (or that is rolled back) would make it fail or
act on a request that never happened. If enqueueing fails after the commit, the job stays PENDING
with its pre-generated ``celery_task_id``; re-enqueueing it (same task id) is safe because tasks are
idempotent and skip terminal jobs.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from kombu.exceptions import BatchPublishError

from models import Job, JobType
from workers.queues import TASK_FOR_JOB_TYPE, Queues, TaskNames

logger = logging.getLogger(__name__)


def enqueue(job: Job, **options: Any) -> None:
    """Send the task for ``job.type`` with the job id as its only argument."""
    _send(
        TASK_FOR_JOB_TYPE[JobType(job.type)],
        args=[str(job.id)],
        task_id=job.celery_task_id,
        queue=Queues.JOBS,
        **options,
    )


def send_status_poller(scheduled_at_ms: int, countdown: float) -> None:
    """Send the status poller (:mod:`workers.status_polls`) to run ``countdown`` seconds from now; it is told the
    time it was sent for, so it can tell whether it is the one the schedule is waiting for."""
    _send(TaskNames.POLL_STATUS, args=[scheduled_at_ms], queue=Queues.JOBS, countdown=countdown)


def _send(name: str, **options: Any) -> None:
    """``app.send_task`` with the task message and its ``task-sent`` event sent as one publish batch: one Redis
    pipeline, so one Redis client and one round trip, where publishing them one by one builds a client and
    waits for Redis once per message. A batch is not retried by kombu, so one that fails is sent again the
    ordinary way, which retries a lost connection by the app's publish retry policy.

    Delivery of a failed batch is uncertain: the message may have reached Redis before the connection failed.
    Sending it again is safe (a job task has the same task id, skips jobs that already ended and is idempotent;
    a second status poll changes nothing), losing it is not."""
    from workers.celery_app import app

    send = partial(app.send_task, name, **options)
    try:
        with app.producer_or_acquire() as producer, producer.batch():
            send(producer=producer)
    except BatchPublishError:
        logger.warning("task publish batch failed; sending the task again", extra={"task_name": name})
        send()
