"""Idempotency-Key: a retried POST returns the first job; a reused key with another body is refused."""

from __future__ import annotations

import json
import threading
import uuid

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import web.submission
from models import Deployment, Job
from tests.web.conftest import REDIS_URL
from tests.web.helpers import create_body, error_code, settle
from workers.queues import Queues

CREATE = "/internal/deployments/create"


def _job_count(engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(Job))


def _all_at_once(app, count: int, send) -> list[tuple[int, str]]:
    """``send(client)`` from ``count`` threads released together; (status, job_id) of every answer."""
    barrier = threading.Barrier(count)
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def submit() -> None:
        client = app.test_client()
        barrier.wait()
        response = send(client)
        with lock:
            results.append((response.status_code, response.get_json().get("job_id")))

    threads = [threading.Thread(target=submit) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_same_key_same_body_replays_the_first_job(client, acme, seed_nodes, clean_tables):
    seed_nodes({"nvidia-l40s": [8]})
    headers = {**acme, "Idempotency-Key": "create-1"}

    first = client.post(CREATE, json=create_body(name="once"), headers=headers)
    # Same request, fields in another order: the fingerprint is of the meaning, not the bytes.
    second = client.post(CREATE, json=dict(reversed(list(create_body(name="once").items()))), headers=headers)

    assert first.status_code == 202
    assert second.status_code == 202
    assert second.get_json()["job_id"] == first.get_json()["job_id"]
    assert second.get_json()["deployment_id"] == first.get_json()["deployment_id"]
    assert second.get_json()["replayed"] is True
    assert second.headers["Idempotent-Replayed"] == "true"
    assert _job_count(clean_tables) == 1


def test_same_key_different_body_is_409(client, acme, seed_nodes, clean_tables):
    seed_nodes({"nvidia-l40s": [8]})
    headers = {**acme, "Idempotency-Key": "create-2"}
    assert client.post(CREATE, json=create_body(name="first"), headers=headers).status_code == 202

    response = client.post(CREATE, json=create_body(name="second"), headers=headers)

    assert response.status_code == 409
    assert error_code(response) == "idempotency_key_reused"
    assert _job_count(clean_tables) == 1


def test_keys_are_scoped_per_tenant(client, headers_for, seed_nodes):
    seed_nodes({"nvidia-l40s": [8]})
    body = create_body(name="shared")

    acme = client.post(CREATE, json=body, headers={**headers_for("acme"), "Idempotency-Key": "k"})
    globex = client.post(CREATE, json=body, headers={**headers_for("globex"), "Idempotency-Key": "k"})

    assert acme.status_code == globex.status_code == 202
    assert acme.get_json()["job_id"] != globex.get_json()["job_id"]


def test_restart_with_key_is_replayed(client, acme, seed_nodes, clean_tables):
    seed_nodes({"nvidia-l40s": [8]})
    created = client.post(CREATE, json=create_body(name="rs"), headers=acme).get_json()
    settle(clean_tables, created["job_id"])
    path = f"/internal/deployments/{created['deployment_id']}/restart"

    first = client.post(path, headers={**acme, "Idempotency-Key": "restart-1"})
    again = client.post(path, headers={**acme, "Idempotency-Key": "restart-1"})

    assert first.status_code == again.status_code == 202
    assert again.get_json()["job_id"] == first.get_json()["job_id"]


def test_concurrent_requests_with_one_key_create_one_job(app, acme, seed_nodes, clean_tables, enqueued_task_ids):
    seed_nodes({"nvidia-l40s": [8]})
    headers = {**acme, "Idempotency-Key": "racing"}

    results = _all_at_once(app, 10, lambda client: client.post(CREATE, json=create_body(name="raced"), headers=headers))

    assert {status for status, _ in results} == {202}
    assert len({job_id for _, job_id in results}) == 1
    assert _job_count(clean_tables) == 1
    with Session(clean_tables) as session:
        assert session.scalar(select(func.count()).select_from(Deployment)) == 1
        task_id = session.scalar(select(Job.celery_task_id))
    assert set(enqueued_task_ids()) == {task_id}


def test_broker_outage_after_commit_is_503_and_a_retry_sends_the_job(
    client, acme, seed_nodes, clean_tables, enqueued_task_ids, monkeypatch
):
    seed_nodes({"nvidia-l40s": [8]})
    headers = {**acme, "Idempotency-Key": "during-outage"}
    real_enqueue = web.submission.dispatch.enqueue

    def broker_down(job):
        raise ConnectionError("redis unreachable")

    monkeypatch.setattr(web.submission.dispatch, "enqueue", broker_down)
    during = client.post(CREATE, json=create_body(name="outage"), headers=headers)
    monkeypatch.setattr(web.submission.dispatch, "enqueue", real_enqueue)
    after = client.post(CREATE, json=create_body(name="outage"), headers=headers)

    assert during.status_code == 503
    assert error_code(during) == "queue_unavailable"
    assert after.status_code == 202
    assert after.get_json()["job_id"] == during.get_json()["error"]["details"]["job_id"]
    with Session(clean_tables) as session:
        task_id = session.scalar(select(Job.celery_task_id))
    assert enqueued_task_ids() == [task_id]


def test_replay_of_a_pending_job_whose_message_is_queued_does_not_send_it_twice(
    client, acme, seed_nodes, clean_tables, enqueued_task_ids
):
    """Regression: a quick retry re-sent the still-queued message; two workers then ran one create at once."""
    seed_nodes({"nvidia-l40s": [8]})
    headers = {**acme, "Idempotency-Key": "quick-retry"}

    first = client.post(CREATE, json=create_body(name="quick"), headers=headers)
    again = client.post(CREATE, json=create_body(name="quick"), headers=headers)

    assert first.status_code == again.status_code == 202
    assert again.get_json()["replayed"] is True
    assert again.get_json()["state"] == "PENDING"
    with Session(clean_tables) as session:
        task_id = session.scalar(select(Job.celery_task_id))
    assert enqueued_task_ids() == [task_id]


def test_replay_of_a_pending_job_a_worker_already_received_does_not_send_it_again(
    client, acme, seed_nodes, clean_tables, enqueued_task_ids, broker_prefix
):
    seed_nodes({"nvidia-l40s": [8]})
    headers = {**acme, "Idempotency-Key": "delivered"}
    assert client.post(CREATE, json=create_body(name="delivered"), headers=headers).status_code == 202
    # What kombu does on delivery with acks_late: the message leaves the queue for the unacked hash.
    broker = redis.Redis.from_url(REDIS_URL)
    message = broker.rpop(f"{broker_prefix}{Queues.JOBS}")
    broker.hset(f"{broker_prefix}unacked", "delivery-tag-1", json.dumps([json.loads(message), "", Queues.JOBS]))

    again = client.post(CREATE, json=create_body(name="delivered"), headers=headers)

    assert again.status_code == 202
    assert again.get_json()["replayed"] is True
    assert enqueued_task_ids() == []


def test_an_admin_key_is_one_key_across_scales_and_node_jobs(client, acme, headers_for, seed_nodes, clean_tables):
    seed_nodes({"nvidia-l40s": [8]})
    created = client.post(CREATE, json=create_body(name="scaled", model_id="org/scaled"), headers=acme)
    settle(clean_tables, created.get_json()["job_id"])
    admin = {**headers_for(None, scopes=("admin",)), "Idempotency-Key": "k1"}

    scaled = client.post("/admin/v1/models/org/scaled/scale", json={"replicas": 2, "reason": "load"}, headers=admin)
    cordoned = client.post("/admin/v1/infrastructure/nodes/l40s-0/cordon", json={}, headers=admin)

    assert scaled.status_code == 202, scaled.get_json()
    assert cordoned.status_code == 409
    assert error_code(cordoned) == "idempotency_key_reused"
    assert cordoned.get_json()["error"]["details"] == {"job_id": scaled.get_json()["job_id"]}


def test_concurrent_node_jobs_with_one_key_create_one_job(app, headers_for, seed_nodes, clean_tables,
                                                           enqueued_task_ids):
    seed_nodes({"nvidia-l40s": [8]})
    headers = {**headers_for(None, scopes=("admin",)), "Idempotency-Key": "racing-cordon"}

    results = _all_at_once(app, 8, lambda client: client.post(
        "/admin/v1/infrastructure/nodes/l40s-0/cordon", json={"reason": "x"}, headers=headers))

    assert {status for status, _ in results} == {202}
    assert len({job_id for _, job_id in results}) == 1
    assert _job_count(clean_tables) == 1


def test_a_node_job_key_kept_under_the_former_admin_scope_is_still_replayed(
    client, headers_for, seed_nodes, clean_tables, enqueued_task_ids
):
    """Node jobs' keys were scoped admin:<subject> before they shared the requester's scope: a retry sent across
    the upgrade finds the job its first attempt made instead of making a second one."""
    seed_nodes({"nvidia-l40s": [8]})
    admin = {**headers_for(None, scopes=("admin",)), "Idempotency-Key": "before-upgrade"}
    first = client.post("/admin/v1/infrastructure/nodes/l40s-0/cordon", json={"reason": "x"}, headers=admin)
    with Session(clean_tables) as session:
        job = session.get(Job, uuid.UUID(first.get_json()["job_id"]))
        job.idempotency_scope = job.idempotency_scope.replace("requester:", "admin:", 1)
        session.commit()

    retried = client.post("/admin/v1/infrastructure/nodes/l40s-0/cordon", json={"reason": "x"}, headers=admin)

    assert retried.status_code == 202
    assert retried.get_json()["job_id"] == first.get_json()["job_id"]
    assert _job_count(clean_tables) == 1
