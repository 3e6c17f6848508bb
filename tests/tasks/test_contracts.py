"""Meta-tests: every task states its delivery contract, every beat entry is runnable, every queue is consumed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import celeryconfig
from beat_schedule import BEAT_SCHEDULE
from workers.celery_app import app
from workers.queues import TASK_FOR_JOB_TYPE, Queues

REPOSITORY = Path(__file__).resolve().parents[2]
app.loader.import_default_modules()
OUR_TASKS = {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}


def effective_queue(task) -> str:
    """Where the task's messages go: its own queue, else the configured default."""
    return getattr(task, "queue", None) or app.conf.task_default_queue


def test_tasks_are_registered():
    assert {
        "deployments.create",
        "deployments.delete",
        "deployments.restart",
        "deployments.scale",
        "deployments.poll_status",
        "sweeps.resource_tracker",
    } <= set(OUR_TASKS)
    assert set(TASK_FOR_JOB_TYPE.values()) - {"nodes.drain", "nodes.cordon", "nodes.uncordon"} <= set(OUR_TASKS)


@pytest.mark.parametrize("name", sorted(OUR_TASKS))
def test_task_contract(name):
    task = OUR_TASKS[name]
    # An explicit dotted name, not one derived from the module path (which changes when code moves).
    assert re.fullmatch(r"[a-z_]+\.[a-z_]+", name)
    assert not name.startswith("tasks.")
    assert task.acks_late is True
    assert task.reject_on_worker_lost is True
    assert task.time_limit
    assert task.soft_time_limit
    assert task.soft_time_limit < task.time_limit
    assert effective_queue(task) in Queues.all()
    if getattr(task, "autoretry_for", ()):
        assert task.retry_backoff
        assert task.retry_jitter
        assert task.retry_backoff_max
        assert task.max_retries


def test_visibility_timeout_exceeds_every_time_limit():
    longest = max(task.time_limit for task in OUR_TASKS.values())
    assert celeryconfig.broker_transport_options["visibility_timeout"] > longest


def test_config_is_json_only_and_lowercase():
    assert celeryconfig.task_serializer == "json"
    assert celeryconfig.accept_content == ["json"]
    assert celeryconfig.worker_prefetch_multiplier == 1
    settings = [name for name in vars(celeryconfig) if not name.startswith("_") and name != "get_settings"]
    assert all(name == name.lower() for name in settings)


@pytest.mark.parametrize("entry", sorted(BEAT_SCHEDULE))
def test_beat_entries(entry):
    spec = BEAT_SCHEDULE[entry]
    assert spec["task"] in OUR_TASKS
    assert spec["options"]["queue"] in Queues.all()
    assert 0 < spec["options"]["expires"] <= spec["schedule"]
    assert app.conf.beat_schedule[entry] == spec


def test_every_queue_has_a_consumer_in_the_worker_command():
    procfile = (REPOSITORY / "Procfile").read_text()
    worker_line = next(line for line in procfile.splitlines() if line.startswith("worker:"))
    consumed = set(re.search(r"(?:--queues|-Q)[ =](\S+)", worker_line).group(1).split(","))
    assert set(Queues.all()) <= consumed
    used = {effective_queue(task) for task in OUR_TASKS.values()} | {
        spec["options"]["queue"] for spec in BEAT_SCHEDULE.values()
    }
    assert used <= consumed
