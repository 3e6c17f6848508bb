"""POST /admin/v1/models/{model_id}/scale and GET /admin/v1/scaling/events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Deployment, ScalingEvent, ScalingEventStatus, ScalingTrigger
from tests.web.helpers import create_body, error_code, settle

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
EVENTS = "/admin/v1/scaling/events"


def _create(client, headers, engine, name, **overrides):
    submitted = client.post("/internal/deployments/create", json=create_body(name=name, **overrides), headers=headers)
    assert submitted.status_code == 202, submitted.get_json()
    settle(engine, submitted.get_json()["job_id"])
    return submitted.get_json()["deployment_id"]


def test_scale_by_model_id_with_a_slash(client, admin, acme, seed_nodes, clean_tables, enqueued_task_ids):
    seed_nodes({"nvidia-l40s": [8]})
    deployment_id = _create(client, acme, clean_tables, "reader")

    response = client.post(f"/admin/v1/models/{MODEL}/scale", json={"replicas": 3, "reason": "launch day"},
                           headers=admin)

    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["type"] == "deployment.scale"
    assert body["deployment_id"] == deployment_id
    assert body["job_id"] in enqueued_task_ids() or len(enqueued_task_ids()) == 2
    events = client.get(f"{EVENTS}?deployment_id={deployment_id}", headers=admin).get_json()["items"]
    assert len(events) == 1
    assert events[0]["trigger"] == "manual"
    assert (events[0]["replicas_before"], events[0]["replicas_after"]) == (1, 3)
    assert events[0]["reason"] == "launch day"
    assert events[0]["actor"] == "ops-alice"
    assert events[0]["inputs"]["model_id"] == MODEL
    with Session(clean_tables) as session:
        assert session.get(Deployment, uuid.UUID(deployment_id)).replicas_desired == 3


def test_ambiguous_model_is_409_listing_the_deployments(client, admin, acme, headers_for, seed_nodes, clean_tables):
    seed_nodes({"nvidia-l40s": [8]})
    first = _create(client, acme, clean_tables, "reader")
    second = _create(client, headers_for("globex"), clean_tables, "reader")

    ambiguous = client.post(f"/admin/v1/models/{MODEL}/scale", json={"replicas": 2, "reason": "r"}, headers=admin)
    chosen = client.post(f"/admin/v1/models/{MODEL}/scale",
                         json={"replicas": 2, "reason": "r", "deployment_id": second}, headers=admin)

    assert ambiguous.status_code == 409
    assert error_code(ambiguous) == "ambiguous_model"
    listed = ambiguous.get_json()["error"]["details"]["deployments"]
    assert {item["deployment_id"] for item in listed} == {first, second}
    assert {item["tenant_id"] for item in listed} == {"acme", "globex"}
    assert chosen.status_code == 202
    assert chosen.get_json()["deployment_id"] == second


def test_scale_up_that_does_not_fit_is_409_and_recorded_blocked(client, admin, acme, seed_nodes, clean_tables):
    seed_nodes({"nvidia-l40s": [4]})
    deployment_id = _create(client, acme, clean_tables, "reader", gpus_per_replica=2)

    response = client.post(f"/admin/v1/models/{MODEL}/scale", json={"replicas": 3, "reason": "too big"},
                           headers=admin)

    assert response.status_code == 409
    assert error_code(response) == "insufficient_gpu"
    details = response.get_json()["error"]["details"]
    assert details["requested_per_replica"] == 2
    assert details["free_total"] == 2
    with Session(clean_tables) as session:
        assert session.get(Deployment, uuid.UUID(deployment_id)).replicas_desired == 1
        events = session.scalars(select(ScalingEvent)).all()
    assert [(e.status, e.replicas_before, e.replicas_after) for e in events] == [(ScalingEventStatus.BLOCKED, 1, 3)]
    assert events[0].inputs["refused"]["code"] == "insufficient_gpu"


def test_scale_errors(client, admin, acme, seed_nodes, clean_tables):
    seed_nodes({"nvidia-l40s": [8]})
    _create(client, acme, clean_tables, "reader")
    unknown_model = client.post("/admin/v1/models/nobody/nothing/scale", json={"replicas": 1, "reason": "r"},
                                headers=admin)
    wrong_deployment = client.post(
        f"/admin/v1/models/{MODEL}/scale",
        json={"replicas": 1, "reason": "r", "deployment_id": "00000000-0000-0000-0000-000000000001"}, headers=admin)
    negative = client.post(f"/admin/v1/models/{MODEL}/scale", json={"replicas": -1, "reason": "r"}, headers=admin)
    no_reason = client.post(f"/admin/v1/models/{MODEL}/scale", json={"replicas": 1}, headers=admin)
    blank_reason = client.post(f"/admin/v1/models/{MODEL}/scale", json={"replicas": 1, "reason": " \t "},
                               headers=admin)

    assert unknown_model.status_code == 404
    assert error_code(unknown_model) == "model_not_found"
    assert wrong_deployment.status_code == 404
    assert negative.status_code == 422
    assert no_reason.status_code == 422
    assert blank_reason.status_code == 422
    assert blank_reason.get_json()["error"]["details"]["fields"] == {"reason": ["Must not be blank."]}


def test_scaling_a_deleted_deployment_by_id_says_it_was_deleted(client, admin, acme, seed_nodes, clean_tables):
    seed_nodes({"nvidia-l40s": [8]})
    deployment_id = _create(client, acme, clean_tables, "gone")
    assert client.delete(f"/internal/deployments/{deployment_id}", headers=acme).status_code == 202

    response = client.post(f"/admin/v1/models/{MODEL}/scale",
                           json={"replicas": 2, "reason": "r", "deployment_id": deployment_id}, headers=admin)

    assert response.status_code == 404
    assert error_code(response) == "deployment_not_found"
    assert response.get_json()["error"]["message"] == (
        f"deployment {deployment_id} is DELETING and serves model {MODEL!r} no more"
    )


def test_a_manual_scale_of_an_autoscaled_deployment_stays_in_its_range(client, admin, acme, seed_nodes,
                                                                        clean_tables):
    seed_nodes({"nvidia-l40s": [8, 8]})
    _create(client, acme, clean_tables, "elastic", replicas=2,
            autoscaling={"enabled": True, "min_replicas": 1, "max_replicas": 4, "target_gpu_utilization": 70})

    def scale(replicas):
        return client.post(f"/admin/v1/models/{MODEL}/scale", json={"replicas": replicas, "reason": "ops"},
                           headers=admin)

    above = scale(10)
    assert above.status_code == 409
    assert error_code(above) == "outside_autoscaling_range"
    assert above.get_json()["error"]["details"] == {"replicas": 10, "min_replicas": 1, "max_replicas": 4}
    assert scale(4).status_code == 202  # within the range


def test_a_manual_scale_to_zero_stops_an_autoscaled_deployment(client, admin, acme, seed_nodes, clean_tables):
    seed_nodes({"nvidia-l40s": [8]})
    _create(client, acme, clean_tables, "elastic", replicas=2,
            autoscaling={"enabled": True, "min_replicas": 1, "max_replicas": 4, "target_gpu_utilization": 70})

    stop = client.post(f"/admin/v1/models/{MODEL}/scale", json={"replicas": 0, "reason": "weekend"}, headers=admin)

    assert stop.status_code == 202


def test_scaling_events_filters_and_pagination(client, admin, acme, seed_nodes, clean_tables):
    seed_nodes({"nvidia-l40s": [8]})
    deployment_id = _create(client, acme, clean_tables, "reader")
    now = datetime.now(UTC)
    rows = [
        (ScalingTrigger.MANUAL, ScalingEventStatus.SUCCEEDED, 1, 2, now - timedelta(hours=3)),
        (ScalingTrigger.AUTO, ScalingEventStatus.SUCCEEDED, 2, 3, now - timedelta(hours=2)),
        (ScalingTrigger.DRAIN, ScalingEventStatus.SUCCEEDED, 3, 4, now - timedelta(hours=1)),
        (ScalingTrigger.RECOVERY, ScalingEventStatus.BLOCKED, 4, 4, now - timedelta(minutes=30)),
        (ScalingTrigger.AUTO, ScalingEventStatus.FAILED, 4, 5, now - timedelta(minutes=10)),
    ]
    with Session(clean_tables) as session:
        for trigger, status, before, after, created_at in rows:
            session.add(ScalingEvent(
                deployment_id=uuid.UUID(deployment_id), tenant_id="acme", model_id=MODEL,
                trigger=trigger, status=status, replicas_before=before, replicas_after=after,
                reason=f"{trigger} step", inputs={"queue_depth": before}, created_at=created_at,
            ))
        session.add(ScalingEvent(deployment_id=None, tenant_id="globex", model_id="other/model",
                                 trigger=ScalingTrigger.MANUAL, status=ScalingEventStatus.SUCCEEDED,
                                 replicas_before=0, replicas_after=1, created_at=now - timedelta(minutes=5)))
        session.commit()

    def names(query: str) -> list[tuple[str, int]]:
        response = client.get(f"{EVENTS}?{query}", headers=admin)
        assert response.status_code == 200, response.get_json()
        return [(item["trigger"], item["replicas_after"]) for item in response.get_json()["items"]]

    assert names("tenant_id=acme") == [("auto", 5), ("recovery", 4), ("drain", 4), ("auto", 3), ("manual", 2)]
    assert names("trigger=auto") == [("auto", 5), ("auto", 3)]
    assert names("status=blocked") == [("recovery", 4)]
    assert names("model_id=other/model") == [("manual", 1)]
    assert names(f"deployment_id={deployment_id}&trigger=drain") == [("drain", 4)]
    since = (now - timedelta(hours=1, minutes=30)).isoformat().replace("+00:00", "Z")
    until = (now - timedelta(minutes=20)).isoformat().replace("+00:00", "Z")
    assert names(f"since={since}&until={until}") == [("recovery", 4), ("drain", 4)]
    page = client.get(f"{EVENTS}?limit=4", headers=admin).get_json()
    rest = client.get(f"{EVENTS}?limit=4&cursor={page['next_cursor']}", headers=admin).get_json()
    assert len(page["items"]) == 4
    assert len(rest["items"]) == 2
    assert rest["next_cursor"] is None
    assert page["items"][1]["inputs"] == {"queue_depth": 4}
    for query in ("trigger=sometimes", "status=done", f"since={until}&until={since}", "since=yesterday"):
        response = client.get(f"{EVENTS}?{query}", headers=admin)
        assert response.status_code == 422, query
