"""GET /admin/v1/infrastructure/nodes, node jobs (cordon, uncordon, drain), job reads and cancel."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from models import GpuNode, Job, JobState, JobType, PodAllocation
from tests.web.helpers import create_body, error_code

NODES = "/admin/v1/infrastructure/nodes"


def test_admin_endpoints_need_the_admin_scope(client, acme, headers_for):
    internal_only = client.get(NODES, headers=acme)
    anonymous = client.get(NODES)
    admin_tenant = client.get(NODES, headers=headers_for("acme", scopes=("admin",)))

    assert anonymous.status_code == 401
    assert internal_only.status_code == 403
    assert error_code(internal_only) == "insufficient_scope"
    assert admin_tenant.status_code == 200


def test_nodes_list_filters_paginates_and_shows_pods(client, admin, acme, seed_nodes, clean_tables):
    seed_nodes({"nvidia-l40s": [8, 8, 4], "nvidia-h100": [8]})
    with Session(clean_tables) as session:
        session.execute(update(GpuNode).where(GpuNode.name == "l40s-1").values(
            unschedulable=True, cordoned_by="ops-bob", cordon_reason="bad fan"))
        session.execute(update(GpuNode).where(GpuNode.name == "l40s-2").values(ready_status="NotReady"))
        session.commit()
    created = client.post("/internal/deployments/create", json=create_body(name="reader", replicas=1), headers=acme)
    assert created.status_code == 202

    everything = client.get(NODES, headers=admin).get_json()
    page_one = client.get(f"{NODES}?limit=2", headers=admin).get_json()
    page_two = client.get(f"{NODES}?limit=2&cursor={page_one['next_cursor']}", headers=admin).get_json()
    h100 = client.get(f"{NODES}?gpu_type=nvidia-h100", headers=admin).get_json()
    cordoned = client.get(f"{NODES}?schedulable=false", headers=admin).get_json()
    not_ready = client.get(f"{NODES}?status=NotReady", headers=admin).get_json()

    assert [node["name"] for node in everything["items"]] == ["h100-0", "l40s-0", "l40s-1", "l40s-2"]
    assert everything["next_cursor"] is None
    assert [n["name"] for n in page_one["items"] + page_two["items"]] == ["h100-0", "l40s-0", "l40s-1", "l40s-2"]
    assert page_two["next_cursor"] is None
    assert [node["name"] for node in h100["items"]] == ["h100-0"]
    assert [node["name"] for node in cordoned["items"]] == ["l40s-1"]
    assert cordoned["items"][0]["cordon"] == {"cordoned": True, "by": "ops-bob", "reason": "bad fan"}
    assert cordoned["items"][0]["schedulable"] is False
    assert [node["name"] for node in not_ready["items"]] == ["l40s-2"]
    first = everything["items"][1]
    assert first["gpu"] == {"product": "nvidia-l40s", "memory_mb": None, "capacity": 8, "allocatable": 8,
                            "allocated": 0, "free": 8}
    assert first["active_drain_job_id"] is None
    assert "last_observed_at" in first


def test_bad_node_queries_are_422(client, admin):
    for query in ("status=Sleeping", "limit=0", "cursor=not-a-cursor", "colour=blue"):
        response = client.get(f"{NODES}?{query}", headers=admin)
        assert response.status_code == 422, query
        assert error_code(response) in {"validation_failed", "invalid_cursor"}


def test_a_node_uncordoned_outside_the_api_shows_no_stale_cordon(client, admin, seed_nodes, clean_tables):
    seed_nodes({"nvidia-l40s": [8]})
    with Session(clean_tables) as session:  # cordoned by a job, then uncordoned with kubectl (seen by a sweep)
        session.execute(update(GpuNode).where(GpuNode.name == "l40s-0").values(
            unschedulable=False, cordoned_by="drain:ops-bob", cordon_reason="cancel test"))
        session.commit()

    node = client.get(f"{NODES}/l40s-0", headers=admin).get_json()

    assert node["cordon"] == {"cordoned": False, "by": None, "reason": None}


@pytest.mark.parametrize("values", ['["\\u0000"]', '["\\ud800"]', "[1]", "[null]", "[true]", "[[1]]", '["a", "b"]'])
def test_a_crafted_node_cursor_is_422(client, admin, values):
    cursor = base64.urlsafe_b64encode(values.encode()).decode().rstrip("=")

    response = client.get(f"{NODES}?limit=2&cursor={cursor}", headers=admin)

    assert response.status_code == 422
    assert error_code(response) == "invalid_cursor"


def test_unknown_node_is_404(client, admin):
    for method, path in [("get", f"{NODES}/l40s-9"), ("post", f"{NODES}/l40s-9/drain"),
                         ("post", f"{NODES}/l40s-9/cordon"), ("delete", f"{NODES}/l40s-9/drain"),
                         ("get", "/admin/v1/infrastructure/gpu-utilization?node=l40s-9")]:
        response = getattr(client, method)(path, json={} if method == "post" else None, headers=admin)
        assert response.status_code == 404, path
        assert error_code(response) == "node_not_found", path


def test_cancelling_a_drain_of_a_node_without_one(client, admin, seed_nodes):
    seed_nodes({"nvidia-l40s": [8]})

    nothing = client.delete(f"{NODES}/l40s-0/drain", headers=admin)
    with_fields = client.delete(f"{NODES}/l40s-0/drain", json={"force": True}, headers=admin)

    assert nothing.status_code == 404
    assert error_code(nothing) == "no_active_drain"
    assert with_fields.status_code == 422
    assert list(with_fields.get_json()["error"]["details"]["fields"]) == ["force"]


def test_cordon_and_uncordon_are_jobs(client, admin, seed_nodes, enqueued_task_ids):
    seed_nodes({"nvidia-l40s": [8]})
    cordon = client.post(f"{NODES}/l40s-0/cordon", json={"reason": "firmware update"}, headers=admin)
    uncordon = client.post(f"{NODES}/l40s-0/uncordon", json={}, headers=admin)

    assert cordon.status_code == 202
    assert cordon.headers["Location"] == cordon.get_json()["job_url"]
    job = client.get(cordon.get_json()["job_url"], headers=admin).get_json()
    assert job["type"] == "node.cordon"
    assert job["target"] == {"kind": "node", "id": "l40s-0"}
    assert job["tenant_id"] is None
    assert job["requested_by"] == "ops-alice"
    assert job["params"] == {"reason": "firmware update"}
    assert uncordon.status_code == 202
    assert uncordon.get_json()["type"] == "node.uncordon"
    assert len(enqueued_task_ids()) == 2
    # Admin jobs are counted with every other job.
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'orchestration_jobs_submitted_total{type="node.cordon"} 1.0' in metrics
    assert 'orchestration_jobs_submitted_total{type="node.uncordon"} 1.0' in metrics


def test_one_drain_per_node_and_cancel(client, admin, seed_nodes, enqueued_task_ids, clean_tables):
    seed_nodes({"nvidia-l40s": [8, 8]})
    first = client.post(f"{NODES}/l40s-0/drain", json={"timeout_seconds": 600, "reason": "kernel"}, headers=admin)
    second = client.post(f"{NODES}/l40s-0/drain", json={}, headers=admin)
    uncordon = client.post(f"{NODES}/l40s-0/uncordon", json={}, headers=admin)
    other_node = client.post(f"{NODES}/l40s-1/drain", json={}, headers=admin)
    listed = client.get(f"{NODES}?gpu_type=nvidia-l40s", headers=admin).get_json()

    assert first.status_code == 202
    job_id = first.get_json()["job_id"]
    assert second.status_code == 409
    assert error_code(second) == "drain_in_progress"
    assert second.get_json()["error"]["details"]["job_id"] == job_id
    assert uncordon.status_code == 409
    assert other_node.status_code == 202
    assert listed["items"][0]["active_drain_job_id"] == job_id
    job = client.get(f"/admin/v1/jobs/{job_id}", headers=admin).get_json()
    assert job["params"]["timeout_seconds"] == 600
    assert job["progress"]["phase"] == "cordon"

    cancel = client.post(f"/admin/v1/jobs/{job_id}/cancel", headers=admin)
    cancel_by_delete = client.delete(f"{NODES}/l40s-1/drain", headers=admin)
    assert cancel.status_code == 202
    assert cancel.get_json()["cancel_requested"] is True
    assert cancel_by_delete.status_code == 202
    assert cancel_by_delete.get_json()["cancel_requested"] is True
    with Session(clean_tables) as session:
        session.get(Job, uuid.UUID(job_id)).state = JobState.CANCELLED
        session.commit()
    again = client.post(f"/admin/v1/jobs/{job_id}/cancel", headers=admin)
    assert again.status_code == 409
    assert error_code(again) == "job_finished"
    assert client.post(f"{NODES}/l40s-0/drain", json={}, headers=admin).status_code == 202
    assert len(enqueued_task_ids()) == 3


def test_cancel_refuses_jobs_that_are_not_drains(client, admin, acme, seed_nodes):
    seed_nodes({"nvidia-l40s": [8]})
    created = client.post("/internal/deployments/create", json=create_body(name="reader"), headers=acme).get_json()
    cordon = client.post(f"{NODES}/l40s-0/cordon", json={}, headers=admin).get_json()

    create_cancel = client.post(f"/admin/v1/jobs/{created['job_id']}/cancel", headers=admin)
    cordon_cancel = client.post(f"/admin/v1/jobs/{cordon['job_id']}/cancel", headers=admin)
    missing = client.post(f"/admin/v1/jobs/{uuid.uuid4()}/cancel", headers=admin)

    # Admins see every job (GET answers 200), so a job they may not cancel is a conflict, not "not found".
    assert create_cancel.status_code == 409
    assert error_code(create_cancel) == "job_not_cancellable"
    assert cordon_cancel.status_code == 409
    assert error_code(cordon_cancel) == "job_not_cancellable"
    assert missing.status_code == 404
    # Admins read any tenant's job.
    assert client.get(f"/admin/v1/jobs/{created['job_id']}", headers=admin).get_json()["tenant_id"] == "acme"


def test_drain_body_is_validated(client, admin, seed_nodes):
    seed_nodes({"nvidia-l40s": [8]})
    for body in ({"timeout_seconds": 0}, {"force": "maybe"}, {"evict_everything": True},
                 {"grace_period_seconds": -1}):
        response = client.post(f"{NODES}/l40s-0/drain", json=body, headers=admin)
        assert response.status_code == 422, body
        assert error_code(response) == "validation_failed"


def test_drain_idempotency_key_replays_the_job(client, admin, seed_nodes, enqueued_task_ids):
    seed_nodes({"nvidia-l40s": [8]})
    headers = {**admin, "Idempotency-Key": "drain-l40s-0-a"}
    first = client.post(f"{NODES}/l40s-0/drain", json={"reason": "x"}, headers=headers)
    replay = client.post(f"{NODES}/l40s-0/drain", json={"reason": "x"}, headers=headers)
    reused = client.post(f"{NODES}/l40s-0/drain", json={"reason": "y"}, headers=headers)

    assert first.status_code == 202
    assert replay.status_code == 202
    assert replay.get_json()["job_id"] == first.get_json()["job_id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert reused.status_code == 409
    assert error_code(reused) == "idempotency_key_reused"
    assert JobType.NODE_DRAIN.value == first.get_json()["type"]


def test_node_detail(client, admin, acme, seed_nodes):
    seed_nodes({"nvidia-l40s": [8, 4]})
    response = client.get(f"{NODES}/l40s-1", headers=admin)

    assert response.status_code == 200
    body = response.get_json()
    assert body["name"] == "l40s-1"
    assert body["gpu"]["capacity"] == 4
    assert body["ready_status"] == "Ready"
    assert body["schedulable"] is True
    assert body["deployments"] == []
    assert body["pods"] == []


def test_allocated_gpus_come_from_the_live_pods_the_views_list(client, admin, seed_nodes, clean_tables):
    """The node row's total is the resource tracker's (once a minute); the pods are kept current by every status
    poll. Node detail, utilization and health all count the live pods, so they agree with the pods listed."""
    (node,) = seed_nodes({"nvidia-l40s": [8]})
    with Session(clean_tables) as session:
        session.execute(update(GpuNode).values(gpu_allocated=0))  # stale: the tracker has not run yet
        for name, gpus, phase, terminated in (("serving", 2, "Running", None), ("done", 4, "Succeeded", None),
                                              ("gone", 1, "Running", datetime.now(UTC))):
            session.add(PodAllocation(pod_uid=name, namespace="default", pod_name=name, node_name=node, gpus=gpus,
                                      phase=phase, terminated_at=terminated))
        session.commit()

    detail = client.get(f"/admin/v1/infrastructure/nodes/{node}", headers=admin).get_json()
    utilization = client.get("/admin/v1/infrastructure/gpu-utilization", headers=admin).get_json()
    health = client.get("/admin/v1/infrastructure/health", headers=admin).get_json()

    assert (detail["gpu"]["allocated"], detail["gpu"]["free"]) == (2, 6)
    assert (utilization["nodes"][0]["gpus"]["allocated"], utilization["nodes"][0]["gpus"]["free"]) == (2, 6)
    assert (utilization["cluster"]["gpus"]["allocated"], utilization["cluster"]["gpus"]["free"]) == (2, 6)
    assert health["gpus"]["allocated"] == 2
