"""The periodic sweeps, as data: one entry per sweep, each with its queue and an ``expires`` so a backlog of
missed runs (beat kept ticking while workers were down) is dropped instead of executed in a burst."""

from settings import get_settings
from workers.queues import Queues, TaskNames


def every(task_name: str, seconds: int, queue: str = Queues.SWEEPS) -> dict:
    """A beat entry running ``task_name`` every ``seconds``; a run not started within one interval expires."""
    return {"task": task_name, "schedule": float(seconds), "options": {"queue": queue, "expires": float(seconds)}}


_settings = get_settings()

BEAT_SCHEDULE: dict[str, dict] = {
    "resource-tracker": every(TaskNames.RESOURCE_TRACKER, _settings.resource_tracker_interval_seconds),
    "health-monitor": every(TaskNames.HEALTH_MONITOR, _settings.health_monitor_interval_seconds),
    "autoscaler": every(TaskNames.AUTOSCALER, _settings.autoscaler_interval_seconds),
    "requeue-lost-jobs": every(TaskNames.REQUEUE_LOST_JOBS, 60),
}
