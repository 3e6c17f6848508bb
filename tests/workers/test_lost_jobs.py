"""Jobs committed but never enqueued are re-sent; jobs the broker still holds are left alone."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import text

from models import Job, JobState, JobType, SweepRun, TargetKind
from workers.job_lock import job_lock_key
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
    then = datetime.now(UTC) - timedelta(seconds=age_seconds)
    job = Job(
        type=JobType.DEPLOYMENT_CREATE,
        state=state,
        requested_by="test",
        target_kind=TargetKind.DEPLOYMENT,
        target_id=str(uuid.uuid4()),
        created_at=then,
        updated_at=then,
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


def test_a_running_job_whose_worker_died_is_resent_and_a_live_one_is_not(db_session, broker, db_engine):
    """A live copy holds the job's advisory lock on its own connection; a killed worker's connection, and with
    it the lock, is gone. Only the job nobody holds is sent again (its unacked message would wait 15 minutes)."""
    client, prefix = broker
    orphaned = _job(db_session, age_seconds=300, state=JobState.RUNNING)
    alive = _job(db_session, age_seconds=300, state=JobState.RUNNING)
    just_claimed = _job(db_session, age_seconds=5, state=JobState.RUNNING)
    db_session.commit()
    with db_engine.connect() as worker_connection:  # the live worker's lock connection
        assert worker_connection.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                         {"key": job_lock_key(alive.id)}).scalar()

        sent: list[Job] = []
        report = requeue_lost_jobs(db_session, redis_client=client, key_prefix=prefix, enqueue=sent.append)

        assert [job.id for job in sent] == [orphaned.id]
        assert report.actions["resent_orphaned"] == 1
        assert just_claimed.id not in {job.id for job in sent}
        # The sweep gave back the lock it tried: the redelivered copy can take it.
        assert db_session.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                       " AND pid = pg_backend_pid()")).scalar() == 0
