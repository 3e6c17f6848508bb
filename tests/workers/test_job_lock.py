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
        # Without a timeout the call only signals the backend; with one it returns once the backend has
        # exited, which is after it released its advisory locks.
        assert admin.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid}).scalar()
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


def _committed_create_job(status="PENDING"):
    """A deployment held by its create job, committed for real (claims run on their own connections)."""
    from models import Deployment, DeploymentStatus, Job, JobType, TargetKind, Tenant
    from models.db import session_scope

    deployment_id = uuid.uuid4()
    job = Job(
        type=JobType.DEPLOYMENT_CREATE,
        requested_by="t",
        target_kind=TargetKind.DEPLOYMENT,
        target_id=str(deployment_id),
    )
    with session_scope() as session:
        if session.get(Tenant, "acme") is None:
            session.add(Tenant(id="acme", name="acme"))
        session.add(job)
        session.flush()
        session.add(
            Deployment(
                id=deployment_id,
                tenant_id="acme",
                model_id="org/model",
                name=f"m-{deployment_id.hex[:8]}",
                k8s_name=f"m-{deployment_id.hex[:8]}",
                k8s_namespace="model-serving",
                image="vllm",
                gpu_type="nvidia-l40s",
                replicas_desired=1,
                gpus_per_replica=1,
                status=DeploymentStatus(status),
                active_job_id=job.id,
            )
        )
    return job.id, deployment_id


def _lock_is_free(job_id) -> bool:
    # A connection of its own, never a pooled one: advisory locks are re-entrant, so the pooled connection that
    # holds a leaked lock would report it free.
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    probe_engine = create_engine(get_engine().url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with probe_engine.connect() as probe:
        taken = probe.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": job_lock_key(job_id)}).scalar()
        if taken:
            probe.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": job_lock_key(job_id)})
        return bool(taken)


def test_finishing_statement_ends_job_writes_deployment_and_releases_lock_together(clean_tables):
    from models import Deployment, DeploymentStatus, Job, JobState
    from models.db import get_sessionmaker
    from workers.deployments import _CREATING_AFTER_APPLY
    from workers.jobs import DeploymentChange

    job_id, deployment_id = _committed_create_job()
    with claimed_job(job_id) as job:
        assert (job.lock_held, job.started, job.cancel_requested) == (True, True, False)
        assert not _lock_is_free(job_id)
        job.succeed({"ok": True}, change=DeploymentChange(deployment_id, _CREATING_AFTER_APPLY))
        assert job.lock_held is False
        # Released by the ending statement itself, while the claim's connection is still open.
        assert _lock_is_free(job_id)
    with get_sessionmaker()() as session:
        row = session.get(Job, job_id)
        deployment = session.get(Deployment, deployment_id)
        assert (row.state, row.attempts, row.result) == (JobState.SUCCEEDED, 1, {"ok": True})
        # Both writes to the deployment row landed: the change and the release (one UPDATE, not two).
        assert (deployment.status, deployment.active_job_id) == (DeploymentStatus.CREATING, None)


def test_creating_change_leaves_a_deployment_that_moved_on_alone(clean_tables):
    from models import Deployment, DeploymentStatus
    from models.db import get_sessionmaker
    from workers.deployments import _CREATING_AFTER_APPLY
    from workers.jobs import DeploymentChange

    job_id, deployment_id = _committed_create_job(status="DELETING")
    with claimed_job(job_id) as job:
        job.succeed({}, change=DeploymentChange(deployment_id, _CREATING_AFTER_APPLY))
    with get_sessionmaker()() as session:
        deployment = session.get(Deployment, deployment_id)
        assert (deployment.status, deployment.active_job_id) == (DeploymentStatus.DELETING, None)


def test_claiming_a_finished_job_starts_nothing_and_keeps_no_lock(clean_tables):
    from models import Job, JobState
    from models.db import get_sessionmaker

    job_id, _ = _committed_create_job()
    with claimed_job(job_id) as job:
        job.fail({"code": "x", "message": "failed", "retryable": False})
    with claimed_job(job_id) as again:
        assert (again.lock_held, again.started) == (True, False)
    assert _lock_is_free(job_id)
    with get_sessionmaker()() as session:
        assert (session.get(Job, job_id).state, session.get(Job, job_id).attempts) == (JobState.FAILED, 1)


def test_lock_is_released_when_the_job_raises_midway(clean_tables):
    from models import Job, JobState
    from models.db import get_sessionmaker

    job_id, _ = _committed_create_job()
    try:
        with claimed_job(job_id) as job:
            job.mark_retrying({"code": "cluster_unavailable", "message": "503", "retryable": True})
            raise RuntimeError("the operation failed")
    except RuntimeError:
        assert _lock_is_free(job_id)
    with get_sessionmaker()() as session:
        assert session.get(Job, job_id).state == JobState.RETRYING


def test_a_claim_that_fails_midway_leaves_no_lock_behind(clean_tables):
    """Cancelled while waiting for the job row (after the lock was taken): the lock must not stay pooled."""
    from sqlalchemy.exc import OperationalError

    job_id, _ = _committed_create_job()
    engine = get_engine()
    errors: list[BaseException] = []
    with engine.connect() as holder:
        holder.execute(text("SELECT 1 FROM orchestration.jobs WHERE id = :id FOR UPDATE"), {"id": job_id})

        def claim() -> None:
            try:
                with claimed_job(job_id):
                    errors.append(AssertionError("the claim should have been cancelled"))
            except OperationalError as error:
                errors.append(error)

        thread = threading.Thread(target=claim)
        thread.start()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
            for _ in range(200):
                waiting = admin.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE '%pg_try_advisory_lock%'"
                    )
                ).scalar()
                if waiting:
                    admin.execute(text("SELECT pg_cancel_backend(:pid)"), {"pid": waiting})
                    break
                threading.Event().wait(0.02)
            thread.join(timeout=10)
        holder.rollback()
    assert len(errors) == 1
    assert isinstance(errors[0], OperationalError)
    assert _lock_is_free(job_id)


