"""Fault injection as the client sees it, and the request log (kubesim-reference §4.7, §3.11)."""

from __future__ import annotations

import json

import kubernetes
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from kubesim import errors
from kubesim.faults import FaultInjector
from tests.kubesim.test_api_support import pod_body, running_server


@pytest.fixture
def api():
    """A fresh API server over a stand-in simulation."""
    with running_server() as running:
        yield running


def _client(api, retries: int | None = None) -> kubernetes.client.CoreV1Api:
    configuration = kubernetes.client.Configuration(host=api.url)
    if retries is not None:
        configuration.retries = retries
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))


def test_500_fault_matches_resource_and_verb_then_expires(api):
    api.server.faults.add({"resource": "pods", "verb": "list", "count": 1, "action": {"status": 500}})
    v1 = _client(api, retries=0)
    v1.list_namespace()  # another resource: unaffected
    with pytest.raises(ApiException) as caught:
        v1.list_namespaced_pod("default")
    assert caught.value.status == 500
    assert json.loads(caught.value.body)["reason"] == "InternalError"
    assert v1.list_namespaced_pod("default").items == []  # count exhausted


def test_429_on_post_with_and_without_retry_after(api):
    api.server.faults.add({"method": "POST", "resource": "pods", "count": 2,
                           "action": {"status": 429, "retry_after": 3}})
    v1 = _client(api)
    with pytest.raises(ApiException) as caught:
        v1.create_namespaced_pod("default", pod_body("p"))
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "3"
    assert json.loads(caught.value.body)["details"]["retryAfterSeconds"] == 3
    api.server.faults.clear()
    api.server.faults.add({"method": "POST", "count": 1, "action": {"status": 429}})
    with pytest.raises(ApiException) as caught:
        v1.create_namespaced_pod("default", pod_body("p"))
    assert "Retry-After" not in caught.value.headers


def test_urllib3_retries_hide_one_429_with_retry_after_on_get(api):
    api.server.faults.add({"method": "GET", "resource": "pods", "count": 1,
                           "action": {"status": 429, "retry_after": 0}})
    assert _client(api).list_namespaced_pod("default").items == []
    statuses = [r.status for r in api.server.request_log.entries("GET", r"/pods$")]
    assert statuses == [429, 200]


def test_dropped_connection_is_a_urllib3_error(api):
    api.server.faults.add({"path": r"/namespaces/default/pods$", "action": {"drop": True}})
    v1 = _client(api, retries=0)
    with pytest.raises(urllib3.exceptions.HTTPError):
        v1.list_namespaced_pod("default")
    assert api.server.request_log.entries("GET", r"/pods$")[-1].status == 0


def test_latency_beyond_client_timeout_is_read_timeout(api):
    api.server.faults.add({"resource": "namespaces", "count": 1, "action": {"latency": 1.0}})
    v1 = _client(api, retries=0)
    with pytest.raises(urllib3.exceptions.HTTPError):
        v1.list_namespace(_request_timeout=0.2)


def test_probability_is_seeded_and_rules_validate():
    first, second = FaultInjector(seed=4), FaultInjector(seed=4)
    for injector in (first, second):
        injector.add({"probability": 0.5, "action": {"status": 503}})
    pattern_a = [first.match("GET", "/api/v1/pods", "pods", "list") is not None for _ in range(20)]
    pattern_b = [second.match("GET", "/api/v1/pods", "pods", "list") is not None for _ in range(20)]
    assert pattern_a == pattern_b
    assert any(pattern_a)
    assert not all(pattern_a)
    for bad in ({"action": {"status": 418}}, {"action": {}}, {"count": 0, "action": {"drop": True}},
                {"path": "(", "action": {"drop": True}}, {"bogus": 1, "action": {"drop": True}}):
        with pytest.raises(errors.ApiError) as caught:
            first.add(bad)
        assert caught.value.code == 400


def test_request_log_records_every_request(api):
    v1 = _client(api)
    v1.create_namespaced_pod("default", pod_body("p"))
    v1.read_namespaced_pod("p", "default")
    log = api.server.request_log.entries()
    assert [(r.method, r.path, r.status) for r in log] == [
        ("POST", "/api/v1/namespaces/default/pods", 201), ("GET", "/api/v1/namespaces/default/pods/p", 200)]
    api.request("PATCH", "/api/v1/namespaces/default/pods/p", {"metadata": {"labels": {"a": "b"}}},
                content_type="application/merge-patch+json")
    assert api.server.request_log.entries("PATCH")[0].content_type == "application/merge-patch+json"
