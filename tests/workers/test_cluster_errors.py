"""Transient vs permanent classification of Kubernetes client failures."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError

from workers.cluster_errors import PermanentClusterError, TransientClusterError, classify, translate


def api_error(status: int, message: str = "boom", headers: dict | None = None) -> ApiException:
    error = ApiException(status=status, reason="Reason")
    error.body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": status})
    error.headers = headers or {}
    return error


@pytest.mark.parametrize("status", [409, 429, 500, 502, 503, 504])
def test_transient_statuses(status):
    classified = classify(api_error(status))
    assert isinstance(classified, TransientClusterError)
    assert classified.status == status
    assert classified.retryable


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 415, 422])
def test_permanent_statuses_carry_the_cluster_message(status):
    classified = classify(api_error(status, message=f"denied {status}"))
    assert isinstance(classified, PermanentClusterError)
    assert classified.message == f"denied {status}"
    assert classified.to_job_error() == {"code": classified.code, "message": f"denied {status}", "retryable": False}


def test_retry_after_is_read():
    classified = classify(api_error(429, headers={"Retry-After": "7"}))
    assert classified.retry_after == 7.0
    assert classify(api_error(503)).retry_after is None


@pytest.mark.parametrize(
    "error",
    [
        MaxRetryError(None, "/api", reason="refused"),
        ProtocolError("Connection aborted.", ConnectionResetError()),
        ReadTimeoutError(None, "/api", "Read timed out."),
        NewConnectionError(None, "Failed to establish a new connection"),
        ConnectionRefusedError(),
        TimeoutError("timed out"),
    ],
)
def test_network_errors_are_transient(error):
    assert isinstance(classify(error), TransientClusterError)


def test_non_cluster_errors_are_left_alone():
    assert classify(ValueError("bug")) is None
    with pytest.raises(ValueError, match="bug"), translate():
        raise ValueError("bug")


def test_translate_raises_classified_with_cause():
    original = api_error(422, message='Deployment.apps "x" is invalid')
    with pytest.raises(PermanentClusterError) as caught, translate():
        raise original
    assert caught.value.__cause__ is original
    assert caught.value.code == "cluster_invalid"


def test_non_json_body_is_used_verbatim():
    error = ApiException(status=500, reason="Internal")
    error.body = "upstream exploded"
    assert classify(error).message == "upstream exploded"
