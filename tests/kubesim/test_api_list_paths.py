"""The fast list path (sorted key index, cached item bytes) answers exactly as a full scan would.

Also: a server whose port is taken fails with the bind's OSError, not an error from half-built state.
"""

from __future__ import annotations

import errno
import json
import socket
import time
from urllib.parse import quote

import pytest

from kubesim.clock import VirtualClock
from kubesim.server import KubeSimServer
from kubesim.store import Store, clone
from tests.kubesim.test_api_support import START, StandInSim, pod_body, running_server


@pytest.fixture
def api():
    with running_server(namespaces=("default", "kube-system", "team-a", "team-ab")) as running:
        yield running


def _keys(items: list[dict]) -> list[tuple[str, str]]:
    return [(i["metadata"].get("namespace", ""), i["metadata"]["name"]) for i in items]


def _page_through(api, path: str, limit: int) -> tuple[list[tuple[str, str]], list[dict]]:
    """Every key a paginated list returns, and each page's list metadata."""
    keys, metas, token = [], [], None
    while True:
        separator = "&" if "?" in path else "?"
        url = f"{path}{separator}limit={limit}" + (f"&continue={quote(token)}" if token else "")
        status, body, _ = api.request("GET", url)
        assert status == 200, body
        keys += _keys(body["items"])
        metas.append(body["metadata"])
        token = body["metadata"].get("continue")
        if not token:
            return keys, metas


def _fill(api) -> None:
    # Namespaces that prefix one another ("team-a", "team-ab") and names created out of order.
    for index in (7, 3, 9, 1, 5, 0, 8, 2, 6, 4):
        for namespace in ("team-ab", "default", "team-a"):
            labels = {"parity": "even" if index % 2 == 0 else "odd"}
            api.store.create("pods", pod_body(f"p-{index}", labels=labels), namespace)


def test_port_in_use_raises_the_bind_error():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        clock = VirtualClock(start=START)
        with pytest.raises(OSError, match="in use") as raised:
            KubeSimServer(StandInSim(Store(clock), clock), "127.0.0.1", holder.getsockname()[1])
        assert raised.value.errno == errno.EADDRINUSE
    finally:
        holder.close()


def test_namespace_pages_stay_inside_their_namespace(api):
    _fill(api)
    keys, metas = _page_through(api, "/api/v1/namespaces/team-a/pods", limit=4)
    assert keys == [("team-a", f"p-{i}") for i in range(10)]
    assert [m.get("remainingItemCount") for m in metas] == [6, 2, None]


def test_all_namespace_pages_match_a_sorted_scan_across_deletes(api):
    _fill(api)
    status, first, _ = api.request("GET", "/api/v1/pods?limit=7")
    assert status == 200
    assert first["metadata"]["remainingItemCount"] == 23
    # Remove one object already served and one still ahead; the next page continues after the token's key.
    api.store.delete("pods", "default", "p-0")
    api.store.delete("pods", "team-a", "p-5")
    token = first["metadata"]["continue"]
    status, rest, _ = api.request("GET", f"/api/v1/pods?continue={quote(token)}")
    assert status == 200
    served = _keys(first["items"]) + _keys(rest["items"])
    expected = sorted((ns, f"p-{i}") for ns in ("default", "team-a", "team-ab") for i in range(10))
    expected.remove(("team-a", "p-5"))
    assert served == expected


def test_selector_pages_stop_at_the_limit_and_omit_the_remaining_count(api):
    _fill(api)
    keys, metas = _page_through(api, "/api/v1/pods?labelSelector=parity%3Deven", limit=4)
    assert keys == sorted((ns, f"p-{i}") for ns in ("default", "team-a", "team-ab") for i in range(0, 10, 2))
    assert len(metas) == 4  # 15 matches: 4 + 4 + 4 + 3, and no empty trailing page
    assert all("remainingItemCount" not in m for m in metas)


def test_list_body_is_the_plain_json_encoding_and_follows_writes(api):
    _fill(api)
    status, body, _ = api.request("GET", "/api/v1/namespaces/default/pods")
    assert status == 200
    items, revision = api.store.list("pods", "default")
    expected = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(revision)},
                "items": [{k: v for k, v in item.items() if k not in ("kind", "apiVersion")} for item in items]}
    assert body == json.loads(json.dumps(expected))
    assert len(api.store.encoded) == 10

    api.store.mutate("pods", "default", "p-3", lambda pod: pod["metadata"]["labels"].update(parity="changed"))
    api.store.delete("pods", "default", "p-4")
    status, body, _ = api.request("GET", "/api/v1/namespaces/default/pods")
    assert status == 200
    by_name = {item["metadata"]["name"]: item for item in body["items"]}
    assert by_name["p-3"]["metadata"]["labels"]["parity"] == "changed"
    assert by_name["p-3"]["metadata"]["resourceVersion"] == api.store.get("pods", "default", "p-3")[
        "metadata"]["resourceVersion"]
    assert "p-4" not in by_name
    assert len(api.store.encoded) == 9


def test_restore_keeps_the_key_index_in_step(api):
    _fill(api)
    snapshot = api.store.snapshot()
    api.store.delete("pods", "team-a", "p-1")
    api.store.create("pods", pod_body("extra"), "kube-system")
    api.store.restore(clone(snapshot))
    keys, _ = _page_through(api, "/api/v1/pods", limit=8)
    assert keys == sorted((ns, f"p-{i}") for ns in ("default", "team-a", "team-ab") for i in range(10))


def test_a_page_with_more_to_come_encodes_the_next_page_ahead(api):
    _fill(api)
    status, first, _ = api.request("GET", "/api/v1/namespaces/team-a/pods?limit=4")
    assert status == 200
    # The read-ahead runs after the answer went out, on the server's thread: wait for it to finish.
    deadline = time.monotonic() + 10
    while len(api.store.encoded) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(api.store.encoded) == 8  # this page's 4 items and the next page's 4
    status, second, _ = api.request("GET", f"/api/v1/namespaces/team-a/pods?limit=4&continue="
                                           f"{quote(first['metadata']['continue'])}")
    assert _keys(second["items"]) == [("team-a", f"p-{i}") for i in range(4, 8)]
    status, last, _ = api.request("GET", f"/api/v1/namespaces/team-a/pods?limit=4&continue="
                                         f"{quote(second['metadata']['continue'])}")
    assert _keys(last["items"]) == [("team-a", "p-8"), ("team-a", "p-9")]
    assert "continue" not in last["metadata"]
    assert len(api.store.encoded) == 10  # the last page has no next page to read ahead
