"""Input no schema field anticipates (JSON nested past the decoder's depth, NUL characters, lone surrogates, integers
too long to convert, a key given twice) is a 4xx in the error envelope on every kind of endpoint, never a 500:
Postgres text cannot hold NUL or a lone surrogate, the decoder recurses, and Python refuses 4,300-digit integers."""

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
    assert list(response.get_json()["error"]["details"]["fields"]) == ["reason"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/v1/models/org/m/scale", '{"replicas": 1, "reason": "bad \\ud800 surrogate"}'),
        ("/admin/v1/infrastructure/nodes/l40s-0/cordon", '{"reason": "\\udfff"}'),
        (CREATE, '{"model_id": "org/m", "name": "x", "vllm_args": ["--served-model-name=\\ud83d"]}'),
    ],
)
def test_a_lone_surrogate_is_a_field_error(client, headers_for, clean_tables, path, body):
    scopes = ("internal",) if path == CREATE else ("admin",)
    headers = {**headers_for("acme" if path == CREATE else None, scopes=scopes), "Content-Type": "application/json"}

    response = client.post(path, data=body, headers=headers)

    assert response.status_code == 422
    assert error_code(response) == "validation_failed"


def test_a_surrogate_pair_is_ordinary_text(client, admin, clean_tables):
    body = '{"replicas": 1, "reason": "rollout \\ud83d\\ude80"}'  # one emoji, written as a UTF-16 pair
    response = client.post("/admin/v1/models/org/m/scale", data=body,
                           headers={**admin, "Content-Type": "application/json"})

    assert response.status_code == 404  # validated, then: no deployment serves org/m
    assert error_code(response) == "model_not_found"


@pytest.mark.parametrize(
    ("path", "body", "scopes"),
    [
        ("/admin/v1/tenants/acme/quota", '{"gpu_quota": 1' + "0" * 5000 + "}", ("admin",)),
        ("/admin/v1/models/org/m/scale", '{"replicas": 1' + "0" * 5000 + ', "reason": "x"}', ("admin",)),
        (CREATE, '{"model_id": "org/m", "replicas": 1' + "0" * 5000 + "}", ("internal",)),
    ],
)
def test_an_integer_too_long_to_convert_is_invalid_json(client, headers_for, clean_tables, path, body, scopes):
    headers = {**headers_for("acme" if "internal" in scopes else None, scopes=scopes),
               "Content-Type": "application/json"}
    method = client.put if path.endswith("/quota") else client.post

    response = method(path, data=body, headers=headers)

    assert response.status_code == 400
    assert error_code(response) == "invalid_json"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/v1/infrastructure/nodes/l40s-0/drain", '{"dry_run": true, "dry_run": false}'),
        ("/admin/v1/models/org/m/scale", '{"replicas": 1, "reason": "x", "replicas": 5}'),
        (f"/admin/v1/jobs/{uuid.uuid4()}/cancel", '{"a": 1, "a": 2}'),
    ],
)
def test_a_key_given_twice_is_invalid_json(client, admin, clean_tables, path, body):
    response = client.post(path, data=body, headers={**admin, "Content-Type": "application/json"})

    assert response.status_code == 400
    assert error_code(response) == "invalid_json"


@pytest.mark.parametrize("value", ["1", "0", '"true"'])
def test_booleans_must_be_json_booleans(client, admin, clean_tables, value):
    response = client.post("/admin/v1/infrastructure/nodes/l40s-0/drain", data='{"dry_run": ' + value + "}",
                           headers={**admin, "Content-Type": "application/json"})

    assert response.status_code == 422
    assert "dry_run" in response.get_json()["error"]["details"]["fields"]


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


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(client, acme, constant):
    body = '{"model_id": "org/m", "autoscaling": {"enabled": true, "targets": {"queue_depth": ' + constant + "}}}"

    response = client.post(CREATE, data=body, headers={**acme, "Content-Type": "application/json"})

    assert response.status_code == 400
    assert error_code(response) == "invalid_json"


@pytest.mark.parametrize("limit", ["\uff15", "\u0661\u0662"])  # fullwidth 5, Arabic-Indic 12
def test_a_query_integer_takes_ascii_digits(client, acme, headers_for, limit):
    internal = client.get(f"/internal/deployments?limit={limit}", headers=acme)
    admin = client.get(f"/admin/v1/infrastructure/nodes?limit={limit}", headers=headers_for(None, scopes=("admin",)))

    assert internal.status_code == 422
    assert admin.status_code == 422
    assert "limit" in internal.get_json()["error"]["details"]["fields"]


def test_a_delete_refuses_body_fields(client, acme, seed_nodes):
    seed_nodes({"nvidia-l40s": [8]})
    deployment_id = client.post(CREATE, json=create_body(), headers=acme).get_json()["deployment_id"]

    response = client.delete(f"/internal/deployments/{deployment_id}", json={"force": True}, headers=acme)

    assert response.status_code == 422
    assert list(response.get_json()["error"]["details"]["fields"]) == ["force"]


def test_an_empty_body_declared_as_json_is_no_body(client, admin, seed_nodes, enqueued_task_ids):
    """Many clients send Content-Type: application/json on a POST without a body: that is the schema's defaults."""
    seed_nodes({"nvidia-l40s": [8]})

    response = client.post("/admin/v1/infrastructure/nodes/l40s-0/cordon", data=b"",
                           headers={**admin, "Content-Type": "application/json"})

    assert response.status_code == 202, response.get_json()


def test_a_number_out_of_float_range_is_invalid_json(client, acme):
    body = '{"model_id": "org/m", "autoscaling": {"enabled": true, "targets": {"queue_depth": 1e400}}}'

    response = client.post(CREATE, data=body, headers={**acme, "Content-Type": "application/json"})

    assert response.status_code == 400
    assert error_code(response) == "invalid_json"


def test_a_query_integer_with_underscores_is_422(client, acme):
    response = client.get("/internal/deployments?limit=1_0", headers=acme)

    assert response.status_code == 422


def test_a_delete_body_that_is_not_json_is_415(client, acme, seed_nodes):
    seed_nodes({"nvidia-l40s": [8]})
    deployment_id = client.post(CREATE, json=create_body(), headers=acme).get_json()["deployment_id"]

    response = client.delete(f"/internal/deployments/{deployment_id}", data="force=1",
                             headers={**acme, "Content-Type": "text/plain"})

    assert response.status_code == 415
