"""workers.requests: business rules, idempotency, one operation at a time; and workers.jobs transitions."""

from __future__ import annotations

import uuid

import pytest
from psycopg import _queries as psycopg_queries
from sqlalchemy import inspect, select

from models import (
    Deployment,
    DeploymentStatus,
    GpuReservation,
    Job,
    JobState,
    JobType,
    ScalingEvent,
    ScalingEventStatus,
)
from tests.workers.sweeps_support import StatementCounter
from workers import jobs
from workers.domain import ConflictError, InvalidRequestError, NotFoundError
from workers.requests import (
    CreateDeploymentSpec,
    _created_rows_statement,
    default_name,
    k8s_name_for,
    request_create,
    request_delete,
    request_restart,
    request_scale,
)

from .conftest import add_nodes, add_tenant


@pytest.fixture
def cluster(db_session):
    add_tenant(db_session, "acme")
    add_tenant(db_session, "other")
    add_nodes(db_session, {"l40s-0": ("nvidia-l40s", 8), "l40s-1": ("nvidia-l40s", 8)})
    return db_session


def create(session, tenant="acme", key=None, fingerprint=None, **spec):
    values = {"model_id": "meta-llama/Llama-3.1-8B-Instruct", "replicas": 1, "gpus_per_replica": 1}
    values.update(spec)
    return request_create(
        session,
        tenant_id=tenant,
        spec=CreateDeploymentSpec(**values),
        requested_by="svc",
        idempotency_key=key,
        fingerprint=fingerprint,
    )


def running(session, submitted):
    """Finish the create job and mark the deployment RUNNING, as the worker and poller would."""
    jobs.start(session, submitted.job.id)
    jobs.succeed(session, submitted.job.id, {})
    submitted.deployment.status = DeploymentStatus.RUNNING
    session.flush()
    session.refresh(submitted.deployment)
    return submitted.deployment


def test_names():
    name = default_name("meta-llama/Llama-3.1-8B-Instruct")
    assert name.startswith("llama-3-1-8b-instruct-")
    assert len(name) <= 63
    long_name = "a" * 60
    trimmed = k8s_name_for(long_name, "tenant-with-a-long-id")
    assert len(trimmed) == 63
    assert trimmed != k8s_name_for(long_name, "tenant-with-a-long-ie")
    assert k8s_name_for("llama", "acme") == "llama-acme"
    assert default_name("Org/123-Model").startswith("model-")
    assert k8s_name_for("foo-bar", "baz") == k8s_name_for("foo", "bar-baz")  # why the next test exists
    assert k8s_name_for("foo-bar", "baz", disambiguate=True) != k8s_name_for("foo", "bar-baz", disambiguate=True)


def test_two_tenants_whose_names_make_one_cluster_name_both_get_a_deployment(db_session):
    add_tenant(db_session, "baz")
    add_tenant(db_session, "bar-baz")
    add_nodes(db_session, {"l40s-0": ("nvidia-l40s", 8)})

    first = create(db_session, tenant="baz", name="foo-bar")
    second = create(db_session, tenant="bar-baz", name="foo")

    assert first.deployment.k8s_name == "foo-bar-baz"
    assert second.deployment.k8s_name.startswith("foo-bar-baz-")
    assert second.deployment.k8s_name != first.deployment.k8s_name


def test_create_writes_deployment_job_and_claim(cluster):
    submitted = create(cluster, name="llama", vllm_args=["--max-num-seqs", "8"])
    deployment, job = submitted.deployment, submitted.job
    assert not submitted.replayed
    assert deployment.status == DeploymentStatus.PENDING
    assert deployment.k8s_name == "llama-acme"
    assert deployment.endpoint == "http://llama-acme.model-serving.svc.cluster.local:8000"
    assert deployment.vllm_args == ["--max-num-seqs=8"]
    assert deployment.active_job_id == job.id
    assert job.type == JobType.DEPLOYMENT_CREATE
    assert job.state == JobState.PENDING
    assert job.target_id == str(deployment.id)
    assert job.celery_task_id


def column_values(instance):
    return {attribute.key: getattr(instance, attribute.key) for attribute in inspect(type(instance)).column_attrs}


