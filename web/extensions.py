"""The project's flavour of flask-smorest: Api, Blueprint and Schema with our error shape and strictness.

Every resource module builds on these classes, so the error envelope, the 422-on-unknown-field rule and
the 401/403 documentation of protected blueprints are decided once, here.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import flask_smorest
import marshmallow as ma
from flask import Flask, current_app, request
from flask_smorest.utils import resolve_schema_instance
from marshmallow.utils import missing
from webargs.flaskparser import FlaskParser, abort, is_json_request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import BaseConverter, Map, ValidationError

from web import errors
from web.json_provider import DuplicateKeyError

BEARER_SECURITY_SCHEME = "bearerAuth"


NUL_MESSAGE = "Text must be valid Unicode (no lone surrogate such as \\ud800) without NUL characters."


def _unstorable(text: str) -> bool:
    if "\x00" in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON): no UTF-8 text, nor Postgres text, holds it
        return True
    return False


def contains_nul(value: Any) -> bool:
    """Whether text Postgres cannot store (a NUL character, a lone surrogate) is anywhere in ``value`` (a JSON
    value: text, numbers, lists, objects and keys).

    Such input would otherwise fail as a database error (a 500). The walk keeps its own stack: a body nested
    hundreds of levels deep decodes fine and must not exhaust Python's."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _unstorable(item):
                return True
        elif isinstance(item, Mapping):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


class Schema(ma.Schema):
    """Base schema: unknown fields are an error (a typo must not be silently ignored), and so is text with a NUL
    character in it, in any field at any depth (a 422 naming the field, rather than the database refusing it)."""

    class Meta:
        unknown = ma.RAISE
        ordered = True

    @ma.pre_load
    def refuse_nul(self, data: Any, **_kwargs: Any) -> Any:
        if isinstance(data, Mapping):
            fields = sorted(str(name) for name, value in data.items() if contains_nul(name) or contains_nul(value))
            if fields:
                raise ma.ValidationError({name: [NUL_MESSAGE] for name in fields})
        return data


class ErrorDetailSchema(Schema):
    code = ma.fields.String(required=True, metadata={"description": "Machine-readable error code"})
    message = ma.fields.String(required=True, metadata={"description": "Human-readable explanation"})
    details = ma.fields.Dict(
        metadata={"description": "Specifics: field errors under `fields`, GPU/quota figures for 409s"}
    )


class ErrorSchema(Schema):
    """The envelope of every error response (documentation only; errors are built by ``web.errors``)."""

    error = ma.fields.Nested(ErrorDetailSchema, required=True)


class StrictParser(FlaskParser):
    """webargs ignores unknown query parameters by default; we refuse them like unknown body fields, so a
    misspelt filter (``?stauts=RUNNING``) is a 422 instead of an unfiltered list, and so are repeats of a
    single-valued one. A JSON body nested deeper than the interpreter can decode is invalid JSON (400), not a
    RecursionError (500)."""

    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": None, "querystring": None}

    def load_querystring(self, req: Any, schema: ma.Schema) -> Any:
        """A parameter that takes one value, given several times (``?status=A&status=B``), is a 422 naming it:
        reading the first value alone would silently drop the others."""
        proxy = super().load_querystring(req, schema)
        repeated = sorted(
            key for key in req.args if key not in proxy.multiple_keys and len(req.args.getlist(key)) > 1
        )
        if repeated:
            raise ma.ValidationError({key: ["Give this parameter once."] for key in repeated})
        return proxy

    def _raw_load_json(self, req: Any) -> Any:
        """The body decoded as UTF-8 JSON by the app's provider (``web.json_provider``: a key given twice is
        refused), where webargs would use ``json`` directly. Any failure to decode is 400 ``invalid_json``."""
        if not is_json_request(req):
            return missing
        data = req.get_data(cache=True)
        if not data:
            return missing  # no body at all, whatever the Content-Type says: the schema's defaults apply
        try:
            return current_app.json.loads(data.decode("utf-8"))
        except DuplicateKeyError as error:
            abort(400, exc=error, messages={"json": [f"Invalid JSON body: {error}."]})
        except (ValueError, RecursionError) as error:
            # ValueError: malformed JSON, bytes that are not UTF-8, or an integer too long to convert (over 4,300
            # digits); RecursionError: nested deeper than the decoder can go.
            abort(400, exc=error, messages={"json": ["Invalid JSON body."]})


