"""The Celery application: ``celery -A workers.celery_app worker -Q jobs,sweeps`` (and ``beat``, ``flower``).

Settings come from ``celeryconfig`` (or the module named by ``CELERY_CONFIG_MODULE``, Celery's own
convention, which the end-to-end tests use to isolate their Redis keys). Task modules are every module
of the ``tasks`` package, so adding one needs no registration here.
"""

from __future__ import annotations

import logging
import os
import pkgutil
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun, worker_process_init, worker_ready

from beat_schedule import BEAT_SCHEDULE
from models.db import dispose_engine
from workers import broker
from workers.k8s import reset_client
from workers.logs import configure_logging, job_id_var, task_id_var
from workers.queues import TASK_FOR_JOB_TYPE, Queues, TaskNames

logger = logging.getLogger(__name__)

_TASKS_PACKAGE = Path(__file__).resolve().parent.parent / "tasks"
TASK_MODULES = sorted(f"tasks.{module.name}" for module in pkgutil.iter_modules([str(_TASKS_PACKAGE)]))

# redis:// goes through workers.broker's transport (one Redis client per channel instead of one per publish).
broker.install()
app = Celery("orchestration", include=TASK_MODULES)
app.config_from_object(os.environ.get("CELERY_CONFIG_MODULE", "celeryconfig"))
app.conf.beat_schedule = BEAT_SCHEDULE


@setup_logging.connect
def _configure_logging(loglevel: Any = None, **_: Any) -> None:
    """JSON logs instead of Celery's own format; ``--loglevel`` still decides the level."""
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    configure_logging("worker", level=level or None)


@worker_process_init.connect
def _reset_per_process_state(**_: Any) -> None:
    """A forked child must not reuse the parent's database connections or Kubernetes connection pool."""
    dispose_engine(close_connections=False)
    reset_client()


@worker_ready.connect
def _sync_inventory_at_start(**_: Any) -> None:
    """Admission reads the GpuNode/PodAllocation rows: refresh them as soon as a worker is up instead of
    waiting for the first beat tick."""
    app.send_task(TaskNames.RESOURCE_TRACKER, queue=Queues.SWEEPS, expires=300)


_context_tokens: dict[str, Any] = {}


@task_prerun.connect
def _bind_log_context(task_id: str | None = None, task: Any = None, args: Any = None, **_: Any) -> None:
    # Job tasks take the job id as their only argument; other tasks (observe, sweeps) have no job.
    is_job_task = getattr(task, "name", None) in TASK_FOR_JOB_TYPE.values()
    job_id = str(args[0]) if args and is_job_task else None
    _context_tokens[task_id or ""] = (task_id_var.set(task_id), job_id_var.set(job_id))


@task_postrun.connect
def _unbind_log_context(task_id: str | None = None, **_: Any) -> None:
    tokens = _context_tokens.pop(task_id or "", None)
    if tokens is not None:
        task_token, job_token = tokens
        job_id_var.reset(job_token)
        task_id_var.reset(task_token)
