"""Classify Kubernetes client failures as transient (retry with backoff) or permanent (fail the job now).

This is the one place that decides; tasks declare ``autoretry_for=(TransientClusterError,)`` and the
worker functions wrap every cluster call with :func:`translate`, so a new status code is handled here
and nowhere else.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import (
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import (
    TimeoutError as Urllib3TimeoutError,
)

T = TypeVar("T")

# 409 is transient only for writes that conflict on resourceVersion: the caller re-reads and retries.
TRANSIENT_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 410, 413, 415, 422})
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    MaxRetryError,
    ProtocolError,
    ReadTimeoutError,
    NewConnectionError,
    Urllib3TimeoutError,
    ConnectionError,
    socket.timeout,
    TimeoutError,
)


class ClusterError(Exception):
    """A failed call to the Kubernetes API, already classified."""

    retryable: bool = False

    def __init__(self, code: str, message: str, *, status: int | None = None, retry_after: float | None = None):
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"{code}: {message}")

    def to_job_error(self) -> dict[str, Any]:
        """The ``Job.error`` shape: code, message, retryable."""
        return {"code": self.code, "message": self.message, "retryable": self.retryable}


class TransientClusterError(ClusterError):
    """Throttling, server errors, timeouts, dropped connections: try again later."""

    retryable = True


class PermanentClusterError(ClusterError):
    """The cluster refused the request for good (invalid object, forbidden, ...); retrying cannot help."""

    retryable = False


def status_message(error: ApiException) -> str:
    """The ``message`` of the Status body the API server sent, else the HTTP reason."""
    body = error.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("message"):
            return str(parsed["message"])
        return str(body)[:1000]
    return str(error.reason or f"HTTP {error.status}")


def _retry_after(error: ApiException) -> float | None:
    headers = error.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except (TypeError, ValueError):
        return None


def classify(error: BaseException) -> ClusterError | None:
    """Map a client exception to a :class:`ClusterError`, or ``None`` if it is not a cluster failure."""
    if isinstance(error, ClusterError):
        return error
    if isinstance(error, ApiException):
        status = int(error.status or 0)
        message = status_message(error)
        if status == 0:
            # The client raises ApiException(status=0) for its own transport problems.
            return TransientClusterError("cluster_unreachable", message)
        if status in TRANSIENT_STATUSES:
            code = "cluster_conflict" if status == 409 else f"cluster_http_{status}"
            return TransientClusterError(code, message, status=status, retry_after=_retry_after(error))
        if status in PERMANENT_STATUSES or 400 <= status < 500:
            return PermanentClusterError(_permanent_code(status), message, status=status)
        return TransientClusterError(f"cluster_http_{status}", message, status=status, retry_after=_retry_after(error))
    if isinstance(error, _NETWORK_ERRORS):
        return TransientClusterError("cluster_unreachable", f"{type(error).__name__}: {error}")
    return None


def _permanent_code(status: int) -> str:
    return {
        400: "cluster_bad_request",
        401: "cluster_unauthorized",
        403: "cluster_forbidden",
        404: "cluster_not_found",
        405: "cluster_method_not_allowed",
        410: "cluster_gone",
        413: "cluster_request_too_large",
        415: "cluster_unsupported_media_type",
        422: "cluster_invalid",
    }.get(status, f"cluster_http_{status}")


@contextmanager
def translate() -> Iterator[None]:
    """Re-raise client exceptions inside the block as classified :class:`ClusterError`."""
    try:
        yield
    except ClusterError:
        raise
    except Exception as error:
        classified = classify(error)
        if classified is None:
            raise
        raise classified from error


def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one client call, translating its failures (see :func:`translate`)."""
    with translate():
        return function(*args, **kwargs)


def is_status(error: BaseException, status: int) -> bool:
    """True if ``error`` is an HTTP error with this status, raw (ApiException) or classified."""
    if isinstance(error, ApiException):
        return int(error.status or 0) == status
    if isinstance(error, ClusterError):
        return error.status == status
    return False
