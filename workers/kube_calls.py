"""Small helpers over the official client: plain-JSON requests for single objects, paginated lists.

:func:`send` (and :func:`get`, :func:`list_objects`) go to the client's ``ApiClient`` itself with paths built
by :func:`object_path`: the generated per-resource methods validate every argument with pydantic and walk the
body to sanitise model objects, which costs more CPU than the request itself, and a manifest is already plain
JSON. Host, authentication, TLS, headers and the HTTP pool are still the client's.

:func:`list_pages` pages the sweeps' cluster-wide lists through the generated list methods. Both parse the
JSON themselves (``_preload_content=False`` for the generated ones): the workers handle plain dicts, the same
shape as the manifests they write, and skipping the client's model deserialisation makes large lists several
times cheaper. Failures arrive classified (:mod:`workers.cluster_errors`), and every call carries the
per-request timeout.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from kubernetes.client.exceptions import ApiException

from workers.cluster_errors import PermanentClusterError, call, translate
from workers.k8s import KubeClients

JSON = "application/json"

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
LIST_PAGE_SIZE = 500


def _decode(response: Any) -> dict[str, Any]:
    data = response.data
    return json.loads(data) if data else {}


# Collection paths of the namespaced kinds a deployment is made of.
COLLECTION_PATHS = {
    "deployment": "/apis/apps/v1/namespaces/{namespace}/deployments",
    "service": "/api/v1/namespaces/{namespace}/services",
    "pdb": "/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets",
    "pod": "/api/v1/namespaces/{namespace}/pods",
}


def namespace_path(name: str | None = None) -> str:
    """The API path of the namespaces collection, or of one namespace."""
    return "/api/v1/namespaces" if name is None else f"/api/v1/namespaces/{quote(name, safe='')}"


def object_path(kind: str, namespace: str, name: str | None = None) -> str:
    """The API path of ``kind``'s collection in ``namespace``, or of one object in it."""
    path = COLLECTION_PATHS[kind].format(namespace=quote(namespace, safe=""))
    return path if name is None else f"{path}/{quote(name, safe='')}"


def send(
    clients: KubeClients,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    content_type: str = JSON,
    query: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One request with a plain-JSON body, answered with the server's JSON (see the module doc)."""
    api = clients.api_client
    headers = {"Accept": JSON, "Content-Type": content_type} if body is not None else {"Accept": JSON}
    # The body is left out of param_serialize (it would only be walked for model objects) and handed to the
    # REST layer as it is, which JSON-encodes it.
    method, url, headers, _, _ = api.param_serialize(
        method,
        path,
        query_params=[(key, value) for key, value in (query or {}).items() if value is not None],
        header_params=headers,
        auth_settings=["BearerToken"],
    )
    with translate():
        response = api.call_api(method, url, headers, body, _request_timeout=clients.request_timeout)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
    return json.loads(response.data) if response.data else {}


def get(clients: KubeClients, path: str) -> dict[str, Any] | None:
    """GET one object through :func:`send`; ``None`` if it does not exist (404)."""
    try:
        return send(clients, "GET", path)
    except PermanentClusterError as error:
        if error.status == 404:
            return None
        raise


def list_objects(clients: KubeClients, path: str, *, label_selector: str | None = None) -> Iterator[dict]:
    """Every item of a collection through :func:`send`, page by page, like :func:`list_pages`."""
    return _paged(lambda token: send(
        clients, "GET", path, query={"labelSelector": label_selector, "limit": LIST_PAGE_SIZE, "continue": token}
    ))


def _paged(fetch: Callable[[str | None], dict[str, Any]]) -> Iterator[dict]:
    """The items of ``fetch(continue_token)`` pages, following ``metadata.continue`` until the last page."""
    token: str | None = None
    while True:
        page = fetch(token)
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def list_pages(
    clients: KubeClients,
    function: Callable[..., Any],
    *args: Any,
    on_page: Callable[[], None] | None = None,
    **kwargs: Any,
) -> Iterator[dict]:
    """Every item of a list call, page by page (``limit`` + ``continue``), so huge clusters never arrive as
    one response. ``on_page`` is called once per request (sweeps report their call counts)."""

    def fetch(token: str | None) -> dict[str, Any]:
        if on_page is not None:
            on_page()
        page_kwargs = dict(kwargs, limit=LIST_PAGE_SIZE)
        if token:
            page_kwargs["_continue"] = token
        return _decode(call(function, *args, _preload_content=False, **clients.timeout, **page_kwargs))

    return _paged(fetch)
