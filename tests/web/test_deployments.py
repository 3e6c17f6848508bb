"""The deployment endpoints end to end through the API: rows written, job enqueued after commit, reads."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime

import redis
from kombu.exceptions import BatchPublishError
from kombu.transport.redis import PublishBatch
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Deployment, GpuReservation, Job, JobState, PodAllocation, Tenant
from models.db import get_engine
from tests.web.conftest import REDIS_URL
from tests.web.helpers import create_body, error_code, settle
from web.internal.deployments.schemas import DeploymentStatusSchema
from workers import queries

CREATE = "/internal/deployments/create"


def test_create_answers_202_with_job_and_enqueues_it(client, acme, seed_nodes, enqueued_task_ids, clean_tables):
    seed_nodes({"nvidia-l40s": [8]})

    response = client.post(CREATE, json=create_body(name="llama", replicas=2, gpus_per_replica=2), headers=acme)

    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert response.headers["Location"] == body["job_url"] == f"/internal/jobs/{body['job_id']}"
    assert body["status_url"] == f"/internal/deployments/{body['deployment_id']}/status"
    assert body["replayed"] is False
    with Session(clean_tables) as session:
        job = session.get(Job, uuid.UUID(body["job_id"]))
        deployment = session.get(Deployment, uuid.UUID(body["deployment_id"]))
        reserved = session.scalars(select(GpuReservation.gpus).where(GpuReservation.deployment_id == deployment.id))
        assert job.state == JobState.PENDING
        assert deployment.tenant_id == "acme"
        assert deployment.name == "llama"
        assert sum(reserved) == 4
    assert enqueued_task_ids() == [job.celery_task_id]


def test_create_also_sends_the_task_sent_event(client, acme, seed_nodes, enqueued_task_ids, clean_tables):
    """Flower's ``task-sent`` event goes out with the task (they share one publish batch)."""
    seed_nodes({"nvidia-l40s": [8]})
    events = redis.Redis.from_url(REDIS_URL).pubsub(ignore_subscribe_messages=True)
    events.psubscribe("*celeryev*")
    events.get_message(timeout=1)  # the subscription's own confirmation

    response = client.post(CREATE, json=create_body(name="llama"), headers=acme)

    assert response.status_code == 202, response.get_json()
    [task_id] = enqueued_task_ids()
    sent_for = []
    deadline = time.monotonic() + 10
    while task_id not in sent_for and time.monotonic() < deadline:
        message = events.get_message(timeout=1)
        if message is not None:
            sent = json.loads(base64.b64decode(json.loads(message["data"])["body"]))
            if sent["type"] == "task-sent":
                sent_for.append(sent["uuid"])
    events.close()
    assert task_id in sent_for


def test_a_failed_publish_batch_is_sent_again(
    client, acme, seed_nodes, enqueued_task_ids, clean_tables, monkeypatch
):
    seed_nodes({"nvidia-l40s": [8]})

    def lose_the_connection(_batch):
        raise BatchPublishError("Redis publish batch failed; delivery is uncertain")

    monkeypatch.setattr(PublishBatch, "flush", lose_the_connection)

    response = client.post(CREATE, json=create_body(name="llama"), headers=acme)

    assert response.status_code == 202, response.get_json()
    with Session(clean_tables) as session:
        job = session.get(Job, uuid.UUID(response.get_json()["job_id"]))
    assert enqueued_task_ids() == [job.celery_task_id]


def test_job_and_status_and_detail_are_readable(client, acme, seed_nodes):
    seed_nodes({"nvidia-l40s": [8]})
    submitted = client.post(CREATE, json=create_body(name="reader"), headers=acme).get_json()

    job = client.get(submitted["job_url"], headers=acme)
    status = client.get(submitted["status_url"], headers=acme)
    detail = client.get(f"/internal/deployments/{submitted['deployment_id']}", headers=acme)

    assert job.status_code == 200
    assert job.get_json()["type"] == "deployment.create"
    assert job.get_json()["state"] == "PENDING"
    assert job.get_json()["target"] == {"kind": "deployment", "id": submitted["deployment_id"]}
    assert job.get_json()["requested_by"] == "svc-test"
    assert status.status_code == 200
    assert status.get_json()["replicas"] == {"desired": 1, "ready": 0}
    assert status.get_json()["active_job"]["id"] == submitted["job_id"]
    assert detail.status_code == 200
    assert detail.get_json()["name"] == "reader"
    assert detail.get_json()["autoscaling"]["enabled"] is False


def _pod(deployment: Deployment, name: str, **fields) -> PodAllocation:
    return PodAllocation(
        pod_uid=f"uid-{name}",
        namespace=deployment.k8s_namespace,
        pod_name=name,
        deployment_id=deployment.id,
        tenant_id=deployment.tenant_id,
        gpus=1,
        **fields,
    )


