"""What every sweep reports: one structured log line and its ``sweep_runs`` row.

A sweep fills a :class:`SweepReport` as it goes (items seen, actions taken, errors, or why it skipped);
:func:`observed_sweep` times it, and on the way out logs a single summary line and upserts the sweep's row.
The row is what Prometheus sees: sweeps run in Celery worker processes that no scraper reaches, so the API's
``/metrics`` serves each sweep's last run from its row (``web.observability.SweepsCollector``), and
``/health`` tells the same story.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter as TallyCounter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import SweepRun

log = logging.getLogger("workers.sweeps")

SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"
RUNNING = "running"

# Lists in the stored summary are cut to this many entries: the row is for humans and /health, not an archive.
SUMMARY_LIST_LIMIT = 50


@dataclass
class SweepReport:
    """The running tally of one sweep."""

    name: str
    items: TallyCounter[str] = field(default_factory=TallyCounter)
    actions: TallyCounter[str] = field(default_factory=TallyCounter)
    errors: list[dict[str, str]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    status: str = SUCCEEDED
    skip_reason: str | None = None
    duration_seconds: float = 0.0

    def saw(self, kind: str, count: int = 1) -> None:
        self.items[kind] += count

    def acted(self, action: str, count: int = 1) -> None:
        if count:
            self.actions[action] += count

    def error(self, code: str, message: str) -> None:
        self.errors.append({"code": code, "message": message[:500]})

    def skip(self, reason: str) -> None:
        """Give up on this run without touching state (the cluster or Prometheus is unreachable, lock held)."""
        self.status = SKIPPED
        self.skip_reason = reason

    def summary(self) -> dict[str, Any]:
        details = {
            key: value[:SUMMARY_LIST_LIMIT] if isinstance(value, list) else value for key, value in self.details.items()
        }
        return {
            "status": self.status,
            "skip_reason": self.skip_reason,
            "duration_seconds": round(self.duration_seconds, 4),
            "items": dict(self.items),
            "actions": dict(self.actions),
            "errors": self.errors[:SUMMARY_LIST_LIMIT],
            "error_count": len(self.errors),
            **details,
        }


def record_start(session: Session, name: str) -> None:
    """Mark the sweep as running (its own commit, so /health sees it even if the sweep then dies)."""
    statement = insert(SweepRun).values(name=name, last_started_at=func.now(), last_status=RUNNING)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[SweepRun.name], set_={"last_started_at": func.now(), "last_status": RUNNING}
        )
    )
    session.commit()


def record_finish(session: Session, report: SweepReport) -> None:
    """Store the outcome and summary on the sweep's row and commit."""
    values = {"last_finished_at": func.now(), "last_status": report.status, "last_summary": report.summary()}
    statement = insert(SweepRun).values(name=report.name, **values)
    session.execute(statement.on_conflict_do_update(index_elements=[SweepRun.name], set_=values))
    session.commit()


def log_summary(report: SweepReport) -> None:
    """Write the one summary log line of a run."""
    level = logging.WARNING if report.status != SUCCEEDED or report.errors else logging.INFO
    summary = report.summary()
    log.log(
        level,
        "sweep %s %s in %.3fs",
        report.name,
        report.status,
        report.duration_seconds,
        extra={"sweep": report.name, "summary": summary},
    )


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block, back as it was after.

    A sweep decodes hundreds of thousands of short-lived containers (the JSON of every pod, node and series)
    that reference counting frees on its own; the collector's generational passes over them found nothing to
    reclaim and cost a tenth of a second or more per 1,000-node sweep. The switch is process-wide, which is
    fine in a worker that runs one task at a time; any cycles made meanwhile are collected after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def observed_sweep(session: Session, name: str) -> Iterator[SweepReport]:
    """Time the block, then log and store the outcome, whatever happened inside.

    An exception escaping the block marks the run ``failed`` (after rolling back the sweep's own
    uncommitted writes, so nothing half-done is kept) and is re-raised for the task to report.
    """
    report = SweepReport(name=name)
    record_start(session, name)
    started = time.perf_counter()
    try:
        with cyclic_gc_paused():
            yield report
    except Exception as error:
        session.rollback()
        report.status = FAILED
        report.error(type(error).__name__, str(error))
        raise
    finally:
        report.duration_seconds = time.perf_counter() - started
        log_summary(report)
        try:
            record_finish(session, report)
        except Exception:
            # The database itself may be what failed; the log line already tells the story.
            session.rollback()
            log.exception("could not record the outcome of sweep %s", name)


def summary_in_new_session(run_sweep: Callable[..., SweepReport], **options: Any) -> dict[str, Any]:
    """A sweep task's body: one ``run_sweep(session, **options)`` in a session of its own; its summary.

    The session factory is imported here, not at module level, so importing a sweep never builds an engine.
    """
    from models.db import get_sessionmaker

    session = get_sessionmaker()()
    try:
        return run_sweep(session, **options).summary()
    finally:
        session.close()
