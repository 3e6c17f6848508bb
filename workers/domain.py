"""Domain errors shared by the API and the workers.

Each carries a machine-readable ``code``, a human ``message``, ``details`` for clients to act on, and
the HTTP status the web layer maps it to in one place, so no handler invents its own error shape.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every business-rule failure the API reports as a 4xx."""

    http_status: ClassVar[int] = 400
    default_code: ClassVar[str] = "bad_request"

    def __init__(self, code: str | None = None, message: str = "", details: dict[str, Any] | None = None) -> None:
        self.code = code or self.default_code
        self.message = message or self.code.replace("_", " ")
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body: ``{"code", "message", "details"}``."""
        return {"code": self.code, "message": self.message, "details": self.details}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, details={self.details!r})"


class NotFoundError(DomainError):
    """The id names nothing this caller may see (another tenant's objects are reported the same way)."""

    http_status = 404
    default_code = "not_found"


class ConflictError(DomainError):
    """The request is valid but clashes with current state (busy deployment, taken name, reused key)."""

    http_status = 409
    default_code = "conflict"


class AdmissionError(ConflictError):
    """Not enough free GPUs (``insufficient_gpu``) or the tenant's quota is spent (``quota_exceeded``)."""

    default_code = "insufficient_gpu"


class InvalidRequestError(DomainError):
    """Well-formed input that breaks a business rule (e.g. more GPUs per replica than any node holds)."""

    http_status = 422
    default_code = "invalid_request"
