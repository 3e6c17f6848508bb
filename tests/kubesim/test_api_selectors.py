"""Label/field selectors and pagination (kubesim-reference §3.6)."""

from __future__ import annotations

import json
from urllib.parse import quote

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from kubesim import errors
from kubesim.resources import BY_PLURAL
from kubesim.selectors import label_predicate, parse_field_selector, parse_label_selector
from tests.kubesim.test_api_support import add_node, pod_body, running_server


@pytest.fixture
def api():
    """A fresh API server over a stand-in simulation."""
    with running_server() as running:
        yield running


def _labels_match(selector: str, labels: dict[str, str]) -> bool:
    predicate = label_predicate(selector)
    return True if predicate is None else predicate({"metadata": {"labels": labels}})


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "web"}, True),
    ("app!=web", {"app": "db"}, True),
    ("app!=web", {}, True),  # != matches objects without the key
    ("app in (web,db)", {"app": "db"}, True),
    ("app notin (web,db)", {"app": "db"}, False),
    ("app notin (web,db)", {}, True),
    ("app", {"app": ""}, True),
    ("!app", {"app": "x"}, False),
    ("app=web,tier in (gpu, cpu),!canary", {"app": "web", "tier": "cpu"}, True),
    ("app=web,tier in (gpu,cpu)", {"app": "web", "tier": "tpu"}, False),
    ("nvidia.com/gpu.product=nvidia-l40s", {"nvidia.com/gpu.product": "nvidia-l40s"}, True),
    ("", {"x": "y"}, True),
])
def test_label_selector_grammar(selector, labels, expected):
    assert _labels_match(selector, labels) is expected


@pytest.mark.parametrize("selector", ["app in (web", "app=(x)", "=web", "app=web,", "app in ()", "a b", "app=we b",
                                      "-bad=x", "app gt 3"])
def test_label_selector_junk_is_400(selector):
    with pytest.raises(errors.ApiError) as caught:
        parse_label_selector(selector)
    assert caught.value.code == 400


def test_field_selector_rules():
    pods = BY_PLURAL["pods"]
    selection = parse_field_selector("spec.nodeName=n1,status.phase!=Failed", pods)
    assert selection.node_name == "n1"
    assert selection.predicate({"metadata": {}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    assert not selection.predicate({"metadata": {}, "spec": {"nodeName": "n1"}, "status": {"phase": "Failed"}})
    nodes = parse_field_selector("spec.unschedulable=false", BY_PLURAL["nodes"])
    assert nodes.predicate({"metadata": {}, "spec": {}})
    with pytest.raises(errors.ApiError) as caught:
        parse_field_selector("spec.nodeName=n1", BY_PLURAL["deployments"])
    assert caught.value.message == "field label not supported: spec.nodeName"


def test_selectors_over_http(api):
    add_node(api.store, "n1")
    add_node(api.store, "n2")
    v1 = kubernetes.client.CoreV1Api(api.api_client())
    v1.create_namespaced_pod("default", pod_body("a", labels={"app": "web"}, node="n1"))
    v1.create_namespaced_pod("default", pod_body("b", labels={"app": "web"}, node="n2"))
    v1.create_namespaced_pod("team-a", pod_body("c", labels={"app": "db"}, node="n1"))
    on_n1 = v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1")
    assert [p.metadata.name for p in on_n1.items] == ["a", "c"]
    describe_style = v1.list_pod_for_all_namespaces(
        field_selector="spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed")
    assert len(describe_style.items) == 2
    web = v1.list_namespaced_pod("default", label_selector="app in (web),app!=db")
    assert [p.metadata.name for p in web.items] == ["a", "b"]
    by_name = v1.list_namespaced_pod("default", field_selector="metadata.name=b")
    assert [p.metadata.name for p in by_name.items] == ["b"]
    # An equality selector (served from the label index) combined with field selectors, in one namespace,
    # across all namespaces, and paginated one pod per page.
    web_on_n2 = v1.list_namespaced_pod("default", label_selector="app=web", field_selector="spec.nodeName=n2")
    assert [p.metadata.name for p in web_on_n2.items] == ["b"]
    web_not_b = v1.list_namespaced_pod("default", label_selector="app==web", field_selector="metadata.name!=b")
    assert [p.metadata.name for p in web_not_b.items] == ["a"]
    everywhere = v1.list_pod_for_all_namespaces(label_selector="app=db", field_selector="spec.nodeName=n1")
    assert [(p.metadata.namespace, p.metadata.name) for p in everywhere.items] == [("team-a", "c")]
    first = v1.list_namespaced_pod("default", label_selector="app=web", limit=1)
    second = v1.list_namespaced_pod("default", label_selector="app=web", limit=1, _continue=first.metadata._continue)
    assert [p.metadata.name for p in first.items + second.items] == ["a", "b"]
    assert second.metadata._continue is None
    with pytest.raises(ApiException) as caught:
        v1.list_namespaced_pod("default", label_selector="app in (web")
    assert caught.value.status == 400
    with pytest.raises(ApiException) as caught:
        v1.list_namespaced_pod("default", field_selector="spec.image=x")
    assert json.loads(caught.value.body)["message"] == "field label not supported: spec.image"


def test_list_ignores_resource_version_parameters(api):
    status, body, _ = api.request("GET", "/api/v1/pods?resourceVersion=0&resourceVersionMatch=NotOlderThan")
    assert status == 200
    assert body["items"] == []


def test_pagination_over_1200_pods(api):
    for index in range(1200):
        api.store.create("pods", pod_body(f"p-{index:04d}"), "default" if index % 2 else "team-a")
    v1 = kubernetes.client.CoreV1Api(api.api_client())
    seen, token, pages = [], None, 0
    while True:
        page = v1.list_pod_for_all_namespaces(limit=500, _continue=token)
        pages += 1
        seen += [(p.metadata.namespace, p.metadata.name) for p in page.items]
        token = page.metadata._continue
        if pages == 1:
            assert page.metadata.remaining_item_count == 700
        if not token:
            break
    assert pages == 3
    assert len(seen) == 1200
    assert len(set(seen)) == 1200
    assert seen == sorted(seen)


def test_expired_continue_token_is_410_and_garbage_is_400(api):
    for index in range(5):
        api.store.create("pods", pod_body(f"p-{index}"), "default")
    status, first, _ = api.request("GET", "/api/v1/namespaces/default/pods?limit=2")
    token = first["metadata"]["continue"]
    status, second, _ = api.request("GET", f"/api/v1/namespaces/default/pods?limit=2&continue={quote(token)}")
    assert [p["metadata"]["name"] for p in second["items"]] == ["p-2", "p-3"]
    api.store.create("pods", pod_body("later"), "default")
    api.store.compact(api.store.revision)
    status, body, _ = api.request("GET", f"/api/v1/namespaces/default/pods?limit=2&continue={quote(token)}")
    assert (status, body["reason"]) == (410, "Expired")
    status, body, _ = api.request("GET", "/api/v1/namespaces/default/pods?limit=2&continue=%21%21garbage")
    assert status == 400
