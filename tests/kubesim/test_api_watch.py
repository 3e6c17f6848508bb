"""Watches: `watch=True`, resourceVersion semantics, 410, bookmarks, selectors, Table events (§3.6)."""

from __future__ import annotations

import json
import threading
import urllib.request

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.kubesim.test_api_support import pod_body, running_server


@pytest.fixture
def api():
    """A fresh API server over a stand-in simulation."""
    with running_server() as running:
        yield running


def _stream(api, path: str, accept: str = "application/json") -> list[dict]:
    request = urllib.request.Request(api.url + path, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=20) as response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def test_python_watch_stream_sends_initial_state_then_changes(api):
    v1 = kubernetes.client.CoreV1Api(api.api_client())
    v1.create_namespaced_pod("default", pod_body("first"))
    writer = threading.Timer(0.3, lambda: api.store.create("pods", pod_body("second"), "default"))
    writer.start()
    events = []
    for event in kubernetes.watch.Watch().stream(v1.list_namespaced_pod, "default", timeout_seconds=2):
        events.append((event["type"], event["object"].metadata.name))
        if len(events) == 2:
            break
    writer.join()
    assert events == [("ADDED", "first"), ("ADDED", "second")]


@pytest.mark.parametrize("flag", ["True", "true", "1", "yes"])
def test_any_watch_value_but_0_or_false_streams(api, flag):
    api.store.create("pods", pod_body("p"), "default")
    events = _stream(api, f"/api/v1/namespaces/default/pods?watch={flag}&timeoutSeconds=0.2")
    assert [e["type"] for e in events] == ["ADDED"]


@pytest.mark.parametrize("flag", ["0", "false"])
def test_watch_0_or_false_is_a_list(api, flag):
    status, body, _ = api.request("GET", f"/api/v1/namespaces/default/pods?watch={flag}")
    assert (status, body["kind"]) == (200, "PodList")


def test_watch_from_resource_version_sends_only_later_events(api):
    created = api.store.create("pods", pod_body("old"), "default")
    rv = created["metadata"]["resourceVersion"]
    api.store.create("pods", pod_body("new"), "default")
    api.store.delete("pods", "default", "old")
    events = _stream(api, f"/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "new"), ("DELETED", "old")]
    assert events[0]["object"]["kind"] == "Pod"  # watch events keep TypeMeta


def test_compacted_resource_version_gives_410_error_event(api):
    created = api.store.create("pods", pod_body("old"), "default")
    api.store.create("pods", pod_body("newer"), "default")
    api.store.compact(api.store.revision)
    events = _stream(api, f"/api/v1/namespaces/default/pods?watch=true&resourceVersion="
                          f"{created['metadata']['resourceVersion']}&timeoutSeconds=5")
    assert len(events) == 1
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410
    assert events[0]["object"]["message"].startswith("too old resource version:")


def test_python_watch_raises_410_after_compaction(api):
    created = api.store.create("pods", pod_body("old"), "default")
    api.store.create("pods", pod_body("newer"), "default")
    api.store.compact(api.store.revision)
    v1 = kubernetes.client.CoreV1Api(api.api_client())
    with pytest.raises(ApiException) as caught:
        list(kubernetes.watch.Watch().stream(v1.list_namespaced_pod, "default", timeout_seconds=5,
                                             resource_version=created["metadata"]["resourceVersion"]))
    assert caught.value.status == 410


def test_watch_ends_at_timeout_and_sends_bookmarks(api):
    events = _stream(api, "/api/v1/namespaces/default/pods?watch=1&allowWatchBookmarks=true&timeoutSeconds=2.5")
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks
    assert bookmarks[-1]["object"]["kind"] == "Pod"
    assert int(bookmarks[-1]["object"]["metadata"]["resourceVersion"]) <= api.store.revision
    assert _stream(api, "/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1") == []


def test_selector_watch_reports_leaving_objects_as_deleted(api):
    api.store.create("pods", pod_body("p", labels={"app": "web"}), "default")
    api.store.create("pods", pod_body("other", labels={"app": "db"}), "default")
    rv = str(api.store.revision)

    def relabel() -> None:
        api.store.mutate("pods", "default", "other", lambda p: p["metadata"]["labels"].update(app="web"))
        api.store.mutate("pods", "default", "p", lambda p: p["metadata"]["labels"].update(app="gone"))

    writer = threading.Timer(0.3, relabel)
    writer.start()
    events = _stream(api, f"/api/v1/namespaces/default/pods?watch=1&labelSelector=app%3Dweb"
                          f"&resourceVersion={rv}&timeoutSeconds=1.5")
    writer.join()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "other"), ("DELETED", "p")]


def test_field_selector_watch_on_other_namespaces_and_types_is_quiet(api):
    api.store.create("pods", pod_body("mine"), "default")
    rv = str(api.store.revision)
    writer = threading.Timer(0.2, lambda: (api.store.create("pods", pod_body("elsewhere"), "team-a"),
                                           api.store.create("namespaces", {"metadata": {"name": "x"}})))
    writer.start()
    events = _stream(api, f"/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}"
                          f"&fieldSelector=metadata.name%3Dmine&timeoutSeconds=1")
    writer.join()
    assert events == []


def test_table_watch_wraps_each_object_in_a_one_row_table(api):
    api.store.create("pods", pod_body("p"), "default")
    events = _stream(api, "/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1",
                     accept="application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    assert len(events) == 1
    table = events[0]["object"]
    assert table["kind"] == "Table"
    assert len(table["rows"]) == 1
    assert table["rows"][0]["cells"][0] == "p"
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_watch_list_ends_initial_events_with_annotated_bookmark(api):
    api.store.create("pods", pod_body("a"), "default")
    api.store.create("pods", pod_body("b"), "default")
    events = _stream(api, "/api/v1/namespaces/default/pods?watch=true&sendInitialEvents=true&allowWatchBookmarks=true"
                          "&resourceVersionMatch=NotOlderThan&fieldSelector=metadata.name%3Db&timeoutSeconds=0.5")
    assert [e["type"] for e in events[:2]] == ["ADDED", "BOOKMARK"]
    assert events[0]["object"]["metadata"]["name"] == "b"
    marker = events[1]["object"]["metadata"]
    assert marker["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert marker["resourceVersion"] == str(api.store.revision)
