"""The Kubernetes API over HTTP/1.1: routing, CRUD, lists, watches, subresources (kubesim-reference §3).

One `KubeSimServer` (stdlib `ThreadingHTTPServer`, a thread per connection, keep-alive with
Content-Length, chunked transfer for watches) serves a `Simulation`'s store. Every failure is a
`Status` object, because the official client and kubectl both branch on its `reason`.

Reads hand out the store's shared dicts and serialise them directly; a paginated list of 10,000
pods must stay under two seconds, so nothing on the read path deep-copies.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from kubesim import auth_reviews, discovery, errors, protobuf, selectors, tables
from kubesim.admission import StoreAdmission
from kubesim.clock import rfc3339
from kubesim.eviction import evict
from kubesim.faults import FaultInjector, RequestLog, RequestRecord
from kubesim.patch import APPLY_PATCH, apply_patch
from kubesim.request_head import HeadError, parse_request_line, read_headers
from kubesim.resources import BY_PLURAL, ResourceType
from kubesim.store import clone

Obj = dict[str, Any]
JSON = "application/json"
TRUE_FALSE_OFF = ("0", "false", "False")
BOOKMARK_INTERVAL = 1.0  # real seconds between BOOKMARK events on watches that asked for them
WATCH_POLL = 0.5  # real seconds a watch sleeps on the store before re-checking its deadline
CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new list "
    "without the continue parameter, or use the continue token in this response to retrieve the remainder of the "
    "results. Continuing with the provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may show up in the list."
)
NOT_FOUND_PATH = "the server could not find the requested resource"


@dataclass
class Route:
    """A parsed API path. `plural` is None for discovery documents."""

    group: str
    version: str
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch_prefix: bool = False  # the deprecated /watch/ path form

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def parse_api_path(path: str) -> Route | None:
    """`/api/v1/namespaces/ns/pods/p/log` → Route; None when the path is not under /api or /apis."""
    parts = [unquote(p) for p in path.strip("/").split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        route, rest = Route("", parts[1]), parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        route, rest = Route(parts[1], parts[2]), parts[3:]
    else:
        return None
    if rest and rest[0] == "watch":
        route.watch_prefix = True
        rest = rest[1:]
    if not rest:
        return route
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] != "status" and rest[2] != "finalize":
        route.namespace = rest[1]
        rest = rest[2:]
    route.plural = rest[0]
    if len(rest) >= 2:
        route.name = rest[1]
    if len(rest) >= 3:
        route.subresource = rest[2]
    if len(rest) > 3:
        route.plural = "\x00invalid"
    return route


def _truthy(value: str | None) -> bool:
    return value is not None and value not in TRUE_FALSE_OFF


def _strip_type(obj: Obj) -> Obj:
    """List items carry no kind/apiVersion on a real apiserver (§3.5); a shallow copy keeps reads cheap."""
    return {k: v for k, v in obj.items() if k not in {"kind", "apiVersion"}}


def _encode_list_item(obj: Obj) -> bytes:
    return json.dumps(_strip_type(obj), separators=(",", ":")).encode()


def _encode_continue(revision: int, key: tuple[str, str]) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": f"{key[0]}/{key[1]}"}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        namespace, name = str(data["start"]).split("/", 1)
        return int(data["rv"]), (namespace, name)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise errors.bad_request(f"continue key is not valid: {exc}") from exc


def _object_key(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


class KubeSimServer(ThreadingHTTPServer):
    """The API server for one Simulation. `url`, `faults` and `request_log` are its public surface."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sim: Any, host: str = "127.0.0.1", port: int = 0, faults: FaultInjector | None = None) -> None:
        # Everything server_close() touches exists before the bind: when the port is taken, the base
        # constructor calls server_close() and re-raises the OSError, which must reach the caller as is.
        self.stopping = threading.Event()
        self.sim = sim
        self.faults = faults if faults is not None else FaultInjector(seed=getattr(sim, "seed", 0) or 0)
        self.request_log = RequestLog()
        self.watch_rng = random.Random(f"kubesim-watch-{getattr(sim, 'seed', 0)}")
        super().__init__((host, port), KubeRequestHandler)
        self.url = f"http://{host}:{self.server_address[1]}"

    def server_close(self) -> None:
        self.stopping.set()
        super().server_close()

    def shutdown(self) -> None:
        self.stopping.set()
        super().shutdown()


def make_server(sim: Any, host: str = "127.0.0.1", port: int = 0,
                faults: FaultInjector | None = None) -> KubeSimServer:
    """Build the server and install apiserver admission on the simulation's store; call serve_forever()."""
    sim.store.admission = StoreAdmission(sim.store)
    return KubeSimServer(sim, host, port, faults)


class _DroppedConnection(Exception):  # noqa: N818 (a control-flow signal, not an error to report)
    """Raised to close the socket without answering, as an injected `drop` fault asks."""


class KubeRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kubesim"
    # Headers and body go out as separate writes; with Nagle on, the client's delayed ACK adds ~40 ms
    # to every request after the first on a kept-alive connection.
    disable_nagle_algorithm = True
    server: KubeSimServer

    # ------------------------------------------------------------------ plumbing

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stdlib's per-request stderr line; the request log records everything."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer a request that cannot be read (its head, an over-long request line) as Go's net/http does for
        the real API server: one plain-text line, then the connection closes. The stdlib sends an HTML page."""
        status = HTTPStatus(code)
        text = f"{code} {message or status.phrase}" + (f": {explain}" if explain else "")
        body = text.encode("utf-8", "replace")
        self.close_connection = True
        self._status = code
        self.send_response(code, message)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def parse_request(self) -> bool:
        """The stdlib's request parsing (same attributes, answers and connection rules), with the header fields
        read by :mod:`kubesim.request_head` instead of the email package."""
        self.command = None  # type: ignore[assignment]  # send_error reads it before a command is known
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        try:
            line = parse_request_line(self.requestline, self.default_request_version)
            if line is None:
                return False
            self.request_version = line.version
            self.close_connection = not line.keep_alive
            self.command, self.path = line.command, line.path
            self.headers = read_headers(self.rfile)
        except HeadError as error:
            self.request_version = "HTTP/1.1"  # an unreadable head is answered with a status line, as Go does
            self.send_error(error.status, error.message, error.explain)
            return False
        connection = (self.headers.get("Connection") or "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        expects_continue = (self.headers.get("Expect") or "").lower() == "100-continue"
        return not expects_continue or self.request_version < "HTTP/1.1" or self.handle_expect_100()

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def _handle(self, method: str) -> None:
        self._started = time.monotonic()
        self._status = 0
        self._recorded = False
        self._fault_id: str | None = None
        split = urlsplit(self.path)
        self.url_path = split.path
        self.query_string = split.query
        self.query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self.method = method
        self.raw_body = b""
        try:
            self.raw_body = self._read_body()
            self._dispatch()
        except _DroppedConnection:
            self._record()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        except errors.ApiError as exc:
            self._send_error(exc)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug must still answer as a Status, not kill the connection silently
            self._send_error(errors.internal_error(f"{type(exc).__name__}: {exc}"))
        finally:
            self._record()

    def _read_body(self) -> bytes:
        raw_length = (self.headers.get("Content-Length") or "0").strip()
        if not (raw_length.isascii() and raw_length.isdigit()):  # "²".isdigit() is True; int() refuses it
            # The body's end is unknown, so nothing after it on this connection can be read either.
            self.close_connection = True
            raise errors.bad_request(f"invalid Content-Length {raw_length[:40]!r}")
        length = int(raw_length)
        return self.rfile.read(length) if length > 0 else b""

    def _record(self) -> None:
        """Log the request once, before its last byte goes out, so a client that saw the answer sees the entry."""
        if self._recorded:
            return
        self._recorded = True
        self.server.request_log.record(RequestRecord(
            method=self.method, path=self.url_path, query=self.query_string, status=self._status,
            duration=time.monotonic() - self._started, time=time.time(), sim_time=self.server.sim.clock.now(),
            content_type=self.headers.get("Content-Type", ""), fault=self._fault_id))

    def _send(self, code: int, body: bytes, content_type: str = JSON, headers: dict[str, str] | None = None) -> None:
        self._status = code
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self._record()
        # Headers and body leave in one write (one syscall, one segment for small answers) instead of
        # end_headers()' flush followed by a second write.
        # (HTTP/0.9 has no headers, so the stdlib keeps no buffer for it: the plain path then.)
        buffered = getattr(self, "_headers_buffer", None)
        if buffered is None:
            self.end_headers()
            buffered = []
        else:
            buffered.append(b"\r\n")
        if self.method != "HEAD":
            buffered.append(body)
        self._headers_buffer = buffered
        self.flush_headers()

    def send_json(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(body, separators=(",", ":")).encode(), JSON, headers)

    def _send_error(self, exc: errors.ApiError) -> None:
        try:
            self.send_json(exc.code, exc.status(), exc.headers)
        except OSError:
            self.close_connection = True

    def json_body(self) -> Any:
        """The request body as JSON data; protobuf bodies of the kinds kubesim/protobuf.py knows are decoded."""
        content_type = (self.headers.get("Content-Type") or JSON).lower()
        if "protobuf" in content_type:
            return self._protobuf_body(content_type)
        if not self.raw_body:
            raise errors.bad_request("the body of the request was empty")
        try:
            return json.loads(self.raw_body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise errors.bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc

    def _protobuf_body(self, content_type: str) -> Any:
        if not self.raw_body:
            raise errors.bad_request("the body of the request was empty")
        if not self.raw_body.startswith(protobuf.MAGIC):
            # Not a Kubernetes protobuf envelope at all: a format kubesim cannot read (415); a body with
            # the envelope whose insides are broken is a malformed request (400) below.
            raise errors.ApiError(415, "UnsupportedMediaType",
                                  "the body of the request was in an unknown format - a protobuf body must start "
                                  f"with the Kubernetes prefix k8s\\x00 (got {content_type})")
        try:
            return protobuf.decode_object(self.raw_body)
        except protobuf.UnsupportedKindError as exc:
            raise errors.ApiError(415, "UnsupportedMediaType",
                                  f"the body of the request was in an unknown format - kubesim decodes protobuf "
                                  f"only for {', '.join(sorted({k for _, k in protobuf.KINDS}))}; send "
                                  f"application/json for {exc.api_version}, Kind={exc.kind} "
                                  f"(got {content_type})") from exc
        except protobuf.MalformedProtobufError as exc:
            raise errors.bad_request(f"the protobuf body of the request could not be decoded: {exc}") from exc

    # ------------------------------------------------------------------ routing

    def _dispatch(self) -> None:
        path = self.url_path
        if path.startswith("/_sim/") or path == "/_sim":
            from kubesim import admin

            code, body = admin.handle(self.server, self.method, path, self.query, self.raw_body)
            self.send_json(code, body)
            return
        route = parse_api_path(path)
        self._apply_fault(route)
        if path in ("/healthz", "/readyz", "/livez") or path.startswith(("/healthz/", "/readyz/", "/livez/")):
            self._send(200, b"ok", "text/plain; charset=utf-8")
            return
        if path in ("/version", "/version/"):
            self.send_json(200, discovery.version())
            return
        if path.startswith("/prometheus/"):
            self._prometheus(path)
            return
        if route is None:
            if path in ("/api", "/api/"):
                self.send_json(200, discovery.api_versions())
            elif path in ("/apis", "/apis/"):
                self.send_json(200, discovery.group_list())
            elif path.startswith("/apis/") and len(path.strip("/").split("/")) == 2:
                doc = discovery.group(path.strip("/").split("/")[1])
                if doc is None:
                    raise errors.ApiError(404, "NotFound", NOT_FOUND_PATH)
                self.send_json(200, doc)
            else:
                raise errors.ApiError(404, "NotFound", NOT_FOUND_PATH)
            return
        if route.group_version == discovery.METRICS_GROUP_VERSION:
            self._metrics(route)
            return
        if route.group_version in auth_reviews.REVIEWS and route.plural is not None:
            self._review(route)
            return
        if route.plural is None:
            doc = discovery.resource_list(route.group_version)
            if doc is None:
                raise errors.ApiError(404, "NotFound", NOT_FOUND_PATH)
            self.send_json(200, doc)
            return
        rtype = BY_PLURAL.get(route.plural)
        if rtype is None or rtype.group_version != route.group_version:
            raise errors.ApiError(404, "NotFound", NOT_FOUND_PATH)
        if route.namespace is not None and not rtype.namespaced:
            raise errors.ApiError(404, "NotFound", NOT_FOUND_PATH)
        if route.subresource is not None:
            self._subresource(rtype, route)
        elif route.name is None:
            self._collection(rtype, route)
        else:
            self._object(rtype, route)

    def _verb(self, route: Route | None) -> str | None:
        if route is None or route.plural is None:
            return None
        if self.method == "GET":
            if route.name is None:
                return "watch" if route.watch_prefix or _truthy(self.query.get("watch")) else "list"
            return "get"
        collection = route.name is None
        return {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "deletecollection" if collection else "delete"}.get(self.method)

    def _apply_fault(self, route: Route | None) -> None:
        plural = route.plural if route is not None else None
        if route is not None and route.subresource:
            plural = f"{route.plural}/{route.subresource}"
        fault = self.server.faults.match(self.method, self.url_path, plural, self._verb(route),
                                         route.namespace if route else None, route.name if route else None)
        if fault is None:
            return
        self._fault_id = fault.rule_id
        if fault.latency:
            time.sleep(fault.latency)
            return
        if fault.drop:
            raise _DroppedConnection
        if fault.error is not None:
            raise fault.error

    # ------------------------------------------------------------------ collections

    def _collection(self, rtype: ResourceType, route: Route) -> None:
        namespace = route.namespace
        if self.method == "GET":
            if route.watch_prefix or _truthy(self.query.get("watch")):
                self._watch(rtype, namespace)
            else:
                self._list(rtype, namespace)
        elif self.method == "POST":
            if rtype.namespaced and namespace is None:
                raise errors.method_not_allowed()
            self._create(rtype, namespace)
        elif self.method == "DELETE":
            if rtype.namespaced and namespace is None:
                raise errors.method_not_allowed()
            self._delete_collection(rtype, namespace)
        else:
            raise errors.method_not_allowed()

    def _predicate(self, rtype: ResourceType) -> tuple[Callable[[Obj], bool] | None, str | None]:
        predicate, node_name, _ = self._selection(rtype)
        return predicate, node_name

    def _selection(self, rtype: ResourceType) -> tuple[Callable[[Obj], bool] | None, str | None, dict[str, str]]:
        """The selectors' predicate, the node a fieldSelector names, and the labels every match carries."""
        requirements = selectors.parse_label_selector(self.query.get("labelSelector"))
        fields = selectors.parse_field_selector(self.query.get("fieldSelector"), rtype)
        predicate = selectors.combine(selectors.requirements_predicate(requirements), fields.predicate)
        return predicate, fields.node_name, selectors.required_labels(requirements)

    def _list(self, rtype: ResourceType, namespace: str | None) -> None:
        store = self.server.sim.store
        predicate, node_name, required_labels = self._selection(rtype)
        limit_text = self.query.get("limit")
        try:
            limit = int(limit_text) if limit_text else 0
        except ValueError as exc:
            raise errors.bad_request(f"invalid limit {limit_text!r}") from exc
        start_after: tuple[str, str] | None = None
        token = self.query.get("continue")
        if token:
            token_rev, start_after = _decode_continue(token)
            if token_rev < store.oldest_available_revision:
                raise errors.ApiError(410, "Expired", CONTINUE_TOO_OLD)
        page = store.list_page(rtype.plural, namespace or None, predicate, node_name=node_name,
                               start_after=start_after, limit=max(limit, 0), pod_labels=required_labels)
        items = page.items
        list_meta: Obj = {"resourceVersion": str(page.revision)}
        if page.more:
            list_meta["continue"] = _encode_continue(page.revision, _object_key(items[-1]))
            if page.remaining is not None:  # as etcd3's lister: with selectors the remaining count is unknown
                list_meta["remainingItemCount"] = page.remaining
        accept = self.headers.get("Accept") or ""
        if tables.wants_table(accept):
            include = self.query.get("includeObject", "Metadata")
            self.send_json(200, tables.build_table(rtype.plural, items, self.server.sim.clock.now(), list_meta,
                                                   include))
            return
        self._send(200, self._list_body(rtype, list_meta, items))
        if page.more:
            self._read_ahead(rtype, namespace, predicate, node_name, _object_key(items[-1]), limit, required_labels)

    def _read_ahead(self, rtype: ResourceType, namespace: str | None, predicate: Callable[[Obj], bool] | None,
                    node_name: str | None, last_key: tuple[str, str], limit: int,
                    required_labels: dict[str, str]) -> None:
        """Encode the next page's items into the cache while the client is still parsing this page.

        A paginating client spends as long decoding a page as the server spends encoding one; doing
        the next page's encoding now overlaps the two (the client is another process), so the
        request for it finds cached bytes. Only objects not yet cached cost anything.
        """
        store = self.server.sim.store
        # This page's answer is already out, so nothing may reach _handle's error path (it would write
        # a second response); whatever fails here fails again, and is answered, on the next request.
        with contextlib.suppress(Exception):
            page = store.list_page(rtype.plural, namespace or None, predicate, node_name=node_name,
                                   start_after=last_key, limit=limit, pod_labels=required_labels)
            encode = store.encoded.get
            for item in page.items:
                encode(rtype.plural, item, _encode_list_item)

    def _list_body(self, rtype: ResourceType, list_meta: Obj, items: list[Obj]) -> bytes:
        """The List JSON, byte for byte what `send_json` would write, with each item's bytes cached."""
        encode = self.server.sim.store.encoded.get
        plural = rtype.plural
        head = json.dumps({"kind": rtype.list_kind, "apiVersion": rtype.api_version, "metadata": list_meta},
                          separators=(",", ":")).encode()
        return b"".join((head[:-1], b',"items":[',
                         b",".join([encode(plural, item, _encode_list_item) for item in items]), b"]}"))

    def _create(self, rtype: ResourceType, namespace: str | None) -> None:
        body = self.json_body()
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body of a create must be a {rtype.kind} object")
        store = self.server.sim.store
        kind = body.get("kind")
        if kind and kind != rtype.kind:
            raise errors.bad_request(f"the API version in the data ({body.get('apiVersion')}) and kind ({kind}) "
                                     f"do not match the URL ({rtype.api_version}, {rtype.kind})")
        if self.query.get("dryRun") == "All":
            self.send_json(201, self._dry_run_create(rtype, body, namespace))
            return
        # The body was decoded for this request alone, so the store may keep it without a copy.
        created = store.create(rtype.plural, body, namespace, handed_over=True)
        self.send_json(201, created)

    def _dry_run_create(self, rtype: ResourceType, body: Obj, namespace: str | None) -> Obj:
        store = self.server.sim.store
        obj = clone(body)
        meta = obj.setdefault("metadata", {})
        if rtype.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + store.random_suffix()
        if not meta.get("name"):
            raise errors.invalid(rtype.kind, rtype.group, "", [
                ("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")])
        if store.try_get(rtype.plural, meta.get("namespace", ""), meta["name"]) is not None:
            raise errors.already_exists(rtype.plural, rtype.group, meta["name"])
        obj["kind"], obj["apiVersion"] = rtype.kind, rtype.api_version
        meta["uid"] = store.new_uid()
        meta["creationTimestamp"] = rfc3339(store.clock.now())
        if rtype.has_spec_generation:
            meta["generation"] = 1
        if store.admission is not None:
            store.admission(rtype, obj, None)
        return obj

    def _delete_options(self) -> Obj:
        options: Obj = {}
        if self.raw_body:
            body = self.json_body()
            if not isinstance(body, dict):
                raise errors.bad_request("DeleteOptions must be an object")
            options.update(body)
        if "gracePeriodSeconds" in self.query:
            try:
                options["gracePeriodSeconds"] = int(self.query["gracePeriodSeconds"])
            except ValueError as exc:
                raise errors.bad_request("gracePeriodSeconds must be an integer") from exc
        if "propagationPolicy" in self.query:
            options["propagationPolicy"] = self.query["propagationPolicy"]
        if self.query.get("orphanDependents") in ("true", "false") and "propagationPolicy" not in options:
            options["propagationPolicy"] = "Orphan" if self.query["orphanDependents"] == "true" else "Background"
        if "dryRun" in self.query:
            options["dryRun"] = [self.query["dryRun"]]
        policy = options.get("propagationPolicy")
        if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
            raise errors.bad_request(f'propagationPolicy: Unsupported value: "{policy}": supported values: '
                                     '"Foreground", "Background", "Orphan"')
        grace = options.get("gracePeriodSeconds")
        if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
            raise errors.bad_request("gracePeriodSeconds must be an integer")
        return options

    def _delete_one(self, rtype: ResourceType, namespace: str, name: str, options: Obj) -> tuple[Obj, bool]:
        store = self.server.sim.store
        if "All" in (options.get("dryRun") or []):
            return store.get(rtype.plural, namespace, name), False
        return store.delete(rtype.plural, namespace, name, grace_period_seconds=options.get("gracePeriodSeconds"),
                            propagation_policy=options.get("propagationPolicy"),
                            preconditions=options.get("preconditions") or None)

    def _delete_collection(self, rtype: ResourceType, namespace: str | None) -> None:
        options = self._delete_options()
        predicate, node_name = self._predicate(rtype)
        store = self.server.sim.store
        items, _ = store.list(rtype.plural, namespace or None, predicate, node_name=node_name)
        deleted = []
        for item in items:
            meta = item["metadata"]
            try:
                last, _ = self._delete_one(rtype, meta.get("namespace", ""), meta["name"], options)
            except errors.ApiError as exc:
                if exc.code == 404:
                    continue
                raise
            deleted.append(_strip_type(last))
        self.send_json(200, {"kind": rtype.list_kind, "apiVersion": rtype.api_version,
                             "metadata": {"resourceVersion": str(store.revision)}, "items": deleted})

    # ------------------------------------------------------------------ single objects

    def _object(self, rtype: ResourceType, route: Route) -> None:
        namespace = route.namespace or ""
        name = route.name or ""
        if rtype.namespaced and route.namespace is None:
            raise errors.ApiError(404, "NotFound", NOT_FOUND_PATH)
        store = self.server.sim.store
        if self.method == "GET":
            obj = store.get(rtype.plural, namespace, name)
            self._send_object(rtype, obj)
        elif self.method == "PUT":
            body = self._named_body(rtype, namespace, name)
            if self.query.get("dryRun") == "All":
                self.send_json(200, store.get(rtype.plural, namespace, name))
                return
            self._send_object(rtype, store.replace(rtype.plural, body))
        elif self.method == "PATCH":
            self._send_object(rtype, self._patch(rtype, namespace, name, None))
        elif self.method == "DELETE":
            options = self._delete_options()
            last, removed = self._delete_one(rtype, namespace, name, options)
            if rtype.plural == "pods" or not removed:
                self.send_json(200, last)
            else:
                details: Obj = {"name": name, "kind": rtype.plural, "uid": last["metadata"].get("uid")}
                if rtype.group:
                    details["group"] = rtype.group
                self.send_json(200, errors.success_status(details))
        else:
            raise errors.method_not_allowed()

    def _send_object(self, rtype: ResourceType, obj: Obj) -> None:
        if tables.wants_table(self.headers.get("Accept") or ""):
            self.send_json(200, tables.build_table(rtype.plural, [obj], self.server.sim.clock.now(),
                                                   {"resourceVersion": obj["metadata"].get("resourceVersion", "")},
                                                   self.query.get("includeObject", "Metadata")))
        else:
            self.send_json(200, obj)

    def _named_body(self, rtype: ResourceType, namespace: str, name: str) -> Obj:
        body = self.json_body()
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body must be a {rtype.kind} object")
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if meta.get("name") != name:
            raise errors.bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the "
                                     f"URL ({name})")
        if rtype.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request(f"the namespace of the object ({meta['namespace']}) does not match the "
                                         f"namespace on the URL ({namespace})")
            meta["namespace"] = namespace
        return body

    def _patch_document(self) -> tuple[str, Any]:
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type == APPLY_PATCH:
            raise errors.unsupported_media_type(content_type)
        return content_type, self.json_body()

    def _patch(self, rtype: ResourceType, namespace: str, name: str, subresource: str | None) -> Obj:
        content_type, document = self._patch_document()
        store = self.server.sim.store
        with store.lock:
            old = store.get(rtype.plural, namespace, name)
            patched = apply_patch(content_type, old, document)
            sent_rv = (patched.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rtype.plural, rtype.group, name)
            if subresource == "status":
                new = clone(old)
                if "status" in patched:
                    new["status"] = patched["status"]
                else:
                    new.pop("status", None)
            else:
                new = patched
                if not isinstance(new.get("metadata"), dict):
                    raise errors.bad_request("metadata must be an object")
                if rtype.has_status:
                    if "status" in old:
                        new["status"] = clone(old["status"])
                    else:
                        new.pop("status", None)
            if self.query.get("dryRun") == "All":
                return new
            return store.write(rtype.plural, old, new)

    # ------------------------------------------------------------------ subresources

    def _subresource(self, rtype: ResourceType, route: Route) -> None:
        sub = route.subresource or ""
        if sub not in rtype.subresources or (rtype.namespaced and route.namespace is None):
            raise errors.ApiError(404, "NotFound", NOT_FOUND_PATH)
        namespace, name = route.namespace or "", route.name or ""
        store = self.server.sim.store
        if sub == "status":
            if self.method == "GET":
                self.send_json(200, store.get(rtype.plural, namespace, name))
            elif self.method == "PUT":
                body = self._named_body(rtype, namespace, name)
                self.send_json(200, store.replace(rtype.plural, body, subresource="status"))
            elif self.method == "PATCH":
                self.send_json(200, self._patch(rtype, namespace, name, "status"))
            else:
                raise errors.method_not_allowed()
        elif sub == "scale":
            self._scale(rtype, namespace, name)
        elif sub == "eviction":
            if self.method != "POST":
                raise errors.method_not_allowed()
            self.send_json(201, evict(store, namespace, name, self.json_body()))
        elif sub == "log":
            if self.method != "GET":
                raise errors.method_not_allowed()
            self._send(200, pod_log(store.get("pods", namespace, name), self.query).encode(),
                       "text/plain")
        elif sub == "binding":
            if self.method != "POST":
                raise errors.method_not_allowed()
            self._bind(namespace, name)
        else:
            raise errors.ApiError(404, "NotFound", NOT_FOUND_PATH)

    def _bind(self, namespace: str, name: str) -> None:
        body = self.json_body()
        target = ((body or {}).get("target") or {}).get("name") if isinstance(body, dict) else None
        if not target:
            raise errors.invalid("Binding", "", name, [("target.name", "FieldValueRequired", "Required value")])
        store = self.server.sim.store
        with store.lock:
            pod = store.get("pods", namespace, name)
            if (pod.get("spec") or {}).get("nodeName"):
                raise errors.ApiError(409, "Conflict", f'Operation cannot be fulfilled on pods/binding "{name}": '
                                      f"pod {name} is already assigned to node "
                                      f'"{pod["spec"]["nodeName"]}"')
            store.mutate("pods", namespace, name, lambda p: p["spec"].__setitem__("nodeName", target))
        self.send_json(201, errors.success_status(code=201))

    def _scale(self, rtype: ResourceType, namespace: str, name: str) -> None:
        store = self.server.sim.store
        if self.method == "GET":
            self.send_json(200, scale_of(store.get(rtype.plural, namespace, name)))
            return
        if self.method not in ("PUT", "PATCH"):
            raise errors.method_not_allowed()
        with store.lock:
            old = store.get(rtype.plural, namespace, name)
            current = scale_of(old)
            if self.method == "PUT":
                wanted = self._named_body(rtype, namespace, name)
            else:
                content_type, document = self._patch_document()
                wanted = apply_patch(content_type, current, document)
            sent_rv = (wanted.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rtype.plural, rtype.group, name)
            replicas = (wanted.get("spec") or {}).get("replicas", 0)
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise errors.invalid("Scale", "autoscaling", name, [
                    ("spec.replicas", "FieldValueInvalid", f"Invalid value: {replicas}: must be greater than or "
                                                           "equal to 0")])
            new = clone(old)
            new["spec"]["replicas"] = replicas
            stored = store.write(rtype.plural, old, new)
        self.send_json(200, scale_of(stored))

    def _review(self, route: Route) -> None:
        """authorization/authentication self-reviews: create-only, cluster-scoped, never stored."""
        if route.namespace is not None or route.name is not None or route.subresource is not None:
            raise errors.ApiError(404, "NotFound", NOT_FOUND_PATH)
        if self.method != "POST":
            raise errors.method_not_allowed()
        self.send_json(201, auth_reviews.review(route.group_version, route.plural or "", self.json_body(),
                                                self.headers.get("Authorization")))

    # ------------------------------------------------------------------ watch

    def _watch(self, rtype: ResourceType, namespace: str | None) -> None:
        store = self.server.sim.store
        predicate, _ = self._predicate(rtype)
        rv_text = self.query.get("resourceVersion") or ""
        try:
            timeout = float(self.query["timeoutSeconds"]) if self.query.get("timeoutSeconds") else None
        except ValueError as exc:
            raise errors.bad_request("timeoutSeconds must be a number") from exc
        if timeout is None:
            timeout = self.server.watch_rng.uniform(1800, 3600)  # the apiserver's default spread
        if rv_text not in ("", "0"):
            try:
                int(rv_text)
            except ValueError as exc:
                raise errors.bad_request(f'invalid resource version: "{rv_text}"') from exc
        bookmarks = _truthy(self.query.get("allowWatchBookmarks"))
        as_table = tables.wants_table(self.headers.get("Accept") or "")
        include = self.query.get("includeObject", "Metadata")
        self._status = 200
        self.send_response(200)
        self.send_header("Content-Type", JSON)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.close_connection = False
        stream = _WatchStream(self, rtype, namespace, predicate, as_table, include)
        # WatchList (client-go ≥ 1.32, e.g. `kubectl rollout status`): initial state, then a bookmark
        # annotated `k8s.io/initial-events-end` that tells the reflector its cache is complete.
        send_initial = self.query.get("sendInitialEvents")
        initial_events = _truthy(send_initial) if send_initial is not None else rv_text in ("", "0")
        try:
            stream.run(rv_text, timeout, bookmarks, store, initial_events, _truthy(send_initial))
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
            return
        self._record()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    # ------------------------------------------------------------------ metrics and prometheus

    def _metrics(self, route: Route) -> None:
        sim = self.server.sim
        if not getattr(sim, "metrics_available", True):
            raise errors.ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        if route.plural is None:
            self.send_json(200, discovery.metrics_resource_list())
            return
        if self.method != "GET":
            raise errors.method_not_allowed()
        from kubesim import metrics

        label_pred = selectors.label_predicate(self.query.get("labelSelector"))
        if route.plural == "nodes" and route.namespace is None and route.subresource is None:
            if route.name is None:
                self.send_json(200, metrics.list_node_metrics(sim, label_pred))
            else:
                self.send_json(200, metrics.get_node_metrics(sim, route.name))
        elif route.plural == "pods" and route.subresource is None:
            if route.name is None:
                self.send_json(200, metrics.list_pod_metrics(sim, route.namespace, label_pred))
            elif route.namespace is None:
                raise errors.ApiError(404, "NotFound", NOT_FOUND_PATH)
            else:
                self.send_json(200, metrics.get_pod_metrics(sim, route.namespace, route.name))
        else:
            raise errors.ApiError(404, "NotFound", NOT_FOUND_PATH)

    def _prometheus(self, path: str) -> None:
        from kubesim import prometheus

        if path.rstrip("/") != "/prometheus/api/v1/query":
            self.send_json(404, {"status": "error", "errorType": "not_found",
                                 "error": f"kubesim serves only /prometheus/api/v1/query, not {path}"})
            return
        if self.method not in ("GET", "POST"):
            self.send_json(405, {"status": "error", "errorType": "bad_data", "error": "method not allowed"})
            return
        params = dict(self.query)
        if self.method == "POST" and self.raw_body:
            form = parse_qs(self.raw_body.decode("utf-8", "replace"), keep_blank_values=True)
            params.update({k: v[-1] for k, v in form.items()})
        code, body = prometheus.handle_query(self.server.sim, params)
        self.send_json(code, body)


