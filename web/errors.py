"""One error shape for every failure the API can answer with, and the handlers that produce it.

Clients (other platform services) branch on ``error.code``; ``message`` is for humans and ``details``
carries the machine-readable specifics (field errors, free GPUs, quota). Werkzeug's own 404/405/413,
webargs' 422 and unexpected exceptions are all rewritten into this shape, so no response is HTML and
none leaks a traceback.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, g, jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

from workers.domain import DomainError

logger = logging.getLogger(__name__)

# Codes for errors raised by Flask/werkzeug itself (not by our code), keyed by HTTP status.
_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}


class ApiError(HTTPException):
    """An error raised by our own request handling (auth, tenancy, headers) with an explicit code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(description=message)
        self.code = status
        self.error_code = code
        self.details = details or {}
        self.extra_headers = headers or {}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON envelope every error response uses."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _field_errors(messages: dict[str, Any]) -> dict[str, Any]:
    """Flatten webargs' ``{location: {field: [...]}}`` into ``{field: [...]}``.

    Clients care which field is wrong, not which part of the request webargs read it from; a request
    rarely has the same name in two locations, and if it does the last one wins harmlessly.
    """
    fields: dict[str, Any] = {}
    for location_errors in messages.values():
        if isinstance(location_errors, dict):
            fields.update(location_errors)
        else:
            fields["_request"] = location_errors
    return fields


def http_exception_response(error: HTTPException):
    """Turn any werkzeug ``HTTPException`` (ours, flask-smorest's ``abort`` or werkzeug's) into the envelope."""
    status = error.code or 500
    if isinstance(error, ApiError):
        response = jsonify(error_body(error.error_code, error.description or "", error.details))
        response.status_code = status
        response.headers.update(error.extra_headers)
        return response

    data = getattr(error, "data", None) or {}
    code = _CODES_BY_STATUS.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_"))
    details: dict[str, Any] = {}
    if status == 500:
        original = getattr(error, "original_exception", None)
        if original is not None:
            # Logged with the request id (the logging filter adds it); the client sees no internals.
            logger.error("unhandled exception", exc_info=(type(original), original, original.__traceback__))
        message = "The server hit an unexpected error; it has been logged with this request's id."
        request_id = g.get("request_id")
        if request_id:
            details["request_id"] = request_id
    elif status == 422 and "messages" in data:
        message = "The request did not validate."
        details["fields"] = _field_errors(data["messages"])
    elif status == 400 and "messages" in data:
        # webargs raises 400 for a body that is not valid JSON.
        code = "invalid_json"
        message = "The request body is not valid JSON."
        details["fields"] = _field_errors(data["messages"])
    else:
        message = data.get("message") or error.description or HTTPStatus(status).phrase
    if "errors" in data:
        details["fields"] = data["errors"]

    response = jsonify(error_body(code, message, details))
    response.status_code = status
    if status == 405 and isinstance(error, HTTPException):
        allowed = error.get_headers()
        for name, value in allowed:
            if name.lower() == "allow":
                response.headers["Allow"] = value
    response.headers.update(data.get("headers", {}))
    return response


def domain_error_response(error: DomainError):
    """Map a ``workers.domain.DomainError`` to HTTP in one place, using the status it declares."""
    response = jsonify(error_body(error.code, error.message, error.details))
    response.status_code = error.http_status
    return response


def unexpected_error_response(error: Exception):
    """Last resort for exceptions Flask would otherwise render as an HTML 500."""
    if isinstance(error, HTTPException):
        return http_exception_response(error)
    wrapped = InternalServerError(original_exception=error)
    return http_exception_response(wrapped)


def register_error_handlers(app: Flask) -> None:
    """Install the handlers; flask-smorest's own HTTPException handler is replaced by ours via the Api."""
    app.register_error_handler(DomainError, domain_error_response)
    app.register_error_handler(Exception, unexpected_error_response)
