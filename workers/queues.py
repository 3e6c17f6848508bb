"""Queue and task names in one place: the worker command, the dispatcher, beat and the meta-tests read them here."""

from __future__ import annotations

from models import JobType


class Queues:
    """Celery queues. ``JOBS`` carries user-requested operations and the status poller that follows them;
    ``SWEEPS`` the periodic reconcilers, so a long sweep backlog never delays a user's create (and vice versa)."""

    JOBS = "jobs"
    SWEEPS = "sweeps"

    @classmethod
    def all(cls) -> tuple[str, ...]:
        return (cls.JOBS, cls.SWEEPS)


class TaskNames:
    CREATE = "deployments.create"
    DELETE = "deployments.delete"
    RESTART = "deployments.restart"
    SCALE = "deployments.scale"
    POLL_STATUS = "deployments.poll_status"
    NODE_DRAIN = "nodes.drain"
    NODE_CORDON = "nodes.cordon"
    NODE_UNCORDON = "nodes.uncordon"
    HEALTH_MONITOR = "sweeps.health_monitor"
    RESOURCE_TRACKER = "sweeps.resource_tracker"
    AUTOSCALER = "sweeps.autoscaler"
    REQUEUE_LOST_JOBS = "sweeps.requeue_lost_jobs"


TASK_FOR_JOB_TYPE: dict[JobType, str] = {
    JobType.DEPLOYMENT_CREATE: TaskNames.CREATE,
    JobType.DEPLOYMENT_DELETE: TaskNames.DELETE,
    JobType.DEPLOYMENT_RESTART: TaskNames.RESTART,
    JobType.DEPLOYMENT_SCALE: TaskNames.SCALE,
    JobType.NODE_DRAIN: TaskNames.NODE_DRAIN,
    JobType.NODE_CORDON: TaskNames.NODE_CORDON,
    JobType.NODE_UNCORDON: TaskNames.NODE_UNCORDON,
}
