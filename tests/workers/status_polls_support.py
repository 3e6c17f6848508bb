"""A status-poll schedule of a test's own: fresh Redis keys, and the pollers it would send recorded."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from workers import dispatch, status_polls

REDIS_URL = "redis://127.0.0.1:6379/0"


@contextmanager
def isolated_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[redis.Redis, status_polls.Keys, list[tuple[int, float]]]]:
    """Yields (client, keys, sent): the schedule's keys under a unique prefix on the real Redis, and each poller
    it sends as (scheduled_at_ms, countdown) instead of a Celery message. The keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"test-status-polls-{uuid.uuid4().hex[:8]}:"
    where = status_polls.Keys(due=f"{prefix}due", next=f"{prefix}next", leases=f"{prefix}leases")
    monkeypatch.setattr(status_polls, "keys", lambda: where)
    monkeypatch.setattr(status_polls, "default_redis", lambda: client)
    sent: list[tuple[int, float]] = []
    monkeypatch.setattr(dispatch, "send_status_poller", lambda at, countdown: sent.append((at, countdown)))
    try:
        yield client, where, sent
    finally:
        client.delete(*where.all())