class _WatchStream:
    """One watch: initial state (for RV unset/0), then store events, filtered and re-typed per selection."""

    def __init__(self, handler: KubeRequestHandler, rtype: ResourceType, namespace: str | None,
                 predicate: Callable[[Obj], bool] | None, as_table: bool, include: str) -> None:
        self.handler = handler
        self.rtype = rtype
        self.namespace = namespace or None
        self.predicate = predicate
        self.as_table = as_table
        self.include = include
        self.selected: set[tuple[str, str]] = set()  # keys currently inside the selection

    def _emit(self, event_type: str, obj: Obj) -> None:
        payload: Any = obj
        if self.as_table and event_type in ("ADDED", "MODIFIED", "DELETED"):
            payload = tables.build_table(self.rtype.plural, [obj], self.handler.server.sim.clock.now(),
                                         {"resourceVersion": obj["metadata"].get("resourceVersion", "")},
                                         self.include)
        line = json.dumps({"type": event_type, "object": payload}, separators=(",", ":")).encode() + b"\n"
        self.handler.write_chunk(line)

    def _bookmark(self, revision: int) -> None:
        self._emit("BOOKMARK", {"kind": self.rtype.kind, "apiVersion": self.rtype.api_version,
                                "metadata": {"resourceVersion": str(revision)}})

    def _error(self, exc: errors.ApiError) -> None:
        self._emit("ERROR", exc.status())

    def run(self, rv_text: str, timeout: float, bookmarks: bool, store: Any, initial_events: bool,
            end_marker: bool) -> None:
        deadline = time.monotonic() + timeout
        stopping = self.handler.server.stopping
        with store.lock:
            current, revision = store.list(self.rtype.plural, self.namespace, self.predicate)
            self.selected = {_object_key(obj) for obj in current}
            if not initial_events:
                initial = []
                if rv_text not in ("", "0"):
                    revision = int(rv_text)
                try:
                    store.events_after(revision, limit=1)
                except errors.ApiError as exc:
                    self._error(exc)
                    return
            else:
                initial = current
        for obj in initial:
            self._emit("ADDED", obj)
        if end_marker:
            self._emit("BOOKMARK", {"kind": self.rtype.kind, "apiVersion": self.rtype.api_version,
                                    "metadata": {"resourceVersion": str(revision),
                                                 "annotations": {"k8s.io/initial-events-end": "true"}}})
        next_bookmark = time.monotonic() + BOOKMARK_INTERVAL
        while not stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                events = store.wait_for_events(revision, min(remaining, WATCH_POLL, BOOKMARK_INTERVAL))
            except errors.ApiError as exc:
                self._error(exc)
                return
            for event in events:
                revision = event.revision
                if event.plural != self.rtype.plural or (self.namespace and event.namespace != self.namespace):
                    continue
                self._deliver(event.type, event.obj)
            if bookmarks and time.monotonic() >= next_bookmark:
                self._bookmark(revision)
                next_bookmark = time.monotonic() + BOOKMARK_INTERVAL

    def _deliver(self, event_type: str, obj: Obj) -> None:
        if self.predicate is None:
            self._emit(event_type, obj)
            return
        key = _object_key(obj)
        was_selected = key in self.selected
        now_selected = event_type != "DELETED" and self.predicate(obj)
        if now_selected:
            self.selected.add(key)
            self._emit("MODIFIED" if was_selected and event_type == "MODIFIED" else "ADDED", obj)
        elif was_selected:
            # Leaving the selection looks like a deletion to the watcher, as the watch cache reports it.
            self.selected.discard(key)
            self._emit("DELETED", obj)


