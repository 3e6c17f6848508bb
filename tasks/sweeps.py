"""Periodic sweeps (scheduled by beat_schedule.py)."""

from __future__ import annotations

import logging
from typing import Any

import redis

from workers import status_polls
from workers.autoscaler import autoscaler_sweep
from workers.celery_app import app
from workers.health_monitor import health_monitor_sweep
from workers.lost_jobs import lost_jobs_sweep
from workers.queues import Queues, TaskNames
from workers.resource_tracker import resource_tracker_sweep

logger = logging.getLogger(__name__)

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
    """Sync GPU nodes and pods into Postgres (what admission reads), record utilization, flag drift, clean up."""
    return resource_tracker_sweep()


@app.task(name=TaskNames.HEALTH_MONITOR, **SWEEP_TASK_OPTIONS)
def health_monitor() -> dict[str, Any]:
    """Refresh every deployment's status and pods from the cluster; recover stuck deployments; replace a
    status poller that was lost (a worker killed outright), so waiting polls do not wait for its redelivery."""
    try:
        status_polls.ensure_poller()
    except redis.RedisError:
        logger.warning("could not check the status poller", exc_info=True)
    return health_monitor_sweep()


@app.task(name=TaskNames.AUTOSCALER, **SWEEP_TASK_OPTIONS)
def autoscaler() -> dict[str, Any]:
    """Scale autoscaled deployments from GPU utilization, queue depth and KV-cache use (through scale jobs)."""
    return autoscaler_sweep()


@app.task(name=TaskNames.REQUEUE_LOST_JOBS, **SWEEP_TASK_OPTIONS)
def requeue_lost_jobs() -> dict[str, Any]:
    """Re-send PENDING jobs whose message never reached the broker (enqueue failed after the commit)."""
    return lost_jobs_sweep()
