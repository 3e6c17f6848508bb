"""Keyset pagination for the admin lists: opaque cursors that carry the last row's sort key."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from workers.domain import InvalidRequestError

MAX_PAGE_SIZE = 500


def encode_cursor(values: list[Any]) -> str:
    """An opaque keyset cursor (the sort key of the last row of a page)."""
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


def _storable_text(value: Any) -> bool:
    """Text Postgres can compare against: no NUL character, no lone surrogate."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_cursor(cursor: str, arity: int) -> list[str]:
    """The ``arity`` texts inside ``cursor``; InvalidRequestError (422) if it was not made by :func:`encode_cursor`
    (every sort key is written as text, so a cursor holding anything else was crafted, and must not reach SQL)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        values = None
    if not isinstance(values, list) or len(values) != arity or not all(map(_storable_text, values)):
        raise InvalidRequestError("invalid_cursor", "cursor is not one this API returned", {"field": "cursor"})
    return values