def test_an_ending_that_fails_keeps_the_lock_until_the_claim_lets_go(clean_tables):
    """The job's writes run before the unlock in the ending statement: if one fails, nothing was released."""
    from sqlalchemy.exc import DBAPIError

    from models import Job, JobState
    from models.db import get_sessionmaker
    from workers.deployments import _CREATING_AFTER_APPLY
    from workers.jobs import DeploymentChange

    job_id, deployment_id = _committed_create_job()
    with get_engine().begin() as setup:
        setup.execute(
            text(
                "CREATE FUNCTION orchestration.refuse_creating() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN IF NEW.status = 'CREATING' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$"
            )
        )
        setup.execute(
            text(
                "CREATE TRIGGER refuse_creating BEFORE UPDATE ON orchestration.deployments "
                "FOR EACH ROW EXECUTE FUNCTION orchestration.refuse_creating()"
            )
        )
    try:
        with claimed_job(job_id) as job:
            try:
                job.succeed({}, change=DeploymentChange(deployment_id, _CREATING_AFTER_APPLY))
            except DBAPIError:
                assert job.lock_held is True
                assert not _lock_is_free(job_id)
            else:
                raise AssertionError("the refused write should have failed the ending")
        assert _lock_is_free(job_id)
        with get_sessionmaker()() as session:
            assert session.get(Job, job_id).state == JobState.RUNNING
    finally:
        with get_engine().begin() as cleanup:
            cleanup.execute(text("DROP TRIGGER refuse_creating ON orchestration.deployments"))
            cleanup.execute(text("DROP FUNCTION orchestration.refuse_creating()"))


def test_the_claim_reads_the_job_and_its_deployment(clean_tables):
    job_id, deployment_id = _committed_create_job()
    with claimed_job(job_id) as job:
        assert job.started is True
        assert job.target_id == str(deployment_id)
        assert job.deployment is not None
        assert (job.deployment.id, job.deployment.status, job.deployment.replicas_desired) == (
            deployment_id,
            "PENDING",
            1,
        )
        assert job.deployment.k8s_name == f"m-{deployment_id.hex[:8]}"


def test_the_claim_finds_the_deployment_by_any_uuid_spelling_postgres_accepts(clean_tables):
    from models import Job, JobType, TargetKind
    from models.db import session_scope

    _, deployment_id = _committed_create_job()
    for spelling in (deployment_id.hex, "{" + str(deployment_id).upper() + "}"):
        job = Job(
            type=JobType.DEPLOYMENT_CREATE, requested_by="t", target_kind=TargetKind.DEPLOYMENT, target_id=spelling
        )
        with session_scope() as session:
            session.add(job)
        with claimed_job(job.id) as claimed:
            assert claimed.deployment is not None
            assert claimed.deployment.id == deployment_id
            claimed.cancel("test over")


def test_a_job_whose_deployment_is_missing_or_malformed_claims_without_one(clean_tables):
    """The target id is text: a malformed one must not break the claim, only leave it without a deployment,
    which the operation then reports (FAILED, deployment_not_found) instead of retrying forever."""
    from types import SimpleNamespace

    from models import Job, JobState, JobType, TargetKind
    from models.db import session_scope
    from workers.deployments import execute_create, fail_create
    from workers.job_runner import run_job

    for target in (str(uuid.uuid4()), "not-a-uuid"):  # missing, malformed
        job = Job(type=JobType.DEPLOYMENT_CREATE, requested_by="t", target_kind=TargetKind.DEPLOYMENT, target_id=target)
        with session_scope() as session:
            session.add(job)
        with claimed_job(job.id) as claimed:
            assert (claimed.started, claimed.deployment) == (True, None)
            claimed.cancel("test over")  # ends it, so run_job below meets a fresh one
    job = Job(type=JobType.DEPLOYMENT_CREATE, requested_by="t", target_kind=TargetKind.DEPLOYMENT, target_id="x")
    with session_scope() as session:
        session.add(job)
    task = SimpleNamespace(request=SimpleNamespace(retries=0), max_retries=5)
    # With the real failure hook, which has no deployment to mark FAILED either.
    outcome = run_job(task, str(job.id), execute_create, on_failure=fail_create)
    assert outcome["failed"]["code"] == "deployment_not_found"
    with session_scope() as session:
        assert session.get(Job, job.id).state == JobState.FAILED