def test_create_writes_its_rows_in_one_statement_after_the_admission_read(cluster):
    with StatementCounter(cluster.connection()) as counter:
        submitted = create(cluster, name="llama", replicas=3, gpus_per_replica=4)
        # Every column is already loaded, as a flush would have left it: reading them costs no statement.
        written = {instance: column_values(instance) for instance in (submitted.job, submitted.deployment)}
    statements = counter.statements

    assert len(statements) == 3, statements
    assert "pg_advisory_xact_lock" in statements[0]
    assert statements[1].lstrip().startswith("SELECT")
    assert statements[2].count("INSERT INTO") == 3
    job, deployment = submitted.job, submitted.deployment
    assert inspect(job).persistent
    assert inspect(deployment).persistent
    assert (job.attempts, job.progress, job.result) == (0, {}, None)
    assert job.created_at is not None
    for instance, values in written.items():
        cluster.refresh(instance)
        assert column_values(instance) == values, type(instance).__name__
    reservations = cluster.execute(
        select(
            GpuReservation.node_name,
            GpuReservation.replicas,
            GpuReservation.gpus,
            GpuReservation.deployment_id,
            GpuReservation.job_id,
            GpuReservation.tenant_id,
            GpuReservation.gpu_type,
            GpuReservation.released_at,
        ).order_by(GpuReservation.node_name)
    ).all()
    # Best fit: two replicas fill l40s-0, the third goes to l40s-1.
    assert [tuple(row) for row in reservations] == [
        ("l40s-0", 2, 8, deployment.id, job.id, "acme", "nvidia-l40s", None),
        ("l40s-1", 1, 4, deployment.id, job.id, "acme", "nvidia-l40s", None),
    ]


def test_the_create_statement_is_compiled_and_parsed_once():
    """SQLAlchemy caches its compilation and psycopg its parsing only within their limits; past either, every
    create would pay for it again (a multi-row VALUES is never cached; psycopg parses anew a statement with
    more than MAX_CACHED_STATEMENT_PARAMS parameters, so a new column on jobs or deployments may need one
    less parameter elsewhere)."""
    statement = _created_rows_statement()

    assert statement._generate_cache_key() is not None
    assert len(statement.compile().params) <= psycopg_queries.MAX_CACHED_STATEMENT_PARAMS


def test_created_objects_are_ordinary_session_objects(cluster):
    submitted = create(cluster, name="idle", replicas=0)
    submitted.deployment.status = DeploymentStatus.RUNNING
    submitted.job.progress["step"] = "applied"
    cluster.flush()
    cluster.expire_all()

    assert cluster.get(Deployment, submitted.deployment.id).status == DeploymentStatus.RUNNING
    assert cluster.get(Job, submitted.job.id).progress == {"step": "applied"}
    assert cluster.scalars(select(GpuReservation)).all() == []


def test_create_validation(cluster):
    with pytest.raises(InvalidRequestError) as bad_arg:
        create(cluster, vllm_args=["--port=1"])
    assert bad_arg.value.details["arg"] == "--port=1"
    with pytest.raises(InvalidRequestError):
        create(cluster, name="Bad_Name")
    create(cluster, name="taken")
    with pytest.raises(ConflictError) as taken:
        create(cluster, name="taken")
    assert taken.value.code == "name_taken"
    create(cluster, tenant="other", name="taken")  # names are per tenant


def test_idempotency(cluster):
    first = create(cluster, key="k1", fingerprint="f1")
    again = create(cluster, key="k1", fingerprint="f1")
    assert again.replayed
    assert again.job.id == first.job.id
    assert again.deployment.id == first.deployment.id
    with pytest.raises(ConflictError) as reused:
        create(cluster, key="k1", fingerprint="different")
    assert reused.value.code == "idempotency_key_reused"
    other_tenant = create(cluster, tenant="other", key="k1", fingerprint="f1")
    assert not other_tenant.replayed


def test_one_operation_at_a_time(cluster):
    submitted = create(cluster)
    with pytest.raises(ConflictError) as busy:
        request_delete(cluster, tenant_id="acme", deployment_id=submitted.deployment.id, requested_by="svc")
    assert busy.value.code == "deployment_busy"
    assert busy.value.details == {"job_id": str(submitted.job.id), "job_type": "deployment.create"}
    jobs.start(cluster, submitted.job.id)
    jobs.succeed(cluster, submitted.job.id, {})
    deleted = request_delete(cluster, tenant_id="acme", deployment_id=submitted.deployment.id, requested_by="svc")
    assert deleted.deployment.status == DeploymentStatus.DELETING
    assert deleted.deployment.active_job_id == deleted.job.id


