"""GPU admission against real Postgres, including many concurrent requests racing for a small cluster."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import GpuReservation
from models.db import get_sessionmaker
from workers import admission
from workers.domain import AdmissionError, InvalidRequestError
from workers.requests import CreateDeploymentSpec, request_create

from .conftest import add_foreign_pod, add_nodes, add_tenant


def _create(session: Session, tenant: str = "acme", replicas: int = 1, gpus: int = 1, gpu_type="nvidia-l40s"):
    spec = CreateDeploymentSpec(model_id="org/model", replicas=replicas, gpus_per_replica=gpus, gpu_type=gpu_type)
    return request_create(session, tenant_id=tenant, spec=spec, requested_by="test")


def _reserved(session: Session, **where) -> int:
    query = select(func.coalesce(func.sum(GpuReservation.gpus), 0)).where(GpuReservation.released_at.is_(None))
    for key, value in where.items():
        query = query.where(getattr(GpuReservation, key) == value)
    return int(session.execute(query).scalar_one())


def test_admits_best_fit_and_writes_reservations(db_session):
    add_tenant(db_session)
    add_nodes(db_session, {"l40s-0": ("nvidia-l40s", 8), "l40s-1": ("nvidia-l40s", 8)})
    add_foreign_pod(db_session, "l40s-1", 5)
    submitted = _create(db_session, replicas=1, gpus=2)
    rows = db_session.execute(select(GpuReservation)).scalars().all()
    assert [(row.node_name, row.gpus, row.replicas) for row in rows] == [("l40s-1", 2, 1)]
    assert rows[0].job_id == submitted.job.id
    assert submitted.job.params["placement"] == {"l40s-1": 1}


def test_insufficient_gpu_details(db_session):
    add_tenant(db_session)
    add_nodes(db_session, {"l40s-0": ("nvidia-l40s", 8), "h100-0": ("nvidia-h100-80gb", 8)})
    add_foreign_pod(db_session, "l40s-0", 6)
    with pytest.raises(AdmissionError) as caught:
        _create(db_session, replicas=2, gpus=2)
    error = caught.value
    assert error.code == "insufficient_gpu"
    assert error.http_status == 409
    assert error.details == {
        "gpu_type": "nvidia-l40s",
        "requested_per_replica": 2,
        "replicas": 2,
        "free_total": 2,
        "largest_block": {"nvidia-h100-80gb": 8, "nvidia-l40s": 2},
        "free_by_type": {"nvidia-h100-80gb": 8, "nvidia-l40s": 2},
    }


def test_quota_exceeded(db_session):
    add_tenant(db_session, quota=4)
    add_nodes(db_session, {"l40s-0": ("nvidia-l40s", 8)})
    _create(db_session, replicas=1, gpus=3)
    with pytest.raises(AdmissionError) as caught:
        _create(db_session, replicas=1, gpus=2)
    assert caught.value.code == "quota_exceeded"
    assert caught.value.details == {"quota": 4, "used": 3, "requested": 2}


def test_default_quota_applies_without_a_tenant_quota(db_session, monkeypatch):
    import settings as settings_module

    monkeypatch.setenv("DEFAULT_TENANT_GPU_QUOTA", "1")
    settings_module.get_settings.cache_clear()
    try:
        add_tenant(db_session)
        add_nodes(db_session, {"l40s-0": ("nvidia-l40s", 8)})
        with pytest.raises(AdmissionError) as caught:
            _create(db_session, replicas=1, gpus=2)
        assert caught.value.details["quota"] == 1
    finally:
        monkeypatch.delenv("DEFAULT_TENANT_GPU_QUOTA")
        settings_module.get_settings.cache_clear()


def test_unavailable_nodes_do_not_count(db_session):
    add_tenant(db_session)
    add_nodes(db_session, {"cordoned": ("nvidia-l40s", 8)}, unschedulable=True)
    add_nodes(db_session, {"down": ("nvidia-l40s", 8)}, ready_status="NotReady")
    add_nodes(db_session, {"gone": ("nvidia-l40s", 8)}, present=False)
    with pytest.raises(AdmissionError) as caught:
        _create(db_session)
    assert caught.value.details["free_total"] == 0


def test_shape_errors_are_422(db_session):
    add_tenant(db_session)
    add_nodes(db_session, {"l40s-0": ("nvidia-l40s", 8)})
    with pytest.raises(InvalidRequestError) as too_large:
        _create(db_session, gpus=16)
    assert too_large.value.code == "gpus_per_replica_too_large"
    with pytest.raises(InvalidRequestError) as unknown:
        _create(db_session, gpu_type="nvidia-b200")
    assert unknown.value.code == "unknown_gpu_type"
    assert unknown.value.details["known_gpu_types"] == ["nvidia-l40s"]


def test_release_and_release_replicas(db_session):
    add_tenant(db_session)
    add_nodes(db_session, {"a": ("nvidia-l40s", 4), "b": ("nvidia-l40s", 4)})
    submitted = _create(db_session, replicas=3, gpus=2)
    deployment_id = submitted.deployment.id
    assert _reserved(db_session, deployment_id=deployment_id) == 6
    assert admission.release_replicas(db_session, deployment_id, 2) == 2
    assert _reserved(db_session, deployment_id=deployment_id) == 2
    assert admission.release(db_session, deployment_id) == 2
    assert _reserved(db_session, deployment_id=deployment_id) == 0


def test_concurrent_creates_never_overcommit(clean_tables):
    """24 threads, each in its own session and transaction, race for 2 nodes x 8 GPUs with 4-GPU replicas."""
    maker = get_sessionmaker()
    with maker.begin() as session:
        add_tenant(session, quota=1000)
        add_nodes(session, {"l40s-0": ("nvidia-l40s", 8), "l40s-1": ("nvidia-l40s", 8)})
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(24)

    def attempt() -> None:
        start.wait()
        session = maker()
        try:
            _create(session, replicas=1, gpus=4)
            session.commit()
            result = "admitted"
        except AdmissionError as error:
            session.rollback()
            result = error.code
        finally:
            session.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(outcomes) == 24
    assert outcomes.count("admitted") == 4
    assert outcomes.count("insufficient_gpu") == 20
    with maker() as session:
        per_node = dict(
            session.execute(
                select(GpuReservation.node_name, func.sum(GpuReservation.gpus))
                .where(GpuReservation.released_at.is_(None))
                .group_by(GpuReservation.node_name)
            ).all()
        )
    assert per_node == {"l40s-0": 8, "l40s-1": 8}


def test_admit_without_quota_check_for_surges(db_session):
    add_tenant(db_session, quota=1)
    add_nodes(db_session, {"a": ("nvidia-l40s", 8)})
    submitted = _create(db_session, replicas=1, gpus=1)
    admission.admit(
        db_session,
        tenant_id="acme",
        deployment_id=submitted.deployment.id,
        job_id=None,
        gpu_type="nvidia-l40s",
        gpus_per_replica=1,
        replicas=1,
        check_quota=False,
    )
    assert _reserved(db_session, tenant_id="acme") == 2
    assert uuid.UUID(str(submitted.deployment.id))


def test_empty_inventory_says_so(db_session):
    add_tenant(db_session)
    with pytest.raises(InvalidRequestError) as caught:
        _create(db_session)
    assert caught.value.code == "no_gpu_inventory"
