"""Waiting for a child to be ready before starting the next one.

Every wait polls a probe until it succeeds, and gives up with an error that names the piece, says how long
it waited, shows the probe's last failure and the end of the child's log — so that "Postgres did not start"
comes with the reason Postgres printed.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from embedded.processes import ManagedProcess, ProcessGroup

T = TypeVar("T")


class NotReadyError(Exception):
    """Raised by a probe: the service is not ready yet; the message says why."""


class StartupTimeoutError(RuntimeError):
    """A child did not become ready in time."""


def wait_until_ready(
    group: ProcessGroup,
    what: str,
    probe: Callable[[], T],
    *,
    timeout_seconds: float,
    child: ManagedProcess | None = None,
    interval_seconds: float = 0.25,
) -> T:
    """Call ``probe`` until it returns without raising; return its result.

    Stops early if a stop is requested or any child dies (the group raises), so a crash during start-up is
    reported as that crash, not as a time-out.
    """
    deadline = time.monotonic() + timeout_seconds
    last_error = "no attempt yet"
    while True:
        group.raise_if_stopping_or_dead()
        try:
            return probe()
        except NotReadyError as error:
            last_error = str(error)
        except Exception as error:  # a probe's client library may raise anything while the server starts
            last_error = f"{type(error).__name__}: {error}"
        if time.monotonic() > deadline:
            message = f"{what} was not ready after {timeout_seconds:.0f}s (last check: {last_error})"
            if child is not None:
                message += f"\n--- end of {child.log_path} ---\n{child.log_tail()}"
            raise StartupTimeoutError(message)
        group.stop_requested.wait(interval_seconds)


def http_ok(url: str, *, timeout_seconds: float = 2.0) -> Callable[[], int]:
    """A probe that passes when ``url`` answers 2xx."""

    def probe() -> int:
        try:
            with urllib.request.urlopen(url, timeout=timeout_seconds) as response:  # noqa: S310 - loopback URL we built
                return response.status
        except urllib.error.HTTPError as error:
            raise NotReadyError(f"GET {url} answered {error.code}") from None
        except (urllib.error.URLError, OSError) as error:
            raise NotReadyError(f"GET {url} failed: {error}") from None

    return probe


def log_line_matching(log_path: Path, pattern: re.Pattern[str], *, after_offset: int) -> Callable[[], re.Match[str]]:
    """A probe that passes once the child has written a line matching ``pattern`` (after ``after_offset``,
    so that an earlier run's line in the same appended log does not count)."""

    def probe() -> re.Match[str]:
        with log_path.open("rb") as log_file:
            log_file.seek(after_offset)
            text = log_file.read().decode(errors="replace")
        match = pattern.search(text)
        if match is None:
            raise NotReadyError(f"no line matching {pattern.pattern!r} in {log_path} yet")
        return match

    return probe