def test_status_body_is_exactly_what_its_schema_documents(app, client, acme, seed_nodes, clean_tables):
    """The route sends its view without a marshmallow dump: the body must be byte for byte the schema's dump
    of the same view (field set and order, ISO datetime, escaping), with every field filled in."""
    seed_nodes({"nvidia-l40s": [8]})
    submitted = client.post(CREATE, json=create_body(name="watched", replicas=2), headers=acme).get_json()
    observed_at = datetime(2026, 11, 27, 10, 28, 37, 153713, tzinfo=UTC)
    with Session(clean_tables) as session:
        deployment = session.get(Deployment, uuid.UUID(submitted["deployment_id"]))
        deployment.replicas_ready = 1
        deployment.status_reason = "ImagePullBackOff"
        deployment.status_message = 'Back-off pulling image "vllm" – retrying'
        deployment.last_observed_at = observed_at
        session.add_all(
            [
                _pod(deployment, "watched-b", node_name="l40s-0", phase="Pending", reason="ImagePullBackOff"),
                _pod(deployment, "watched-a", node_name="l40s-0", phase="Running", ready=True, restarts=2),
                _pod(deployment, "watched-old", node_name="l40s-0", phase="Running", terminated_at=observed_at),
            ]
        )
        session.commit()
        schema_body = app.json.response(
            DeploymentStatusSchema().dump(queries.deployment_status(session, "acme", deployment.id))
        ).get_data()

    response = client.get(submitted["status_url"], headers=acme)

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_data() == schema_body
    body = response.get_json()
    assert datetime.fromisoformat(body.pop("last_observed_at")) == observed_at
    assert body == {
        "deployment_id": submitted["deployment_id"],
        "name": "watched",
        "status": "PENDING",
        "reason": "ImagePullBackOff",
        "message": 'Back-off pulling image "vllm" – retrying',
        "replicas": {"desired": 2, "ready": 1},
        "endpoint": body["endpoint"],
        "pods": [
            {"name": "watched-a", "node": "l40s-0", "phase": "Running", "ready": True, "restarts": 2, "reason": None},
            {
                "name": "watched-b",
                "node": "l40s-0",
                "phase": "Pending",
                "ready": False,
                "restarts": 0,
                "reason": "ImagePullBackOff",
            },
        ],
        "active_job": {"id": submitted["job_id"], "type": "deployment.create", "state": "PENDING"},
    }
    assert body["endpoint"].endswith(".svc.cluster.local:8000")


def test_status_reads_hand_their_connection_back_in_transaction_mode(client, acme, seed_nodes):
    """The status read runs its statement in autocommit on a pooled connection; whoever checks that connection
    out next must get transactions again, or its multi-statement writes would silently stop being atomic."""
    seed_nodes({"nvidia-l40s": [8]})
    submitted = client.post(CREATE, json=create_body(name="pooled"), headers=acme).get_json()

    assert client.get(submitted["status_url"], headers=acme).status_code == 200
    assert client.get(f"/internal/deployments/{uuid.uuid4()}/status", headers=acme).status_code == 404

    engine = get_engine()
    idle = [engine.raw_connection() for _ in range(engine.pool.checkedin())]
    try:
        assert idle
        assert [pooled.driver_connection.autocommit for pooled in idle] == [False] * len(idle)
    finally:
        for pooled in idle:
            pooled.close()


def test_list_filters_and_paginates(client, acme, seed_nodes):
    seed_nodes({"nvidia-l40s": [8, 8], "nvidia-h100": [8]})
    for index in range(5):
        assert client.post(CREATE, json=create_body(name=f"m{index}"), headers=acme).status_code == 202
    assert client.post(CREATE, json=create_body(name="big", gpu_type="nvidia-h100"), headers=acme).status_code == 202

    first = client.get("/internal/deployments?limit=4", headers=acme).get_json()
    second = client.get(f"/internal/deployments?limit=4&cursor={first['next_cursor']}", headers=acme).get_json()
    by_type = client.get("/internal/deployments?gpu_type=nvidia-h100", headers=acme).get_json()
    by_name = client.get("/internal/deployments?name=m3", headers=acme).get_json()
    by_status = client.get("/internal/deployments?status=RUNNING", headers=acme).get_json()

    names = [item["name"] for item in first["items"] + second["items"]]
    assert len(first["items"]) == 4
    assert second["next_cursor"] is None
    assert sorted(names) == ["big", "m0", "m1", "m2", "m3", "m4"]
    assert [item["name"] for item in by_type["items"]] == ["big"]
    assert [item["name"] for item in by_name["items"]] == ["m3"]
    assert by_status["items"] == []