# ---------------------------------------------------------------------- helpers used by the handlers


def scale_of(obj: Obj) -> Obj:
    """autoscaling/v1 Scale for a Deployment or ReplicaSet; status.selector is the string form."""
    meta = obj["metadata"]
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                     if k in meta},
        "spec": {"replicas": spec.get("replicas", 0)},
        "status": {"replicas": status.get("replicas", 0),
                   "selector": selectors.selector_to_string(spec.get("selector"))},
    }


def pod_log(pod: Obj, query: dict[str, str]) -> str:
    """vLLM-style start-up lines synthesised from the pod's container state (§3.2 pods/log)."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    containers = [c.get("name") for c in spec.get("containers") or []]
    name = pod["metadata"]["name"]
    container = query.get("container")
    if container is None:
        if len(containers) > 1:
            raise errors.bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                     f"[{' '.join(str(c) for c in containers)}]")
        container = containers[0] if containers else ""
    elif container not in containers:
        raise errors.bad_request(f"container {container} is not valid for pod {name}")
    cs = next((c for c in status.get("containerStatuses") or [] if c.get("name") == container), None)
    state = (cs or {}).get("state") or {}
    if cs is None or ("waiting" in state and not (cs.get("lastState") or {}).get("terminated")):
        reason = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
        raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
    started = (state.get("running") or {}).get("startedAt") or (state.get("terminated") or {}).get("startedAt") \
        or status.get("startTime") or pod["metadata"].get("creationTimestamp", "")
    image = next((c.get("image", "") for c in spec.get("containers") or [] if c.get("name") == container), "")
    lines = [
        f"{started} INFO api_server.py: vLLM API server starting (image {image})",
        f"{started} INFO config.py: Loading model weights for container {container}",
        f"{started} INFO gpu_executor.py: Initializing the GPU executor",
    ]
    terminated = state.get("terminated") or (cs.get("lastState") or {}).get("terminated")
    if terminated:
        lines.append(f"{terminated.get('finishedAt', started)} ERROR engine.py: Engine process exited with code "
                     f"{terminated.get('exitCode', 1)} ({terminated.get('reason', 'Error')})")
    elif cs.get("ready"):
        lines += [f"{started} INFO model_runner.py: Loading model weights took 0.00 GB",
                  f"{started} INFO launcher.py: Started server process",
                  f"{started} INFO launcher.py: Application startup complete.",
                  f"{started} INFO launcher.py: Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)"]
    else:
        lines.append(f"{started} INFO model_runner.py: Loading safetensors checkpoint shards ...")
    tail = query.get("tailLines")
    if tail and tail.isdigit():
        lines = lines[-int(tail):] if int(tail) else []
    if _truthy(query.get("timestamps")):
        return "".join(f"{line}\n" for line in lines)
    return "".join(f"{line.split(' ', 1)[1]}\n" for line in lines)