def test_cross_tenant_and_deleted_are_404(cluster):
    submitted = create(cluster)
    with pytest.raises(NotFoundError):
        request_delete(cluster, tenant_id="other", deployment_id=submitted.deployment.id, requested_by="svc")
    with pytest.raises(NotFoundError):
        request_restart(cluster, tenant_id="acme", deployment_id=str(uuid.uuid4()), requested_by="svc")
    with pytest.raises(NotFoundError):
        request_restart(cluster, tenant_id="acme", deployment_id="not-a-uuid", requested_by="svc")
    deployment = running(cluster, submitted)
    deployment.status = DeploymentStatus.DELETED
    cluster.flush()
    with pytest.raises(NotFoundError):
        request_delete(cluster, tenant_id="acme", deployment_id=deployment.id, requested_by="svc")


def test_restart_rules(cluster):
    submitted = create(cluster, replicas=1, gpus_per_replica=4)
    jobs.start(cluster, submitted.job.id)
    jobs.succeed(cluster, submitted.job.id, {})
    with pytest.raises(ConflictError) as not_running:
        request_restart(cluster, tenant_id="acme", deployment_id=submitted.deployment.id, requested_by="svc")
    assert not_running.value.code == "invalid_state"
    running(cluster, submitted)
    restart = request_restart(cluster, tenant_id="acme", deployment_id=submitted.deployment.id, requested_by="svc")
    assert restart.job.params == {"surge": True}
    assert restart.deployment.status == DeploymentStatus.RESTARTING
    surge = cluster.execute(select(GpuReservation).where(GpuReservation.job_id == restart.job.id)).scalars().all()
    assert [(row.gpus, row.replicas) for row in surge] == [(4, 1)]


def test_a_restarts_extra_replica_is_not_counted_against_the_tenants_quota(cluster):
    """The surge is the platform's doing: while it runs, the tenant may still use the rest of its quota."""
    from models import Tenant
    from workers import admission

    cluster.get(Tenant, "acme").gpu_quota = 6
    cluster.flush()
    deployment = running(cluster, create(cluster, replicas=1, gpus_per_replica=4))
    restart = request_restart(cluster, tenant_id="acme", deployment_id=deployment.id, requested_by="svc")
    [surge] = cluster.execute(select(GpuReservation).where(GpuReservation.job_id == restart.job.id)).scalars()
    assert surge.gpus == 4
    assert admission.tenant_quota(cluster, "acme") == (6, 4)

    other = create(cluster, name="second", replicas=1, gpus_per_replica=2)  # 4 + 2 = 6: within the quota

    assert other.deployment.gpus_per_replica == 2
    with pytest.raises(ConflictError) as over, cluster.begin_nested():
        create(cluster, name="third", replicas=1, gpus_per_replica=1)
    assert over.value.code == "quota_exceeded"
    assert over.value.details == {"quota": 6, "used": 6, "requested": 1}


def test_single_replica_restart_without_room_is_refused(cluster):
    submitted = create(cluster, replicas=2, gpus_per_replica=8)
    deployment = running(cluster, submitted)
    request_scale(
        cluster, tenant_id="acme", deployment_id=deployment.id, replicas=1, reason="shrink", requested_by="svc"
    )
    # A second tenant fills the freed node, leaving no room for the restart's temporary replica.
    scale_job = cluster.execute(select(ScalingEvent.job_id)).scalar_one()
    jobs.start(cluster, scale_job)
    jobs.succeed(cluster, scale_job, {})
    create(cluster, tenant="other", replicas=1, gpus_per_replica=8)
    deployment.status = DeploymentStatus.RUNNING
    cluster.flush()
    with pytest.raises(ConflictError) as no_room, cluster.begin_nested():
        request_restart(cluster, tenant_id="acme", deployment_id=deployment.id, requested_by="svc")
    assert no_room.value.code == "insufficient_gpu"