class StrictInteger(ma.fields.Integer):
    """An integer that must be a JSON number: no "2", no 2.5, no true (bool is an int in Python)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


_ASCII_INTEGER = re.compile(r"[+-]?[0-9]+")


class QueryInteger(ma.fields.Integer):
    """An integer query parameter in ASCII digits: int() also reads other scripts' digits ("５", "١٢")."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and not _ASCII_INTEGER.fullmatch(value.strip()):
            raise self.make_error("invalid")  # nor "1_0", which int() reads as 10
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(ma.fields.Boolean):
    """Only JSON true/false: marshmallow would also accept "yes", 1, "on" (and 1 == True, so sets of truthy
    values cannot keep numbers out: the type is checked)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _has_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def not_json_error() -> errors.ApiError:
    message = "Send the body as JSON with 'Content-Type: application/json'."
    return errors.ApiError(415, "unsupported_media_type", message)


def refuse_nul_in_path() -> None:
    """A path with a NUL character (``%00``) names nothing: no id, model or node name can hold one (Postgres text
    cannot), so it is the 404 of an unknown name, before any handler sends it to the database."""
    if "\x00" in request.path:
        raise errors.ApiError(404, "not_found", "No resource has a NUL character in its name.")


def require_json_if_any_body() -> None:
    """A request body that is not declared as JSON is refused (415) instead of being read as an empty object,
    which would drop what it says (a cordon's reason) or report its fields as missing. A streamed body over the
    size limit is 413 (see :func:`_refuse_oversized_stream`)."""
    if request.method in _BODY_METHODS and _has_body():
        if not request.is_json:
            raise not_json_error()
        _refuse_oversized_stream()


def _refuse_oversized_stream() -> None:
    """A body without Content-Length (chunked) is only measured while it is read, and werkzeug's limited stream
    stops at the limit without saying whether more followed: the body would be parsed cut short, as invalid JSON
    (400). Read it once here (cached for the handlers); at the limit, one more byte from the server's stream (which
    ends where the body does: the server decodes the chunks) tells whether there was more."""
    limit = request.max_content_length
    if request.content_length is not None or limit is None:
        return  # with Content-Length, werkzeug refuses an oversized body before reading it
    if len(request.get_data(cache=True)) >= limit and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()


def takes_no_body(view: Callable[..., Any]) -> Callable[..., Any]:
    """For an operation without parameters in its body: a body must be empty or ``{}``. Anything else is a 422
    naming the fields, as a schema refuses unknown fields, so a caller's mistaken parameter is never ignored."""

    @functools.wraps(view)
    def refusing_a_body(*args: Any, **kwargs: Any) -> Any:
        if _has_body():
            # The checks every body gets (a DELETE's too): JSON only, and a streamed one within the size limit.
            if not request.is_json:
                raise not_json_error()
            _refuse_oversized_stream()
            try:
                body = request.get_json(silent=True)
            except RecursionError:  # nested deeper than can be decoded: not valid JSON for any purpose here
                body = None
            if body is None:
                raise errors.ApiError(400, "invalid_json", "The request body is not valid JSON.")
            if body != {}:
                fields = (
                    {str(name): ["Unknown field."] for name in body}
                    if isinstance(body, dict)
                    else {"_schema": ["This operation takes no body parameters: send no body or {}."]}
                )
                raise errors.ApiError(422, "validation_failed", "The request did not validate.", {"fields": fields})
        return view(*args, **kwargs)

    return refusing_a_body


def refuse_an_undeclared_query() -> None:
    """Query parameters sent to an operation that takes none (``GET /jobs/{id}?verbose=1``) are a 422 naming them,
    as the lists refuse an unknown filter, rather than being ignored."""
    if not request.args:
        return
    view = current_app.view_functions.get(request.endpoint or "")
    view_class = getattr(view, "view_class", None)
    operation = getattr(view_class, request.method.lower(), None) if view_class is not None else view
    if operation is None or getattr(operation, "takes_query", False):
        return
    fields = {name: ["Unknown field."] for name in request.args}
    raise errors.ApiError(422, "validation_failed", "The request did not validate.", {"fields": fields})