def test_restart_and_delete_answer_202_once_the_deployment_is_free(client, acme, seed_nodes, clean_tables):
    seed_nodes({"nvidia-l40s": [8]})
    submitted = client.post(CREATE, json=create_body(name="cycle"), headers=acme).get_json()
    base = f"/internal/deployments/{submitted['deployment_id']}"

    delete_while_creating = client.delete(base, headers=acme)
    restart_while_creating = client.post(f"{base}/restart", headers=acme)
    settle(clean_tables, submitted["job_id"])
    restart = client.post(f"{base}/restart", headers=acme)
    settle(clean_tables, restart.get_json()["job_id"])
    delete = client.delete(base, headers=acme)

    assert delete_while_creating.status_code == 409
    assert error_code(delete_while_creating) == "deployment_busy"
    assert restart_while_creating.status_code == 409
    assert error_code(restart_while_creating) == "invalid_state"
    assert restart.status_code == 202
    assert client.get(restart.get_json()["job_url"], headers=acme).get_json()["type"] == "deployment.restart"
    assert delete.status_code == 202
    assert client.get(delete.get_json()["job_url"], headers=acme).get_json()["type"] == "deployment.delete"
    assert client.get(f"{base}/status", headers=acme).get_json()["status"] == "DELETING"


def test_a_deployment_scaled_to_zero_has_nothing_to_restart(client, acme, seed_nodes, clean_tables):
    seed_nodes({"nvidia-l40s": [8]})
    submitted = client.post(CREATE, json=create_body(name="idle"), headers=acme).get_json()
    settle(clean_tables, submitted["job_id"])
    with Session(clean_tables) as session:
        session.get(Deployment, uuid.UUID(submitted["deployment_id"])).replicas_desired = 0
        session.commit()

    restart = client.post(f"/internal/deployments/{submitted['deployment_id']}/restart", headers=acme)

    assert restart.status_code == 409
    assert error_code(restart) == "nothing_to_restart"


def test_unknown_ids_are_404(client, acme):
    missing = uuid.uuid4()

    for method, path in [
        ("get", f"/internal/deployments/{missing}"),
        ("get", f"/internal/deployments/{missing}/status"),
        ("post", f"/internal/deployments/{missing}/restart"),
        ("delete", f"/internal/deployments/{missing}"),
        ("get", f"/internal/jobs/{missing}"),
    ]:
        response = getattr(client, method)(path, headers=acme)
        assert response.status_code == 404, path
        assert error_code(response) in {"deployment_not_found", "job_not_found"}


def test_insufficient_gpu_is_409_with_details(client, acme, seed_nodes, enqueued_task_ids):
    seed_nodes({"nvidia-l40s": [4, 2]})

    response = client.post(CREATE, json=create_body(replicas=2, gpus_per_replica=4), headers=acme)

    assert response.status_code == 409
    assert error_code(response) == "insufficient_gpu"
    details = response.get_json()["error"]["details"]
    assert details["gpu_type"] == "nvidia-l40s"
    assert enqueued_task_ids() == []


def test_more_gpus_per_replica_than_any_node_is_422(client, acme, seed_nodes):
    seed_nodes({"nvidia-l40s": [4]})

    response = client.post(CREATE, json=create_body(gpus_per_replica=8), headers=acme)

    assert response.status_code == 422


def test_duplicate_name_is_409(client, acme, seed_nodes):
    seed_nodes({"nvidia-l40s": [8]})
    assert client.post(CREATE, json=create_body(name="same"), headers=acme).status_code == 202

    response = client.post(CREATE, json=create_body(name="same"), headers=acme)

    assert response.status_code == 409
    assert error_code(response) == "name_taken"


def test_quota_exceeded_is_409(client, acme, seed_nodes, clean_tables):
    seed_nodes({"nvidia-l40s": [8, 8]})
    with Session(clean_tables) as session:
        session.add(Tenant(id="acme", name="Acme", gpu_quota=4))
        session.commit()

    within = client.post(CREATE, json=create_body(name="fits", gpus_per_replica=4), headers=acme)
    beyond = client.post(CREATE, json=create_body(name="over", gpus_per_replica=1), headers=acme)

    assert within.status_code == 202
    assert beyond.status_code == 409
    assert error_code(beyond) == "quota_exceeded"
    assert beyond.get_json()["error"]["details"]["quota"] == 4


def test_resources_available_reports_free_gpus_and_quota(client, acme, seed_nodes):
    seed_nodes({"nvidia-l40s": [8, 4]})
    assert client.post(CREATE, json=create_body(gpus_per_replica=4), headers=acme).status_code == 202

    response = client.get("/internal/resources/available", headers=acme)

    assert response.status_code == 200
    body = response.get_json()
    l40s = body["gpu_types"]["nvidia-l40s"]
    assert l40s["free_total"] == 8
    assert body["quota"]["used"] == 4
    assert body["reservations_in_flight"]["nvidia-l40s"]["gpus"] == 4