def test_scale_up_admits_and_scale_down_releases(cluster):
    deployment = running(cluster, create(cluster, replicas=1, gpus_per_replica=4))
    up = request_scale(
        cluster,
        tenant_id=None,
        deployment_id=deployment.id,
        replicas=3,
        reason="load",
        requested_by="admin",
        trigger="auto",
    )
    assert up.deployment.replicas_desired == 3
    assert up.deployment.status == DeploymentStatus.SCALING
    event = cluster.execute(select(ScalingEvent).where(ScalingEvent.job_id == up.job.id)).scalar_one()
    assert (event.replicas_before, event.replicas_after, event.status) == (1, 3, ScalingEventStatus.PENDING)
    assert str(event.trigger) == "auto"
    with pytest.raises(ConflictError):
        request_scale(cluster, tenant_id=None, deployment_id=deployment.id, replicas=4, reason="x", requested_by="a")
    jobs.start(cluster, up.job.id)
    jobs.succeed(cluster, up.job.id, {})
    # The caller rolls back a failed request; a savepoint plays that part here.
    with pytest.raises(ConflictError) as full, cluster.begin_nested():
        request_scale(cluster, tenant_id="acme", deployment_id=deployment.id, replicas=5, reason="x", requested_by="a")
    assert full.value.code == "insufficient_gpu"
    down = request_scale(
        cluster, tenant_id="acme", deployment_id=deployment.id, replicas=1, reason="quiet", requested_by="a"
    )
    reserved = (
        cluster.execute(
            select(GpuReservation.gpus).where(
                GpuReservation.deployment_id == deployment.id, GpuReservation.released_at.is_(None)
            )
        )
        .scalars()
        .all()
    )
    assert sum(reserved) == 4
    assert down.job.type == JobType.DEPLOYMENT_SCALE


def test_a_stopped_deployment_scales_up_but_has_nothing_to_restart(cluster):
    deployment = running(cluster, create(cluster, replicas=1, gpus_per_replica=4))
    down = request_scale(cluster, tenant_id="acme", deployment_id=deployment.id, replicas=0, reason="idle",
                         requested_by="a")
    assert down.deployment.status == DeploymentStatus.SCALING
    jobs.start(cluster, down.job.id)
    jobs.succeed(cluster, down.job.id, {})
    deployment.status = DeploymentStatus.STOPPED  # what the status poll then reports
    cluster.flush()

    with pytest.raises(ConflictError) as restart, cluster.begin_nested():
        request_restart(cluster, tenant_id="acme", deployment_id=deployment.id, requested_by="svc")
    assert restart.value.code == "nothing_to_restart"

    up = request_scale(cluster, tenant_id="acme", deployment_id=deployment.id, replicas=2, reason="busy",
                       requested_by="a")
    assert (up.deployment.status, up.deployment.replicas_desired) == (DeploymentStatus.SCALING, 2)


def test_job_transitions_are_guarded(cluster):
    submitted = create(cluster)
    job_id = submitted.job.id
    started = jobs.start(cluster, job_id)
    assert started.state == JobState.RUNNING
    assert started.attempts == 1
    assert started.started_at
    assert jobs.mark_retrying(cluster, job_id, {"code": "cluster_http_503", "message": "x", "retryable": True})
    again = jobs.start(cluster, job_id)
    assert again.attempts == 2
    jobs.update_progress(cluster, job_id, {"step": "applied"})
    jobs.update_progress(cluster, job_id, {"pods": 1})
    assert jobs.succeed(cluster, job_id, {"ok": True})
    cluster.refresh(submitted.job)
    cluster.refresh(submitted.deployment)
    assert submitted.job.state == JobState.SUCCEEDED
    assert submitted.job.progress == {"step": "applied", "pods": 1}
    assert submitted.job.finished_at is not None
    assert submitted.deployment.active_job_id is None
    # Terminal states never change, and a redelivered task finds nothing to do.
    assert not jobs.fail(cluster, job_id, {"code": "late", "message": "x", "retryable": False})
    assert not jobs.mark_retrying(cluster, job_id, {})
    assert jobs.start(cluster, job_id) is None
    cluster.refresh(submitted.job)
    assert submitted.job.state == JobState.SUCCEEDED
