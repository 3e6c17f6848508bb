"""Jobs committed but never enqueued are re-sent; jobs the broker still holds are left alone."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis

from models import Job, JobState, JobType, SweepRun, TargetKind
from workers.lost_jobs import broker_task_ids, requeue_lost_jobs

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def broker():
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"lost-jobs-test-{uuid.uuid4().hex[:8]}:"
    yield client, prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


def _job(session, age_seconds: float, state: JobState = JobState.PENDING) -> Job:
    job = Job(
        type=JobType.DEPLOYMENT_CREATE,
        state=state,
        requested_by="test",
        target_kind=TargetKind.DEPLOYMENT,
        target_id=str(uuid.uuid4()),
        created_at=datetime.now(UTC) - timedelta(seconds=age_seconds),
    )
    session.add(job)
    session.flush()
    return job


def _message(task_id: str) -> bytes:
    return json.dumps({"body": "", "headers": {"id": task_id, "task": "deployments.create"}}).encode()


def test_only_stale_pending_jobs_missing_from_the_broker_are_resent(db_session, broker):
    client, prefix = broker
    lost = _job(db_session, age_seconds=600)
    queued = _job(db_session, age_seconds=600)
    delivered = _job(db_session, age_seconds=600)
    fresh = _job(db_session, age_seconds=5)
    _job(db_session, age_seconds=600, state=JobState.SUCCEEDED)
    client.rpush(f"{prefix}jobs", _message(queued.celery_task_id))
    client.hset(f"{prefix}unacked", "tag-1", json.dumps([json.loads(_message(delivered.celery_task_id)), "", "jobs"]))

    sent: list[Job] = []
    report = requeue_lost_jobs(db_session, redis_client=client, key_prefix=prefix, enqueue=sent.append)

    assert [job.id for job in sent] == [lost.id]
    assert report.actions["requeued"] == 1
    assert report.items["stale_pending_jobs"] == 3
    assert fresh.id not in {job.id for job in sent}
    row = db_session.get(SweepRun, "lost_jobs")
    assert row is not None
    assert row.last_summary["requeued_job_ids"] == [str(lost.id)]


def test_broker_task_ids_reads_queues_and_unacked(broker):
    client, prefix = broker
    client.rpush(f"{prefix}sweeps", _message("a"))
    client.rpush(f"{prefix}jobs", b"not json")
    client.hset(f"{prefix}unacked", "t", json.dumps([json.loads(_message("b")), "", "jobs"]))
    assert broker_task_ids(client, prefix) == {"a", "b"}


def test_redis_down_skips_without_resending(db_session):
    _job(db_session, age_seconds=600)
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    sent: list[Job] = []
    report = requeue_lost_jobs(db_session, redis_client=unreachable, enqueue=sent.append)
    assert sent == []
    assert report.status == "skipped"
    assert "redis_unavailable" in report.skip_reason
