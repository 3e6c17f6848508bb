"""One body rule for every area: JSON or nothing (415), strict JSON types, and no silently ignored parameters."""

from __future__ import annotations

import pytest

from tests.web.helpers import create_body, error_code

NODES = "/admin/v1/infrastructure/nodes"
MODEL = "org/bench-model"


@pytest.fixture
def admin(headers_for):
    return headers_for(None, scopes=("admin",), subject="ops-alice")


@pytest.fixture
def deployment_id(client, acme, seed_nodes) -> str:
    seed_nodes({"nvidia-l40s": [8, 8]})
    created = client.post("/internal/deployments/create", json=create_body(name="reader", model_id=MODEL), headers=acme)
    assert created.status_code == 202, created.get_json()
    return created.get_json()["deployment_id"]


def test_a_body_that_is_not_json_is_415_on_every_area(client, admin, acme, deployment_id, enqueued_task_ids):
    sent_before = len(enqueued_task_ids())
    cordon = client.post(f"{NODES}/l40s-0/cordon", data="reason=maintenance", headers=admin,
                         content_type="text/plain")  # fmt: skip
    scale = client.post(f"/admin/v1/models/{MODEL}/scale", data='{"replicas": 2, "reason": "r"}', headers=admin)
    restart = client.post(f"/internal/deployments/{deployment_id}/restart", data="now", headers=acme,
                          content_type="text/plain")  # fmt: skip
    anonymous = client.post(f"{NODES}/l40s-0/cordon", data="x", content_type="text/plain")

    for response in (cordon, scale, restart):
        assert response.status_code == 415, response.get_json()
        assert error_code(response) == "unsupported_media_type"
    assert anonymous.status_code == 401  # who you are is checked first
    assert len(enqueued_task_ids()) == sent_before


def test_admin_bodies_take_json_types_only(client, admin, deployment_id):
    scale_string = client.post(f"/admin/v1/models/{MODEL}/scale", json={"replicas": "3", "reason": "r"}, headers=admin)
    scale_too_many = client.post(f"/admin/v1/models/{MODEL}/scale", json={"replicas": 65, "reason": "r"},
                                 headers=admin)  # fmt: skip
    drain_yes = client.post(f"{NODES}/l40s-0/drain", json={"dry_run": "yes"}, headers=admin)
    drain_true_timeout = client.post(f"{NODES}/l40s-0/drain", json={"timeout_seconds": True}, headers=admin)

    for response, field in ((scale_string, "replicas"), (scale_too_many, "replicas"), (drain_yes, "dry_run"),
                            (drain_true_timeout, "timeout_seconds")):  # fmt: skip
        assert response.status_code == 422, response.get_json()
        assert field in response.get_json()["error"]["details"]["fields"]


def test_an_operation_without_parameters_refuses_a_body_that_has_some(client, acme, deployment_id, enqueued_task_ids):
    restart_path = f"/internal/deployments/{deployment_id}/restart"
    with_field = client.post(restart_path, json={"replicas": 1}, headers=acme)
    a_list = client.post(restart_path, json=[1], headers=acme)
    broken = client.post(restart_path, data="{", headers=acme, content_type="application/json")

    assert with_field.status_code == 422
    assert with_field.get_json()["error"]["details"]["fields"] == {"replicas": ["Unknown field."]}
    assert a_list.status_code == 422
    assert broken.status_code == 400
    assert error_code(broken) == "invalid_json"
    sent_before = len(enqueued_task_ids())
    # The deployment is still CREATING, so a well-formed restart is refused for that reason, not for its body.
    empty_object = client.post(restart_path, json={}, headers=acme)
    assert error_code(empty_object) != "validation_failed"
    assert len(enqueued_task_ids()) == sent_before
