"""Small helpers over the official client: JSON reads, paginated lists, typed patches.

Reads use ``_preload_content=False`` and parse the JSON themselves: the workers handle plain dicts
(the same shape as the manifests they write), and skipping the client's model deserialisation makes
large lists several times cheaper. Every call goes through :func:`workers.cluster_errors.call`, so
failures arrive classified, and carries the per-request timeout.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from workers.cluster_errors import PermanentClusterError, call
from workers.k8s import KubeClients

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
LIST_PAGE_SIZE = 500


def _decode(response: Any) -> dict[str, Any]:
    data = response.data
    return json.loads(data) if data else {}


def read(clients: KubeClients, function: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any] | None:
    """GET one object as a dict; ``None`` if it does not exist (404)."""
    try:
        return _decode(call(function, *args, _preload_content=False, **clients.timeout, **kwargs))
    except PermanentClusterError as error:
        if error.status == 404:
            return None
        raise


def invoke(clients: KubeClients, function: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Any write call (create/patch/delete), returning the server's JSON answer."""
    return _decode(call(function, *args, _preload_content=False, **clients.timeout, **kwargs))


def list_pages(
    clients: KubeClients,
    function: Callable[..., Any],
    *args: Any,
    on_page: Callable[[], None] | None = None,
    **kwargs: Any,
) -> Iterator[dict]:
    """Every item of a list call, page by page (``limit`` + ``continue``), so huge clusters never arrive as
    one response. ``on_page`` is called once per request (sweeps report their call counts)."""
    token: str | None = None
    while True:
        if on_page is not None:
            on_page()
        page_kwargs = dict(kwargs, limit=LIST_PAGE_SIZE)
        if token:
            page_kwargs["_continue"] = token
        page = _decode(call(function, *args, _preload_content=False, **clients.timeout, **page_kwargs))
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return
