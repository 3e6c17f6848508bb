"""Re-send jobs that were committed but never reached the broker, and jobs whose worker died running them.

A POST commits the job row and then enqueues its task. If Redis refused the message, or the API process
died between the two, the job would stay PENDING forever and keep its deployment claimed ("one operation
at a time"), so nothing else could touch it. This sweep finds PENDING jobs older than a grace period whose
task id is neither waiting in a queue nor held unacknowledged by a worker, and sends them again with the
same task id. Tasks are idempotent and skip terminal jobs, so a message that turns up late anyway is harmless.

A worker process killed outright (its main process, not just a pool child) leaves its message unacknowledged
until the broker's visibility timeout (15 minutes) gives it back, and its job RUNNING all that time, the
deployment held. A deployment job's task holds the job's advisory lock on a connection of its own for as long
as it runs (``workers.job_lock``), and Postgres drops the lock with a dead worker's connection: a RUNNING
deployment job whose lock nobody holds has lost its worker, and is sent again at once (the copy the broker
restores later finds the job finished and skips it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from models import Job, JobState, TargetKind
from workers import dispatch
from workers.job_lock import job_lock_key
from workers.queues import Queues
from workers.sweep_lock import broker_key_prefix, default_redis
from workers.sweep_metrics import SweepReport, observed_sweep, summary_in_new_session

SWEEP_NAME = "lost_jobs"
DEFAULT_GRACE_SECONDS = 120
# A claim sets RUNNING and takes the lock in one statement: this only keeps the sweep off a job being claimed.
ORPHAN_GRACE_SECONDS = 30
UNACKED_KEY = "unacked"  # kombu's Redis transport keeps delivered-but-unacknowledged messages in this hash

log = logging.getLogger(__name__)


def stale_pending_jobs(session: Session, now: datetime, grace_seconds: float) -> list[Job]:
    """PENDING jobs created more than ``grace_seconds`` ago, oldest first."""
    cutoff = now - timedelta(seconds=grace_seconds)
    query = select(Job).where(Job.state == JobState.PENDING, Job.created_at < cutoff).order_by(Job.created_at)
    return list(session.execute(query).scalars())


def orphaned_running_jobs(session: Session, now: datetime, grace_seconds: float) -> list[Job]:
    """RUNNING deployment jobs, unchanged for ``grace_seconds``, whose advisory lock no session holds.

    Trying the lock is exact where a look at ``pg_locks`` would have to decode the key: taken, it was free (and is
    given back at once); refused, a live copy runs the job. Node jobs take no such lock (a drain stays RUNNING
    between its steps), so only deployment jobs are judged."""
    cutoff = now - timedelta(seconds=grace_seconds)
    candidates = session.execute(
        select(Job)
        .where(Job.state == JobState.RUNNING, Job.target_kind == TargetKind.DEPLOYMENT, Job.updated_at < cutoff)
        .order_by(Job.updated_at)
    ).scalars()
    orphaned = []
    for job in candidates:
        key = job_lock_key(job.id)
        if session.execute(_TRY_LOCK, {"key": key}).scalar():
            session.execute(_UNLOCK, {"key": key})
            orphaned.append(job)
    return orphaned


_TRY_LOCK = text("SELECT pg_try_advisory_lock(:key)")
_UNLOCK = text("SELECT pg_advisory_unlock(:key)")


def _task_id(raw_message: bytes | str) -> str | None:
    try:
        message = json.loads(raw_message)
    except ValueError:
        return None
    if isinstance(message, list) and message:  # unacked entries are [message, exchange, routing_key]
        message = message[0]
    if not isinstance(message, dict):
        return None
    return (message.get("headers") or {}).get("id")


def broker_task_ids(client: redis.Redis, key_prefix: str, queues: Iterable[str] = Queues.all()) -> set[str]:
    """Task ids the broker still holds: waiting in a queue, or delivered to a worker and not yet acked."""
    found: set[str] = set()
    for queue in queues:
        found.update(filter(None, (_task_id(raw) for raw in client.lrange(f"{key_prefix}{queue}", 0, -1))))
    found.update(filter(None, (_task_id(raw) for raw in client.hvals(f"{key_prefix}{UNACKED_KEY}"))))
    return found


def broker_holds_task(task_id: str) -> bool:
    """Whether the broker still holds ``task_id``: waiting in a queue, or delivered and not yet acknowledged.

    A replayed request re-sends its PENDING job only when this is False. Re-sending a message a worker has
    already received ran the job twice at once (a worker may claim a RUNNING job again, for redelivery after
    a crash), and the two runs raced each other on the cluster. Raises ``redis.RedisError`` if Redis is down.
    """
    from workers.celery_app import app

    # A plain client on the broker URL: kombu's own client adds the global_keyprefix itself, and
    # broker_task_ids expects to add it.
    client = redis.Redis.from_url(app.conf.broker_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return task_id in broker_task_ids(client, broker_key_prefix())
    finally:
        client.close()


def requeue_lost_jobs(
    session: Session,
    *,
    redis_client: redis.Redis,
    key_prefix: str = "",
    now: datetime | None = None,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    enqueue: Callable[[Job], None] = dispatch.enqueue,
) -> SweepReport:
    """One sweep: re-send every stale PENDING job the broker no longer knows about, and every RUNNING deployment
    job whose worker died (see the module doc)."""
    now = now or datetime.now(UTC)
    with observed_sweep(session, SWEEP_NAME) as report:
        orphaned = orphaned_running_jobs(session, now, ORPHAN_GRACE_SECONDS)
        report.items["orphaned_running_jobs"] = len(orphaned)
        for job in orphaned:
            enqueue(job)
            log.warning("re-sent a job whose worker died", extra={"job_id": str(job.id), "job_type": str(job.type)})
        if orphaned:
            report.actions["resent_orphaned"] = len(orphaned)
            report.details["resent_orphaned_job_ids"] = [str(job.id) for job in orphaned]
        stale = stale_pending_jobs(session, now, grace_seconds)
        report.items["stale_pending_jobs"] = len(stale)
        if not stale:
            return report
        try:
            in_broker = broker_task_ids(redis_client, key_prefix)
        except redis.RedisError as error:
            report.skip(f"redis_unavailable: {error}")
            return report
        requeued: list[str] = []
        for job in stale:
            if job.celery_task_id in in_broker:
                continue
            enqueue(job)
            requeued.append(str(job.id))
            log.warning("re-sent lost job", extra={"job_id": str(job.id), "job_type": str(job.type)})
        report.actions["requeued"] = len(requeued)
        report.details["requeued_job_ids"] = requeued
    return report


def lost_jobs_sweep() -> dict[str, Any]:
    """The ``sweeps.requeue_lost_jobs`` task's body: one run in a fresh session."""
    return summary_in_new_session(requeue_lost_jobs, redis_client=default_redis(), key_prefix=broker_key_prefix())
