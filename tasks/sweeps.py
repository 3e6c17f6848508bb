"""Periodic sweeps (scheduled by beat_schedule.py)."""

from __future__ import annotations

from typing import Any

from workers.celery_app import app
from workers.inventory import run_inventory_sweep
from workers.queues import Queues, TaskNames

SWEEP_TASK_OPTIONS: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    # A failed sweep is not retried: the next beat tick runs it again with fresher data.
    "autoretry_for": (),
    "max_retries": 0,
    "soft_time_limit": 240,
    "time_limit": 300,
    "queue": Queues.SWEEPS,
}


@app.task(name=TaskNames.RESOURCE_TRACKER, **SWEEP_TASK_OPTIONS)
def resource_tracker() -> dict[str, Any]:
    """Sync GPU nodes and pods from the cluster into Postgres (what admission reads)."""
    return run_inventory_sweep()
