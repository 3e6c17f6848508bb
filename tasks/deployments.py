"""Deployment job tasks and the status poller."""

from __future__ import annotations

from typing import Any

from settings import get_settings
from workers import deployments, observe
from workers.celery_app import app
from workers.dispatch import enqueue_observe
from workers.job_runner import JOB_TASK_OPTIONS, TRANSIENT_EXCEPTIONS, run_job
from workers.queues import Queues, TaskNames


def _observe_after(job_id: str, result: dict[str, Any]) -> None:
    """The first poll one interval after the change: the cluster cannot have acted on it any sooner, so an
    immediate poll would only cost a task and find nothing new."""
    del job_id
    if result.get("observe"):
        enqueue_observe(result["deployment_id"], countdown=get_settings().status_poll_interval_seconds)


@app.task(name=TaskNames.CREATE, **JOB_TASK_OPTIONS)
def create(self: Any, job_id: str) -> dict[str, Any]:
    """Apply the vLLM Deployment, Service and PDB (adopting existing ones), then start the status poller."""
    return run_job(
        self, job_id, deployments.execute_create, on_failure=deployments.fail_create, after_success=_observe_after
    )


@app.task(name=TaskNames.DELETE, **JOB_TASK_OPTIONS)
def delete(self: Any, job_id: str) -> dict[str, Any]:
    """Remove the Deployment, Service and PDB and release the GPUs."""
    return run_job(self, job_id, deployments.execute_delete, on_failure=deployments.fail_delete)


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
    name=TaskNames.OBSERVE,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=TRANSIENT_EXCEPTIONS,
    retry_backoff=2,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=10,
    soft_time_limit=30,
    time_limit=45,
    queue=Queues.JOBS,
)
def observe_deployment(self: Any, deployment_id: str) -> bool:
    """Observe once; while the deployment is still converging, poll again (STATUS_POLL_INTERVAL_SECONDS at
    first, less often the longer the change has been in progress)."""
    del self
    again = observe.observe_deployment(deployment_id)
    if again:
        enqueue_observe(deployment_id, countdown=observe.next_poll_delay(deployment_id))
    return again
