"""One running copy per job: a session-level Postgres advisory lock held while a job's task runs.

``acks_late`` redelivery and idempotent replays can hand a job's message to a second worker while the first
copy is still alive; both would then act on the cluster and race on the job row. The lock lets only one copy
run. It lives on a connection of its own, outside any transaction, so a worker killed mid-task loses it with
its connection: Postgres releases it at once and the redelivered copy takes over without waiting for a TTL.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from models.db import get_engine

log = logging.getLogger(__name__)


def job_lock_key(job_id: uuid.UUID | str) -> int:
    """A signed 64-bit advisory-lock key from the job's UUID (its first 8 bytes)."""
    job_uuid = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    return int.from_bytes(job_uuid.bytes[:8], "big", signed=True)


@contextmanager
def exclusive_job_run(job_id: uuid.UUID | str) -> Iterator[bool]:
    """Yield True if this process now holds the job's lock, False if another live copy holds it."""
    key = job_lock_key(job_id)
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        acquired = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar())
        try:
            yield acquired
        finally:
            if acquired:
                try:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                except Exception:
                    # A pooled connection must never keep the lock: drop the connection instead.
                    log.exception("could not release a job lock; discarding its connection")
                    connection.invalidate()
