"""The app's JSON: ISO 8601 timestamps in every response, and request bodies read strictly.

Schema fields already render datetimes as ISO 8601, but values inside free-form ``Dict`` fields (the health
and GPU-utilization views) reached Flask's default provider, which writes HTTP dates ("Fri, 27 Nov 2026
10:28:37 GMT"): one response mixed two formats and clients had to parse both.

Reading, a body that says two things is refused rather than guessed at: an object with the same key twice
(``{"dry_run": true, "dry_run": false}`` would silently be a real drain, the last key winning), and so is NaN or
Infinity, which Python reads but JSON does not have. Every failure
to decode is a ``ValueError``, which the request parsing answers with 400 ``invalid_json``; that includes an
integer too long for Python to convert (over 4,300 digits), which escaped as a 500 before.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from typing import Any

from flask.json.provider import DefaultJSONProvider


class DuplicateKeyError(ValueError):
    """A JSON object gave one key twice (its message names the key)."""


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise DuplicateKeyError(f"the key {repeated!r} appears more than once in one object")
    return found


def _no_constants(name: str) -> Any:
    # NaN, Infinity and -Infinity are Python's extension, not JSON (RFC 8259).
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: a number JSON can write, no float can hold
        raise ValueError(f"{text} is out of range")
    return value


class IsoDateJSONProvider(DefaultJSONProvider):
    """Flask's provider, with ``datetime``/``date`` as ISO 8601 (``2026-11-27T10:28:37.153713+00:00``), reading
    request bodies strictly (see the module doc)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        kwargs.setdefault("object_pairs_hook", _object_without_duplicate_keys)
        kwargs.setdefault("parse_constant", _no_constants)
        kwargs.setdefault("parse_float", _finite_float)
        return json.loads(s, **kwargs)

    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, datetime | date):
            return o.isoformat()
        return DefaultJSONProvider.default(o)
