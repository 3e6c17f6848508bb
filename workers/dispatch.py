"""Hand a committed job to Celery.

Call only AFTER the transaction that wrote the job has committed: a worker can pick the message up
within milliseconds, and a job row it cannot see yet (or that is rolled back) would make it fail or
act on a request that never happened. If enqueueing fails after the commit, the job stays PENDING
with its pre-generated ``celery_task_id``; re-enqueueing it (same task id) is safe because tasks are
idempotent and skip terminal jobs.
"""

from __future__ import annotations

from typing import Any

from models import Job, JobType
from workers.queues import TASK_FOR_JOB_TYPE, Queues, TaskNames


def enqueue(job: Job, **options: Any) -> None:
    """Send the task for ``job.type`` with the job id as its only argument."""
    from workers.celery_app import app

    app.send_task(
        TASK_FOR_JOB_TYPE[JobType(job.type)],
        args=[str(job.id)],
        task_id=job.celery_task_id,
        queue=Queues.JOBS,
        **options,
    )


def enqueue_observe(deployment_id: Any, countdown: float = 0) -> None:
    """Schedule a status poll of the deployment (a short task that re-enqueues itself until it settles)."""
    from workers.celery_app import app

    app.send_task(TaskNames.OBSERVE, args=[str(deployment_id)], queue=Queues.JOBS, countdown=countdown)
