"""workers.queries: tenant-scoped reads from Postgres."""

from __future__ import annotations

import pytest

from models import DeploymentStatus, PodAllocation
from workers import jobs
from workers.domain import InvalidRequestError, NotFoundError
from workers.queries import (
    available_resources,
    deployment_status,
    ensure_tenant,
    get_deployment,
    get_job,
    list_deployments,
)
from workers.requests import CreateDeploymentSpec, request_create

from .conftest import add_foreign_pod, add_nodes, add_tenant


@pytest.fixture
def seeded(db_session):
    add_tenant(db_session, "acme", quota=10)
    add_tenant(db_session, "other")
    add_nodes(
        db_session, {"l40s-0": ("nvidia-l40s", 8), "l40s-1": ("nvidia-l40s", 8), "h100-0": ("nvidia-h100-80gb", 8)}
    )
    add_foreign_pod(db_session, "l40s-0", 3)
    return db_session


def create(session, tenant="acme", name="m", gpus=1, replicas=1, gpu_type="nvidia-l40s"):
    spec = CreateDeploymentSpec(
        model_id="org/model", replicas=replicas, gpus_per_replica=gpus, name=name, gpu_type=gpu_type
    )
    return request_create(session, tenant_id=tenant, spec=spec, requested_by="svc")


def test_cross_tenant_reads_are_404(seeded):
    submitted = create(seeded)
    assert get_deployment(seeded, "acme", submitted.deployment.id).id == submitted.deployment.id
    assert get_deployment(seeded, None, submitted.deployment.id).id == submitted.deployment.id
    with pytest.raises(NotFoundError):
        get_deployment(seeded, "other", submitted.deployment.id)
    with pytest.raises(NotFoundError):
        get_job(seeded, "other", submitted.job.id)
    with pytest.raises(NotFoundError) as malformed:
        get_job(seeded, "acme", "nope")
    assert malformed.value.code == "job_not_found"
    assert get_job(seeded, "acme", str(submitted.job.id)).id == submitted.job.id


def test_list_filters_and_pagination(seeded):
    for index in range(5):
        create(seeded, name=f"m{index}")
    create(seeded, name="big", gpu_type="nvidia-h100-80gb")
    create(seeded, tenant="other", name="theirs")
    page, cursor = list_deployments(seeded, "acme", limit=4)
    assert len(page) == 4
    assert cursor is not None
    rest, end = list_deployments(seeded, "acme", limit=4, cursor=cursor)
    assert end is None
    names = [row.name for row in page + rest]
    assert sorted(names) == ["big", "m0", "m1", "m2", "m3", "m4"]
    assert [row.name for row in list_deployments(seeded, "acme", gpu_type="nvidia-h100-80gb")[0]] == ["big"]
    assert [row.name for row in list_deployments(seeded, "acme", name="m3")[0]] == ["m3"]
    assert len(list_deployments(seeded, "acme", status="PENDING")[0]) == 6
    assert list_deployments(seeded, "acme", status="RUNNING")[0] == []
    with pytest.raises(InvalidRequestError):
        list_deployments(seeded, "acme", status="BOGUS")
    with pytest.raises(InvalidRequestError):
        list_deployments(seeded, "acme", cursor="garbage!")


def test_status_view(seeded):
    submitted = create(seeded, replicas=1)
    deployment = submitted.deployment
    seeded.add(
        PodAllocation(
            pod_uid="u1",
            namespace="model-serving",
            pod_name="m-abc",
            deployment_id=deployment.id,
            tenant_id="acme",
            node_name="l40s-1",
            gpus=1,
            phase="Running",
            ready=True,
            restarts=0,
        )
    )
    seeded.flush()
    view = deployment_status(seeded, "acme", deployment.id)
    assert view["status"] == "PENDING"
    assert view["replicas"] == {"desired": 1, "ready": 0}
    assert view["endpoint"].endswith(".svc.cluster.local:8000")
    assert view["pods"] == [
        {"name": "m-abc", "node": "l40s-1", "phase": "Running", "ready": True, "restarts": 0, "reason": None}
    ]
    assert view["active_job"] == {"id": str(submitted.job.id), "type": "deployment.create", "state": "PENDING"}
    with pytest.raises(NotFoundError):
        deployment_status(seeded, "other", deployment.id)
    with pytest.raises(NotFoundError):
        deployment_status(seeded, "acme", "00000000-0000-0000-0000-000000000000")
    jobs.start(seeded, submitted.job.id)
    jobs.succeed(seeded, submitted.job.id, {})
    deployment.status = DeploymentStatus.RUNNING
    seeded.flush()
    seeded.refresh(deployment)
    assert deployment_status(seeded, "acme", deployment.id)["active_job"] is None


def test_available_resources(seeded):
    create(seeded, gpus=4)
    view = available_resources(seeded, "acme")
    l40s = view["gpu_types"]["nvidia-l40s"]
    # l40s-0: 8 - 3 foreign - 4 reserved (best fit picks the fuller node) = 1; l40s-1 untouched.
    assert l40s["nodes"] == {"l40s-0": 1, "l40s-1": 8}
    assert l40s["free_total"] == 9
    assert l40s["largest_block"] == 8
    assert view["gpu_types"]["nvidia-h100-80gb"]["free_total"] == 8
    assert view["reservations_in_flight"] == {"nvidia-l40s": {"reservations": 1, "gpus": 4}}
    assert view["quota"] == {"limit": 10, "used": 4, "remaining": 6}


def test_ensure_tenant_is_idempotent(db_session):
    first = ensure_tenant(db_session, "newco")
    again = ensure_tenant(db_session, "newco")
    assert first is again
    assert first.gpu_quota is None
