"""Simulation clocks.

Tests use a `VirtualClock` that only moves when told to, so minutes of model loading take
milliseconds; interactive runs use a `ScaledClock`, real time multiplied by a speed factor.
Both report seconds since the Unix epoch, so timestamps in objects look like real ones.
"""

from __future__ import annotations

import calendar
import functools
import re
import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """What the simulator needs of a clock: `now()` in epoch seconds, and whether it is virtual."""

    virtual: bool

    def now(self) -> float: ...


class VirtualClock:
    """Time that moves only through `advance`, starting at a fixed, realistic instant."""

    virtual = True

    def __init__(self, start: float | None = None) -> None:
        self._now = start if start is not None else float(int(time.time()))
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance_to(self, instant: float) -> None:
        with self._lock:
            self._now = max(self._now, instant)


class ScaledClock:
    """Wall-clock time × `speed` from the moment the simulator started."""

    virtual = False

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._wall_start = time.time()
        self._mono_start = time.monotonic()

    def now(self) -> float:
        return self._wall_start + (time.monotonic() - self._mono_start) * self.speed

    def advance_to(self, instant: float) -> None:
        """Jump forward to `instant` (never back): a restored cluster's timestamps stay in the past."""
        ahead = instant - self.now()
        if ahead > 0:
            self._wall_start += ahead

    def real_seconds_until(self, instant: float) -> float:
        return max(0.0, (instant - self.now()) / self.speed)


def rfc3339(instant: float) -> str:
    """`2026-11-27T09:25:12Z`: second precision, as the apiserver writes metav1.Time."""
    return _rfc3339_second(int(instant))


# Every write stamps a few timestamps, mostly of the same simulated second; formatting (and strptime
# below) cost far more than a cache lookup.
@functools.lru_cache(maxsize=4096)
def _rfc3339_second(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_RFC3339_SECOND_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z\Z")


@functools.lru_cache(maxsize=65536)  # pods started in the same second share one parse
def parse_rfc3339(text: str) -> float:
    """The apiserver's second-precision format; its usual spelling by regex and timegm, ~10x faster than
    strptime (which still reads the rest, or raises ValueError)."""
    match = _RFC3339_SECOND_RE.match(text)
    if match is None:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    return float(calendar.timegm(tuple(int(part) for part in match.groups())))
