"""The sweep lock against a real Redis: exclusive, token-safe release, TTL expiry, concurrent takers."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from workers.sweep_lock import SweepLock, sweep_lock


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"test-sweeps-{uuid.uuid4().hex[:8]}:"
    yield client, prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


def test_second_taker_is_refused_until_release(redis_client):
    client, prefix = redis_client
    first = SweepLock("health_monitor", 30, client=client, key_prefix=prefix)
    second = SweepLock("health_monitor", 30, client=client, key_prefix=prefix)
    assert first.acquire()
    assert not second.acquire()
    assert first.release()
    assert second.acquire()
    second.release()


def test_release_never_deletes_another_holders_lock(redis_client):
    client, prefix = redis_client
    stale = SweepLock("autoscaler", 0.05, client=client, key_prefix=prefix)
    assert stale.acquire()
    time.sleep(0.1)  # the TTL lapses; a new run takes the lock
    fresh = SweepLock("autoscaler", 30, client=client, key_prefix=prefix)
    assert fresh.acquire()
    assert not stale.release()  # the old holder's release must leave the new lock in place
    assert client.get(fresh.key) is not None
    assert not stale.extend()
    assert fresh.extend()
    fresh.release()
    assert client.get(fresh.key) is None


def test_only_one_of_many_concurrent_takers_wins(redis_client):
    client, prefix = redis_client
    barrier = threading.Barrier(16)
    winners = []

    def take():
        lock = SweepLock("resource_tracker", 30, client=client, key_prefix=prefix)
        barrier.wait()
        if lock.acquire():
            winners.append(lock)

    threads = [threading.Thread(target=take) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    winners[0].release()


def test_context_manager_releases(redis_client):
    client, prefix = redis_client
    with sweep_lock("x", 30, client=client, key_prefix=prefix) as lock:
        assert lock.held
        with sweep_lock("x", 30, client=client, key_prefix=prefix) as other:
            assert not other.held
    assert client.get(f"{prefix}sweep-lock:x") is None


def test_invalid_ttl():
    with pytest.raises(ValueError, match="ttl"):
        SweepLock("x", 0, client=object())
