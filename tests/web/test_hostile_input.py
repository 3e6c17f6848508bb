"""Input no schema field anticipates (JSON nested past the decoder's depth, NUL characters) is a 4xx in the error
envelope on every kind of endpoint, never a 500: Postgres text cannot hold NUL, and the decoder recurses."""

from __future__ import annotations

import uuid

import pytest

from tests.web.helpers import create_body, error_code

CREATE = "/internal/deployments/create"
DEPTH = 1500  # past Python's recursion limit (1000): the decoder itself gives up


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [400, 900])
def test_json_nested_deep_but_decodable_is_refused_by_the_schema(client, acme, depth):
    body = '{"model_id": "org/m", "autoscaling": ' + nested(depth) + "}"

    response = client.post(CREATE, data=body, headers={**acme, "Content-Type": "application/json"})

    assert response.status_code == 422
    assert "autoscaling" in response.get_json()["error"]["details"]["fields"]


@pytest.fixture
def admin(headers_for):
    return headers_for(None, scopes=("admin",))


@pytest.mark.parametrize(
    ("method", "path", "scopes", "body"),
    [
        ("post", CREATE, ("internal",), '{"model_id": "org/m", "autoscaling": ' + nested(DEPTH) + "}"),
        ("post", f"/internal/deployments/{uuid.uuid4()}/restart", ("internal",), nested(DEPTH)),
        ("post", "/admin/v1/models/org/m/scale", ("admin",), '{"replicas": ' + nested(DEPTH) + "}"),
        ("post", f"/admin/v1/jobs/{uuid.uuid4()}/cancel", ("admin",), nested(DEPTH)),
    ],
)
def test_json_nested_deeper_than_can_be_decoded_is_invalid_json(client, headers_for, method, path, scopes, body):
    tenant = "acme" if "internal" in scopes else None
    headers = {**headers_for(tenant, scopes=scopes), "Content-Type": "application/json"}

    response = getattr(client, method)(path, data=body, headers=headers)

    assert response.status_code == 400
    assert error_code(response) == "invalid_json"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "a\u0000b"}, "name"),
        ({"model_id": "org/m\u0000"}, "model_id"),
        ({"vllm_args": ["--served-model-name=a\u0000b"]}, "vllm_args"),
        ({"autoscaling": {"targets": {"queue\u0000depth": 5}}}, "autoscaling"),
    ],
)
def test_nul_in_a_create_body_is_a_field_error(client, acme, overrides, field):
    response = client.post(CREATE, json=create_body(**overrides), headers=acme)

    assert response.status_code == 422
    assert error_code(response) == "validation_failed"
    assert field in response.get_json()["error"]["details"]["fields"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/v1/models/org/m/scale", {"replicas": 1, "reason": "\u0000nul"}),
        ("/admin/v1/infrastructure/nodes/l40s-0/cordon", {"reason": "\u0000"}),
    ],
)
def test_nul_in_an_admin_body_is_a_field_error(client, admin, clean_tables, path, body):
    response = client.post(path, json=body, headers=admin)

    assert response.status_code == 422
    assert response.get_json()["error"]["details"]["fields"] == {"reason": ["Text must not contain NUL characters."]}


@pytest.mark.parametrize("query", ["name=a%00b", "model_id=org/a%00b", "status=RUNNING%00"])
def test_nul_in_a_query_parameter_is_a_field_error(client, acme, clean_tables, query):
    response = client.get(f"/internal/deployments?{query}", headers=acme)

    assert response.status_code == 422
    assert query.split("=")[0] in response.get_json()["error"]["details"]["fields"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/admin/v1/infrastructure/nodes/a%00b"),
        ("post", "/admin/v1/models/org/a%00b/scale"),
        ("get", "/admin/v1/scaling/events?model_id=org/a%00b"),
    ],
)
def test_nul_in_an_admin_path_or_filter_is_a_4xx(client, admin, clean_tables, method, path):
    kwargs = {"json": {"replicas": 1, "reason": "x"}} if method == "post" else {}

    response = getattr(client, method)(path, headers=admin, **kwargs)

    assert response.status_code in (404, 422)
    assert response.is_json
