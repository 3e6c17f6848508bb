"""One running copy per job: the advisory lock that drops duplicate deliveries."""

from __future__ import annotations

import threading
import uuid

from sqlalchemy import text

from models.db import get_engine
from workers.job_lock import claimed_job, job_lock_key


def test_second_copy_is_refused_while_the_first_runs_and_admitted_after(database_url):
    job_id = uuid.uuid4()
    with claimed_job(job_id) as first:
        assert first.lock_held is True
        outcome: list[bool] = []

        def second_copy() -> None:
            # Its own pooled connection, as another worker process would have.
            with claimed_job(job_id) as second:
                outcome.append(second.lock_held)

        thread = threading.Thread(target=second_copy)
        thread.start()
        thread.join()
        assert outcome == [False]
    with claimed_job(job_id) as again:
        assert again.lock_held is True


def test_other_jobs_are_not_blocked(database_url):
    with claimed_job(uuid.uuid4()) as first, claimed_job(uuid.uuid4()) as second:
        assert first.lock_held is True
        assert second.lock_held is True


def test_lock_dies_with_its_connection(database_url):
    """A worker killed mid-task loses its connection, and with it the lock: the redelivered copy runs."""
    job_id = uuid.uuid4()
    engine = get_engine()
    holder = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    assert holder.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": job_lock_key(job_id)}).scalar()
    with claimed_job(job_id) as while_held:
        assert while_held.lock_held is False
    pid = holder.execute(text("SELECT pg_backend_pid()")).scalar()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    holder.invalidate()
    with claimed_job(job_id) as after_death:
        assert after_death.lock_held is True


def test_run_job_drops_a_duplicate_delivery_without_touching_the_job(db_session):
    from types import SimpleNamespace

    from models import Job, JobState, JobType, TargetKind
    from workers.job_runner import run_job

    job = Job(type=JobType.DEPLOYMENT_CREATE, requested_by="t", target_kind=TargetKind.DEPLOYMENT, target_id="x")
    db_session.add(job)
    db_session.commit()
    calls: list[str] = []
    task = SimpleNamespace(request=SimpleNamespace(retries=0), max_retries=5)
    with claimed_job(job.id):
        outcome: list[dict] = []
        thread = threading.Thread(target=lambda: outcome.append(run_job(task, str(job.id), calls.append)))
        thread.start()
        thread.join()
    assert outcome == [{"skipped": "another copy of the job is running"}]
    assert calls == []
    db_session.refresh(job)
    assert (job.state, job.attempts) == (JobState.PENDING, 0)
