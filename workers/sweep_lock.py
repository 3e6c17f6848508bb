"""A Redis lock per sweep, so overlapping beat runs (two beat processes, a slow sweep) act once.

``SET key token NX PX ttl`` takes the lock atomically (no check-then-set race); the random token makes
release safe: a sweep that outlived its TTL must not delete the lock that a newer run now holds, so
release and extend are compare-and-act Lua scripts that touch the key only while it still holds our token.
The TTL bounds how long a crashed worker can block the next runs.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import redis

from settings import get_settings

DEFAULT_KEY_PREFIX = "orchestration:"
log = logging.getLogger(__name__)

# Delete the key only if it still holds our token (another holder's lock is left alone).
_RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""
# Push the expiry out only if we still hold the lock.
_EXTEND_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""

_client_lock = threading.Lock()


@lru_cache(maxsize=1)
def default_redis() -> redis.Redis:
    """The process's Redis client for REDIS_URL, built on first use (never at import)."""
    with _client_lock:
        return redis.Redis.from_url(get_settings().redis_url, socket_timeout=5, socket_connect_timeout=5)


def broker_key_prefix() -> str:
    """The broker's own ``global_keyprefix`` ("" when unset): where its queues and unacked hash live."""
    from workers.celery_app import app

    return (app.conf.broker_transport_options or {}).get("global_keyprefix", "")


def lock_key_prefix() -> str:
    """The key prefix for sweep state in a Celery worker: under the broker's own ``global_keyprefix`` if one
    is set, so installs (or test runs) sharing one Redis keep their queues and their sweep locks apart."""
    return f"{broker_key_prefix()}{DEFAULT_KEY_PREFIX}"


class SweepLock:
    """One named lock; ``acquire()`` is non-blocking (a sweep that finds it held simply skips)."""

    def __init__(
        self,
        name: str,
        ttl_seconds: float,
        *,
        client: Any | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self.name = name
        self.key = f"{key_prefix}sweep-lock:{name}"
        self.ttl_ms = int(ttl_seconds * 1000)
        self.client = client if client is not None else default_redis()
        self.token: str | None = None

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; True on success."""
        token = secrets.token_hex(16)
        if self.client.set(self.key, token, nx=True, px=self.ttl_ms):
            self.token = token
            return True
        return False

    def extend(self) -> bool:
        """Reset the TTL while a long sweep still runs; False if the lock was lost meanwhile."""
        if self.token is None:
            return False
        return bool(self.client.eval(_EXTEND_SCRIPT, 1, self.key, self.token, self.ttl_ms))

    def release(self) -> bool:
        """Give the lock back; False if it had expired and (maybe) passed to another run."""
        if self.token is None:
            return False
        token, self.token = self.token, None
        try:
            return bool(self.client.eval(_RELEASE_SCRIPT, 1, self.key, token))
        except redis.RedisError:
            # Redis went away mid-sweep: the work is done and committed, and the TTL frees the lock anyway.
            log.warning("could not release sweep lock %s; it expires on its own", self.key, exc_info=True)
            return False

    @property
    def held(self) -> bool:
        return self.token is not None


@contextmanager
def sweep_lock(
    name: str, ttl_seconds: float, *, client: Any | None = None, key_prefix: str = DEFAULT_KEY_PREFIX
) -> Iterator[SweepLock]:
    """Try the lock for the block; check ``lock.held`` inside it. Always released on exit."""
    lock = SweepLock(name, ttl_seconds, client=client, key_prefix=key_prefix)
    lock.acquire()
    try:
        yield lock
    finally:
        if lock.held:
            lock.release()


def run_locked(
    report: Any,
    name: str,
    ttl_seconds: float,
    work: Callable[[], None],
    *,
    client: Any | None = None,
    key_prefix: str = DEFAULT_KEY_PREFIX,
) -> bool:
    """Run one sweep's ``work`` under its lock; True if it ran.

    When Redis is down or another run holds the lock, the sweep is recorded as skipped on ``report`` (a
    :class:`~workers.sweep_metrics.SweepReport`) rather than failed: the next beat tick simply tries again.
    Errors raised by ``work`` itself propagate, after the lock is given back.
    """
    lock = SweepLock(name, ttl_seconds, client=client, key_prefix=key_prefix)
    try:
        acquired = lock.acquire()
    except redis.RedisError as error:
        report.skip(f"redis_unavailable: {error}")
        return False
    if not acquired:
        report.skip(f"another {name.replace('_', '-')} run holds the lock")
        return False
    try:
        work()
    finally:
        lock.release()
    return True
