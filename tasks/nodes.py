"""Thin Celery tasks for node jobs: ``nodes.drain``, ``nodes.cordon``, ``nodes.uncordon``.

Each takes the job id only and calls one function in ``workers``. The drain runs as a chain of short
steps: a step that has to wait (replacements loading, a PodDisruptionBudget saying no) commits its phase
and schedules the next step with a countdown instead of sleeping, so a drain never holds a worker slot
for the minutes a model takes to load.
"""

from __future__ import annotations

import random

from celery import Task

from models.db import get_sessionmaker
from workers import drain, jobs, node_ops
from workers.celery_app import app
from workers.cluster_errors import TransientClusterError
from workers.node_ops import NODE_JOB_MAX_ATTEMPTS
from workers.queues import Queues, TaskNames

NODE_JOB_MAX_RETRIES = NODE_JOB_MAX_ATTEMPTS - 1  # retries after the first attempt
NODE_JOB_BACKOFF_CAP_SECONDS = 60
# A single step is a few list/scale/evict calls; the limit stops a hung connection from pinning a slot.
STEP_SOFT_TIME_LIMIT = 120
STEP_TIME_LIMIT = 150
# Shared by every node task: acknowledged only once done (a lost worker's job is redelivered), on the jobs queue.
NODE_TASK_OPTIONS = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "queue": Queues.JOBS,
    "ignore_result": True,
    "soft_time_limit": STEP_SOFT_TIME_LIMIT,
    "time_limit": STEP_TIME_LIMIT,
    "max_retries": NODE_JOB_MAX_RETRIES,
}


def _backoff(retries: int) -> float:
    """Exponential backoff with full jitter, capped (retries counts from 0)."""
    return random.uniform(0, min(NODE_JOB_BACKOFF_CAP_SECONDS, 2 ** (retries + 1)))


@app.task(name=TaskNames.NODE_DRAIN, **NODE_TASK_OPTIONS)
def drain_node(self: Task, job_id: str) -> str:
    """Run one step of a drain; schedule the next step when the drain has to wait."""
    session = get_sessionmaker()()
    try:
        outcome = drain.run_step(session, job_id, step_token=self.request.id)
    finally:
        session.close()
    if outcome.countdown is not None and outcome.next_token is not None:
        try:
            app.send_task(
                TaskNames.NODE_DRAIN,
                args=[job_id],
                task_id=outcome.next_token,
                queue=Queues.JOBS,
                countdown=outcome.countdown,
            )
        except Exception as error:
            # The next step's token is committed but its message was not sent: retrying this message makes
            # it adopt the job once the lost step is overdue (see workers.drain.step_tokens.seconds_until_adoptable).
            raise self.retry(exc=error, countdown=_backoff(self.request.retries)) from error
    return outcome.state


def _run_node_job(task: Task, job_id: str) -> str:
    session = get_sessionmaker()()
    try:
        return node_ops.run_node_job(session, job_id)
    except TransientClusterError as error:
        session.rollback()
        if task.request.retries >= NODE_JOB_MAX_RETRIES:
            jobs.fail(session, job_id, error.to_job_error())
            session.commit()
            return "FAILED"
        jobs.mark_retrying(session, job_id, error.to_job_error())
        session.commit()
        countdown = error.retry_after or _backoff(task.request.retries)
        raise task.retry(exc=error, countdown=countdown) from error
    finally:
        session.close()


@app.task(name=TaskNames.NODE_CORDON, **NODE_TASK_OPTIONS)
def cordon_node(self: Task, job_id: str) -> str:
    """Mark the node unschedulable and record who asked and why."""
    return _run_node_job(self, job_id)


@app.task(name=TaskNames.NODE_UNCORDON, **NODE_TASK_OPTIONS)
def uncordon_node(self: Task, job_id: str) -> str:
    """Make the node schedulable again and clear the cordon record."""
    return _run_node_job(self, job_id)
