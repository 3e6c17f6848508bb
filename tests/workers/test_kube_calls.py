"""Plain-JSON requests through the client's ApiClient, against kubesim: paths, pagination, classified errors."""

from __future__ import annotations

import pytest

from tests.workers.sweeps_support import sim_environment
from workers import k8s, kube_calls
from workers.cluster_errors import PermanentClusterError, TransientClusterError
from workers.kube_calls import get, list_objects, object_path, send


@pytest.fixture
def clients(tmp_path, monkeypatch):
    with sim_environment(tmp_path, monkeypatch, nodes="1xnvidia-l40s:8", seed=1):
        yield k8s.get_clients()


def pod(name: str, app: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


def test_create_get_patch_and_missing(clients):
    created = send(clients, "POST", object_path("pod", "default"), pod("a", "x"))
    assert created["metadata"]["name"] == "a"
    assert get(clients, object_path("pod", "default", "a"))["metadata"]["labels"] == {"app": "x"}
    patched = send(
        clients,
        "PATCH",
        object_path("pod", "default", "a"),
        {"metadata": {"labels": {"tier": "gpu"}}},
        content_type=kube_calls.STRATEGIC_MERGE_PATCH,
    )
    assert patched["metadata"]["labels"] == {"app": "x", "tier": "gpu"}
    assert get(clients, object_path("pod", "default", "nope")) is None


def test_errors_arrive_classified(clients):
    send(clients, "POST", object_path("pod", "default"), pod("a", "x"))
    with pytest.raises(TransientClusterError) as exists:
        send(clients, "POST", object_path("pod", "default"), pod("a", "x"))
    assert exists.value.status == 409
    with pytest.raises(PermanentClusterError) as invalid:
        send(clients, "POST", object_path("pod", "default"), pod("Not_A_Name", "x"))
    assert invalid.value.status == 422


def test_list_follows_continue_tokens_and_filters_by_label(clients, monkeypatch):
    monkeypatch.setattr(kube_calls, "LIST_PAGE_SIZE", 2)
    for index in range(5):
        send(clients, "POST", object_path("pod", "default"), pod(f"p{index}", "x" if index != 3 else "y"))
    names = [
        item["metadata"]["name"]
        for item in list_objects(clients, object_path("pod", "default"), label_selector="app=x")
    ]
    assert sorted(names) == ["p0", "p1", "p2", "p4"]
