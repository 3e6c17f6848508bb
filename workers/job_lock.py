"""One running copy per job: a session-level Postgres advisory lock held while a job's task runs.

``acks_late`` redelivery and idempotent replays can hand a job's message to a second worker while the first
copy is still alive; both would then act on the cluster and race on the job row. The lock lets only one copy
run. It lives on a connection of its own, outside any transaction, so a worker killed mid-task loses it with
its connection: Postgres releases it at once and the redelivered copy takes over without waiting for a TTL.

Round trips are what a job pays most for, so taking the lock and starting the job is one statement
(:func:`workers.jobs.claim`), and ending the job releases the lock in the ending statement itself.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from models.db import get_engine
from workers import jobs

log = logging.getLogger(__name__)


def job_lock_key(job_id: uuid.UUID | str) -> int:
    """A signed 64-bit advisory-lock key from the job's UUID (its first 8 bytes)."""
    job_uuid = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    return int.from_bytes(job_uuid.bytes[:8], "big", signed=True)


@dataclass
class ClaimedJob:
    """A job this process holds the lock of, with the connection that holds it.

    ``lock_held`` is False when another live copy holds the job (nothing was changed) and once an ending
    statement has released the lock. ``started``: the job is now RUNNING (False: it had already ended).
    ``params``, ``target_id`` and ``deployment`` (a deployment job's deployment) were read by the claim."""

    job_id: str
    connection: Connection
    lock_key: int
    lock_held: bool
    started: bool
    cancel_requested: bool
    params: dict[str, Any] = field(default_factory=dict)
    target_id: str | None = None
    deployment: jobs.DeploymentRow | None = None

    def succeed(self, result: dict[str, Any], change: jobs.DeploymentChange | None = None) -> None:
        jobs.succeed(self.connection, self.job_id, result, change=change, unlock_key=self.lock_key)
        self.lock_held = False

    def fail(self, error: dict[str, Any]) -> None:
        jobs.fail(self.connection, self.job_id, error, unlock_key=self.lock_key)
        self.lock_held = False

    def cancel(self, reason: str) -> None:
        jobs.cancel(self.connection, self.job_id, reason, unlock_key=self.lock_key)
        self.lock_held = False

    def mark_retrying(self, error: dict[str, Any]) -> None:
        jobs.mark_retrying(self.connection, self.job_id, error)


@contextmanager
def claimed_job(job_id: uuid.UUID | str) -> Iterator[ClaimedJob]:
    """Claim the job (lock + RUNNING, one statement); the lock is released on exit if nothing ended the job."""
    key = job_lock_key(job_id)
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        try:
            found = jobs.claim(connection, job_id, key)
        except Exception:
            # The statement may have taken the lock before it failed (cancelled, timed out waiting for the
            # job row), and a session-level lock outlives the rollback: this connection must not be pooled.
            connection.invalidate()
            raise
        # Every field of the claim, as read (lock_held then changes as the job ends).
        claimed = ClaimedJob(job_id=str(job_id), connection=connection, lock_key=key, **vars(found))
        try:
            yield claimed
        finally:
            if claimed.lock_held:
                try:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                except Exception:
                    # A pooled connection must never keep the lock: drop the connection instead.
                    log.exception("could not release a job lock; discarding its connection")
                    connection.invalidate()
