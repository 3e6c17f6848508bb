"""Model constraints as enforced by Postgres, and JSONB / enum / timestamp round trips."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import (
    SCHEMA,
    Deployment,
    DeploymentStatus,
    GpuNode,
    GpuReservation,
    Job,
    JobState,
    JobType,
    PodAllocation,
    ScalingEvent,
    ScalingEventStatus,
    ScalingTrigger,
    SweepRun,
    TargetKind,
    Tenant,
)
from models.db import session_scope


def make_tenant(session: Session, tenant_id: str = "acme") -> Tenant:
    tenant = Tenant(id=tenant_id, name=tenant_id.title())
    session.add(tenant)
    session.flush()
    return tenant


def make_deployment(session: Session, tenant_id: str = "acme", name: str = "llama", **overrides) -> Deployment:
    values = {
        "tenant_id": tenant_id,
        "name": name,
        "model_id": "meta-llama/Llama-3.1-8B-Instruct",
        "image": "vllm/vllm-openai:v0.11.0",
        "gpu_type": "nvidia-l40s",
        "k8s_namespace": "model-serving",
        "k8s_name": f"{tenant_id}-{name}",
    }
    values.update(overrides)
    deployment = Deployment(**values)
    session.add(deployment)
    session.flush()
    return deployment


def make_job(session: Session, **overrides) -> Job:
    values = {
        "type": JobType.DEPLOYMENT_CREATE,
        "tenant_id": "acme",
        "requested_by": "svc-gateway",
        "target_kind": TargetKind.DEPLOYMENT,
        "target_id": str(uuid.uuid4()),
    }
    values.update(overrides)
    job = Job(**values)
    session.add(job)
    session.flush()
    return job


def assert_flush_fails(session: Session, instance: object, constraint: str) -> None:
    """Add ``instance`` in a SAVEPOINT and check that Postgres rejects it naming ``constraint``."""
    savepoint = session.begin_nested()
    session.add(instance)
    with pytest.raises(IntegrityError, match=constraint):
        session.flush()
    savepoint.rollback()


def test_deployment_defaults_and_json_round_trip(db_session):
    make_tenant(db_session)
    deployment = make_deployment(
        db_session,
        vllm_args=["--enable-prefix-caching", "--max-num-seqs=64"],
        autoscaling_targets={"queue_depth": 5, "kv_cache_usage": 0.8},
    )
    db_session.expire_all()
    loaded = db_session.get(Deployment, deployment.id)
    assert loaded.status is DeploymentStatus.PENDING
    assert loaded.vllm_args == ["--enable-prefix-caching", "--max-num-seqs=64"]
    assert loaded.autoscaling_targets == {"queue_depth": 5, "kv_cache_usage": 0.8}
    assert loaded.replicas_ready == 0
    assert loaded.created_at.tzinfo is not None
    assert not loaded.is_deleted
    stored_status = db_session.execute(
        text(f"SELECT status FROM {SCHEMA}.deployments WHERE id = :id"), {"id": deployment.id}
    ).scalar_one()
    assert stored_status == "PENDING"


def test_in_place_json_changes_are_persisted(db_session):
    make_tenant(db_session)
    deployment = make_deployment(db_session)
    job = make_job(db_session, target_id=str(deployment.id))
    job.progress["pods_evicted"] = 2
    deployment.vllm_args.append("--enforce-eager")
    db_session.flush()
    db_session.expire_all()
    assert db_session.get(Job, job.id).progress == {"pods_evicted": 2}
    assert db_session.get(Deployment, deployment.id).vllm_args == ["--enforce-eager"]


def test_live_deployment_names_are_unique_per_tenant_but_reusable_after_delete(db_session):
    make_tenant(db_session)
    make_tenant(db_session, "globex")
    first = make_deployment(db_session)
    make_deployment(db_session, tenant_id="globex")  # same name, other tenant: fine

    duplicate = Deployment(
        tenant_id="acme",
        name="llama",
        model_id="m",
        image="i",
        gpu_type="g",
        k8s_namespace="model-serving",
        k8s_name="acme-llama-2",
    )
    assert_flush_fails(db_session, duplicate, "uq_deployments_tenant_id_name_live")

    first.deleted_at = datetime.now(UTC)
    first.status = DeploymentStatus.DELETED
    db_session.flush()
    replacement = make_deployment(db_session)
    assert replacement.id != first.id


def test_live_k8s_names_are_unique_per_namespace(db_session):
    make_tenant(db_session)
    make_deployment(db_session, name="a", k8s_name="shared")
    clash = Deployment(
        tenant_id="acme",
        name="b",
        model_id="m",
        image="i",
        gpu_type="g",
        k8s_namespace="model-serving",
        k8s_name="shared",
    )
    assert_flush_fails(db_session, clash, "uq_deployments_k8s_namespace_k8s_name_live")
    make_deployment(db_session, name="c", k8s_name="shared", k8s_namespace="other-namespace")


@pytest.mark.parametrize(
    ("overrides", "constraint"),
    [
        ({"gpus_per_replica": 0}, "ck_deployments_gpus_per_replica_positive"),
        ({"replicas_desired": -1}, "ck_deployments_replicas_desired_non_negative"),
        ({"min_replicas": 3, "max_replicas": 2}, "ck_deployments_max_replicas_not_below_min"),
        ({"target_gpu_utilization": 101}, "ck_deployments_target_gpu_utilization_percent"),
        ({"name": "Not_DNS"}, "ck_deployments_name_dns_1035"),
        ({"name": "9starts-with-digit"}, "ck_deployments_name_dns_1035"),
    ],
)
def test_deployment_check_constraints(db_session, overrides, constraint):
    make_tenant(db_session)
    values = {
        "tenant_id": "acme",
        "name": "llama",
        "model_id": "m",
        "image": "i",
        "gpu_type": "g",
        "k8s_namespace": "model-serving",
        "k8s_name": "acme-llama",
    }
    values.update(overrides)
    assert_flush_fails(db_session, Deployment(**values), constraint)


def test_deployment_requires_existing_tenant(db_session):
    orphan = Deployment(
        tenant_id="nobody",
        name="llama",
        model_id="m",
        image="i",
        gpu_type="g",
        k8s_namespace="model-serving",
        k8s_name="nobody-llama",
    )
    assert_flush_fails(db_session, orphan, "fk_deployments_tenant_id_tenants")


def test_tenant_id_must_be_label_safe(db_session):
    assert_flush_fails(db_session, Tenant(id="Acme Corp", name="Acme"), "ck_tenants_id_label_safe")


def test_idempotency_key_is_unique_within_scope(db_session):
    make_job(db_session, idempotency_scope="tenant:acme", idempotency_key="k-1")
    make_job(db_session, idempotency_scope="tenant:globex", idempotency_key="k-1")  # other scope: fine
    make_job(db_session)  # no key at all: any number allowed
    make_job(db_session)
    duplicate = Job(
        type=JobType.DEPLOYMENT_CREATE,
        requested_by="svc",
        target_kind=TargetKind.DEPLOYMENT,
        target_id="x",
        idempotency_scope="tenant:acme",
        idempotency_key="k-1",
    )
    assert_flush_fails(db_session, duplicate, "uq_jobs_idempotency_scope_key")


def test_job_defaults_and_nullable_json(db_session):
    job = make_job(db_session, tenant_id=None, type=JobType.NODE_DRAIN, target_kind=TargetKind.NODE, target_id="gpu-1")
    db_session.expire_all()
    loaded = db_session.get(Job, job.id)
    assert loaded.state is JobState.PENDING
    assert loaded.attempts == 0
    assert loaded.max_attempts == 5
    assert loaded.params == {}
    assert loaded.progress == {}
    assert uuid.UUID(loaded.celery_task_id)
    assert not loaded.is_terminal
    result_is_sql_null = db_session.execute(
        text(f"SELECT result IS NULL AND error IS NULL FROM {SCHEMA}.jobs WHERE id = :id"), {"id": job.id}
    ).scalar_one()
    assert result_is_sql_null

    loaded.state = JobState.FAILED
    loaded.error = {"code": "ImagePullBackOff", "message": "image not found", "retryable": False}
    db_session.flush()
    db_session.expire_all()
    failed = db_session.get(Job, job.id)
    assert failed.is_terminal
    assert failed.error == {"code": "ImagePullBackOff", "message": "image not found", "retryable": False}


def test_job_state_terminality():
    assert {state for state in JobState if state.is_terminal} == {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
    }


def test_unknown_enum_value_is_rejected_by_the_database(db_session):
    job = make_job(db_session)
    with pytest.raises(IntegrityError, match="ck_jobs_job_state"), db_session.begin_nested():
        db_session.execute(text(f"UPDATE {SCHEMA}.jobs SET state = 'EXPLODED' WHERE id = :id"), {"id": job.id})


def test_reservation_counts_must_be_positive_and_cascade_with_deployment(db_session):
    make_tenant(db_session)
    deployment = make_deployment(db_session)
    common = {"deployment_id": deployment.id, "tenant_id": "acme", "node_name": "gpu-1", "gpu_type": "nvidia-l40s"}
    assert_flush_fails(db_session, GpuReservation(**common, gpus=0), "ck_gpu_reservations_gpus_positive")
    assert_flush_fails(
        db_session, GpuReservation(**common, gpus=2, replicas=0), "ck_gpu_reservations_replicas_positive"
    )
    reservation = GpuReservation(**common, gpus=2, replicas=2)
    db_session.add(reservation)
    db_session.flush()
    assert reservation.is_active

    db_session.execute(text(f"DELETE FROM {SCHEMA}.deployments WHERE id = :id"), {"id": deployment.id})
    db_session.expire_all()
    assert db_session.scalars(select(GpuReservation)).all() == []


def test_pod_allocation_outlives_its_deployment(db_session):
    make_tenant(db_session)
    deployment = make_deployment(db_session)
    pod = PodAllocation(
        pod_uid="uid-1",
        namespace="model-serving",
        pod_name="acme-llama-0",
        deployment_id=deployment.id,
        tenant_id="acme",
        node_name="gpu-1",
        gpus=1,
        metrics={"kv_cache_usage": 0.42},
    )
    db_session.add(pod)
    db_session.flush()
    assert_flush_fails(
        db_session, PodAllocation(pod_uid="uid-1", namespace="n", pod_name="other"), "uq_pod_allocations_pod_uid"
    )
    db_session.execute(text(f"DELETE FROM {SCHEMA}.deployments WHERE id = :id"), {"id": deployment.id})
    db_session.expire_all()
    survivor = db_session.get(PodAllocation, pod.id)
    assert survivor.deployment_id is None
    assert survivor.metrics == {"kv_cache_usage": 0.42}


def test_gpu_node_round_trip_and_checks(db_session):
    node = GpuNode(
        name="gpu-1",
        gpu_product="NVIDIA-L40S",
        gpu_capacity=8,
        gpu_allocatable=8,
        gpu_allocated=3,
        memory_capacity_bytes=1_099_511_627_776,
        ready_status="Ready",
        taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
        labels={"nvidia.com/gpu.count": "8"},
    )
    db_session.add(node)
    db_session.flush()
    db_session.expire_all()
    loaded = db_session.get(GpuNode, "gpu-1")
    assert loaded.gpu_free == 5
    assert loaded.memory_capacity_bytes == 1_099_511_627_776
    assert loaded.taints == [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]
    assert loaded.present
    assert_flush_fails(db_session, GpuNode(name="gpu-2", ready_status="Sleepy"), "ck_gpu_nodes_ready_status_known")
    assert_flush_fails(db_session, GpuNode(name="gpu-3", gpu_allocated=-1), "ck_gpu_nodes_gpu_counts_non_negative")


def test_scaling_event_and_sweep_run_round_trip(db_session):
    event = ScalingEvent(
        tenant_id="acme",
        model_id="m",
        trigger=ScalingTrigger.AUTO,
        reason="queue depth 12 > 5",
        replicas_before=1,
        replicas_after=2,
        inputs={"queue_depth": 12},
    )
    db_session.add_all([event, SweepRun(name="autoscaler", last_status="succeeded", last_summary={"scaled": 1})])
    db_session.flush()
    db_session.expire_all()
    loaded = db_session.get(ScalingEvent, event.id)
    assert loaded.status is ScalingEventStatus.PENDING
    assert loaded.trigger is ScalingTrigger.AUTO
    assert db_session.get(SweepRun, "autoscaler").last_summary == {"scaled": 1}
    assert_flush_fails(
        db_session,
        ScalingEvent(tenant_id="a", model_id="m", trigger=ScalingTrigger.MANUAL, replicas_before=-1, replicas_after=0),
        "ck_scaling_events_replicas_non_negative",
    )


def test_session_scope_commits_on_success_and_rolls_back_on_error(clean_tables):
    with session_scope() as session:
        session.add(Tenant(id="committed", name="Committed"))

    def add_then_fail() -> None:
        with session_scope() as session:
            session.add(Tenant(id="rolled-back", name="Rolled back"))
            session.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        add_then_fail()
    with session_scope() as session:
        assert session.scalars(select(Tenant.id)).all() == ["committed"]
