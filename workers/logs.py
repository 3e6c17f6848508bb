"""JSON logging with request/job/task ids injected into every record.

The ids live in contextvars, so they follow a request through Flask and a task through Celery without
being passed around, and never leak between concurrent requests or threads.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

from settings import get_settings

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("job_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("task_id", default=None)

_CONTEXT_VARS = {"request_id": request_id_var, "job_id": job_id_var, "task_id": task_id_var}


class ContextFilter(logging.Filter):
    """Copies the context ids and the component name onto each record."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def filter(self, record: logging.LogRecord) -> bool:
        record.component = self.component
        for name, var in _CONTEXT_VARS.items():
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


def configure_logging(component: str, level: str | None = None) -> None:
    """Send JSON lines to stderr for ``component`` ("web", "worker", "beat"), replacing other root handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(ContextFilter(component))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level or get_settings().log_level)


@contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Bind ``request_id`` / ``job_id`` / ``task_id`` for the duration of the block."""
    tokens = []
    for name, value in ids.items():
        var = _CONTEXT_VARS[name]
        tokens.append((var, var.set(value)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
