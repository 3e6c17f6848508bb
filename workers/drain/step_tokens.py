"""Which task message may run a drain's next step: the one holding the latest token, or one adopting a lost step."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from models import Job
from workers.drain.progress import now

# A re-enqueued step that has not run this long after it was due is considered lost (the worker that
# should have sent it died between commit and send); a redelivered older message may then adopt the job.
LOST_STEP_GRACE_SECONDS = 120


def seconds_until_adoptable(job: Job, step_token: str) -> float:
    """0 if ``step_token`` may run the job's next step now, else how long until it may.

    Only the latest scheduled step acts. An older message (a redelivery after a worker died) may adopt the
    job once the latest step is overdue by LOST_STEP_GRACE_SECONDS: that step's message was lost (the
    worker died between committing the step and sending the next message).
    """
    progress = job.progress or {}
    current = progress.get("step_token") or job.celery_task_id
    if current == step_token:
        return 0.0
    due_at = progress.get("step_due_at")
    if due_at is None:
        return float(LOST_STEP_GRACE_SECONDS)
    adoptable_at = datetime.fromisoformat(due_at) + timedelta(seconds=LOST_STEP_GRACE_SECONDS)
    return max((adoptable_at - now()).total_seconds(), 0.0)


def issue_next_token(progress: dict[str, Any], countdown: float | None) -> str:
    """Record a fresh token for the next step and when it is due; the task sends its message with this id."""
    next_token = str(uuid.uuid4())
    progress["step_token"] = next_token
    progress["step_due_at"] = (now() + timedelta(seconds=countdown or 0)).isoformat()
    return next_token
