"""Deployment job tasks and the status poller."""

from __future__ import annotations

import logging
from typing import Any

import redis

from models.db import get_engine
from settings import get_settings
from workers import deployments, observe
from workers.celery_app import app
from workers.job_runner import JOB_TASK_OPTIONS, run_job
from workers.k8s import get_clients
from workers.queues import Queues, TaskNames
from workers.status_polls import run_poller
from workers.status_polls import schedule as schedule_status_poll

logger = logging.getLogger(__name__)


def _observe_after(job_id: str, result: dict[str, Any]) -> None:
    """The first poll one interval after the change: the cluster cannot have acted on it any sooner, so an
    immediate poll would only cost work and find nothing new."""
    del job_id
    if not result.get("observe"):
        return
    _poll(result["deployment_id"], get_settings().status_poll_interval_seconds)


def _fail_delete(job_id: str, error: dict[str, Any]) -> None:
    """A refused delete puts the deployment back (see ``fail_delete``); a poll at once says what is left of it."""
    deployment_id = deployments.fail_delete(job_id, error)
    if deployment_id is not None:
        _poll(str(deployment_id), 0)


def _poll(deployment_id: str, delay_seconds: float) -> None:
    try:
        schedule_status_poll(deployment_id, delay_seconds)
    except Exception:
        # Redis or the broker is down. The job's outcome stands; the deployment's status is then followed by the
        # health monitor's sweep (every deployment, every interval) instead of within seconds.
        logger.warning("could not schedule the status poll", extra={"deployment_id": deployment_id}, exc_info=True)


@app.task(name=TaskNames.CREATE, **JOB_TASK_OPTIONS)
def create(self: Any, job_id: str) -> dict[str, Any]:
    """Apply the vLLM Deployment, Service and PDB (adopting existing ones), then start the status poller."""
    return run_job(
        self, job_id, deployments.execute_create, on_failure=deployments.fail_create, after_success=_observe_after
    )


@app.task(name=TaskNames.DELETE, **JOB_TASK_OPTIONS)
def delete(self: Any, job_id: str) -> dict[str, Any]:
    """Remove the Deployment, Service and PDB and release the GPUs."""
    return run_job(self, job_id, deployments.execute_delete, on_failure=_fail_delete)


@app.task(name=TaskNames.RESTART, **JOB_TASK_OPTIONS)
def restart(self: Any, job_id: str) -> dict[str, Any]:
    """Rolling restart that never takes every replica down."""
    return run_job(
        self, job_id, deployments.execute_restart, on_failure=deployments.fail_restart, after_success=_observe_after
    )


@app.task(name=TaskNames.SCALE, **JOB_TASK_OPTIONS)
def scale(self: Any, job_id: str) -> dict[str, Any]:
    """Set the Deployment's replica count (GPUs were admitted or released with the request)."""
    return run_job(
        self, job_id, deployments.execute_scale, on_failure=deployments.fail_scale, after_success=_observe_after
    )


@app.task(
    name=TaskNames.POLL_STATUS,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    # Only the schedule itself (Redis) can fail the run: one deployment's failed observation is retried by
    # rescheduling that deployment alone.
    autoretry_for=(redis.RedisError,),
    retry_backoff=2,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=10,
    soft_time_limit=60,
    time_limit=75,
    queue=Queues.JOBS,
)
def poll_status(self: Any, scheduled_at_ms: int) -> int:
    """Observe every deployment whose status poll is due (see workers.status_polls); returns how many."""
    del self
    # The process's database engine and cluster client are built here, before the observations' threads
    # would race to build them.
    get_engine()
    get_clients()
    return run_poller(int(scheduled_at_ms), observe.observe_deployment)
