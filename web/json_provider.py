"""JSON responses with ISO 8601 timestamps everywhere.

Schema fields already render datetimes as ISO 8601, but values inside free-form ``Dict`` fields (the health
and GPU-utilization views) reached Flask's default provider, which writes HTTP dates ("Fri, 27 Nov 2026
10:28:37 GMT"): one response mixed two formats and clients had to parse both.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from flask.json.provider import DefaultJSONProvider


class IsoDateJSONProvider(DefaultJSONProvider):
    """Flask's provider, with ``datetime``/``date`` as ISO 8601 (``2026-11-27T10:28:37.153713+00:00``)."""

    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, datetime | date):
            return o.isoformat()
        return DefaultJSONProvider.default(o)
