"""The ``Idempotency-Key`` header and the request fingerprint stored with the job.

A client that retries a POST (timeout, dropped connection) sends the same key; the workers return the
first job for that key instead of creating a second one. The fingerprint is a hash of the operation,
its target and the validated body, so a key reused for a *different* request is refused (409
``idempotency_key_reused``) rather than silently answered with an unrelated job.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from flask import request

from web.errors import ApiError

IDEMPOTENCY_HEADER = "Idempotency-Key"
# Visible ASCII but the comma: servers join a repeated header's values with commas, so two Idempotency-Key
# headers would otherwise arrive as one valid-looking key that matches neither.
_KEY_PATTERN = re.compile(r"^[\x21-\x2b\x2d-\x7e]{1,255}\Z")

IDEMPOTENCY_KEY_PARAMETER = {
    "in": "header",
    "name": IDEMPOTENCY_HEADER,
    "required": False,
    "description": "Client-chosen key (1-255 visible ASCII characters other than ',', in one header); a retry "
    "with the same key and body returns the first job, the same key with another body is 409 "
    "idempotency_key_reused.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def idempotency_key() -> str | None:
    """The request's key, or None; 400 ``invalid_idempotency_key`` if it is present but malformed."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not _KEY_PATTERN.match(key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"{IDEMPOTENCY_HEADER} must be one header of 1-255 visible ASCII characters other than ','.",
        )
    return key


def fingerprint(operation: str, target: str | None, body: dict[str, Any] | None) -> str:
    """Stable hash of what the request asks for (key order and whitespace do not matter)."""
    canonical = json.dumps(
        {"operation": operation, "target": target, "body": body or {}}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