class Blueprint(flask_smorest.Blueprint):
    """A blueprint that can require a token scope for all of its routes.

    ``required_scope`` installs the authentication check as a ``before_request`` hook (see
    :func:`web.auth.require_scope`) and documents the bearer security and the 401/403 answers on every
    operation, so adding an admin blueprint is one constructor argument.
    """

    ARGUMENTS_PARSER = StrictParser()

    def __init__(
        self, *args: Any, required_scope: str | None = None, tenant_scoped: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.required_scope = required_scope
        if required_scope is not None:
            from web.auth import require_scope

            require_scope(self, required_scope, tenant_scoped=tenant_scoped)
        self.before_request(require_json_if_any_body)  # after authentication: a 401 comes first
        self.before_request(refuse_an_undeclared_query)

    def arguments(self, schema, *args: Any, **kwargs: Any):
        """flask-smorest's ``arguments``, with a schema class instantiated once here: given a class, webargs
        builds a new schema (copying every field) on every request. An operation given query arguments is marked
        as taking a query (see :func:`refuse_an_undeclared_query`)."""
        decorator = super().arguments(resolve_schema_instance(schema), *args, **kwargs)
        if kwargs.get("location") not in ("query", "querystring"):
            return decorator

        def taking_a_query(view: Callable[..., Any]) -> Callable[..., Any]:
            decorated = decorator(view)
            decorated.takes_query = True  # type: ignore[attr-defined]  # later decorators copy it (functools.wraps)
            return decorated

        return taking_a_query

    def _store_endpoint_docs(self, endpoint, obj, parameters, tags, **options):
        super()._store_endpoint_docs(endpoint, obj, parameters, tags, **options)
        if self.required_scope is None:
            return
        for key, operation in self._docs[endpoint].items():
            if key == "parameters":
                continue
            manual = operation.setdefault("manual_doc", {})
            manual.setdefault("security", [{BEARER_SECURITY_SCHEME: []}])
            responses = manual.setdefault("responses", {})
            responses.setdefault(401, "UNAUTHORIZED")
            responses.setdefault(403, "FORBIDDEN")


class ResourceIdConverter(BaseConverter):
    """``<resource_id:deployment_id>``: a path segment naming one resource by its UUID.

    werkzeug's ``uuid`` converter lets a segment that is not a UUID fall through to the router's generic 404,
    answered before authentication. This one routes any segment, as a ``uuid.UUID`` or, when it is not one, as
    the text itself, so the request is authenticated first and the lookup answers with that resource's own 404
    (``deployment_not_found``): a typo'd id is the same case as a deleted one to a client branching on codes."""

    regex = "[^/]+"

    def __init__(self, url_map: Map, *reserved: str) -> None:
        """``reserved``: names of sibling routes (``create``), which are not ids: they route to their own rule
        alone, so ``OPTIONS /deployments/create`` allows POST only."""
        super().__init__(url_map)
        self.reserved = frozenset(reserved)
        if reserved:
            # Both guards are needed: werkzeug lists a route's methods (Allow) from the pattern alone, and
            # matches a segment followed by more path without applying the pattern's "$" to that segment.
            self.regex = "(?!(?:{})\\Z)[^/]+".format("|".join(re.escape(name) for name in sorted(reserved)))

    def to_python(self, value: str) -> uuid.UUID | str:
        if value in self.reserved:
            raise ValidationError()  # werkzeug: this rule does not match; the sibling's does
        try:
            return uuid.UUID(value)
        except ValueError:
            return value

    def to_url(self, value: Any) -> str:
        return str(value)


class Api(flask_smorest.Api):
    """flask-smorest Api answering every HTTP error with the ``{"error": {...}}`` envelope."""

    ERROR_SCHEMA = ErrorSchema

    def init_app(self, app: Flask, *, spec_kwargs: dict[str, Any] | None = None) -> None:
        super().init_app(app, spec_kwargs=spec_kwargs)
        self.spec.components.security_scheme(
            BEARER_SECURITY_SCHEME, {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        )
        app.url_map.converters["resource_id"] = ResourceIdConverter
        # Documented as what it names: a string in UUID format.
        self.register_converter(ResourceIdConverter, lambda _converter: {"type": "string", "format": "uuid"})

    def handle_http_exception(self, error):
        return errors.http_exception_response(error)


def area_blueprint_factory(prefix: str, scope: str, *, tenant_scoped: bool = True) -> Callable[..., Blueprint]:
    """The blueprint factory of one API area (``/internal``, ``/admin/v1``): its routes live under ``prefix``
    and need the ``scope``; ``tenant_scoped`` areas act for one tenant, the others across tenants."""

    def area_blueprint(name: str, import_name: str, url_prefix: str, description: str) -> Blueprint:
        return Blueprint(
            name,
            import_name,
            url_prefix=prefix + url_prefix,
            description=description,
            required_scope=scope,
            tenant_scoped=tenant_scoped,
        )

    return area_blueprint
