"""Persistence layer: SQLAlchemy models of the orchestration schema, plus engine and session helpers.

Importing this package registers every table on ``Base.metadata`` (Alembic and the test fixtures rely on it).
"""

from models.base import SCHEMA, Base
from models.deployment import Deployment, DeploymentStatus
from models.gpu_node import NODE_READY_STATUSES, GpuNode
from models.job import ACTIVE_JOB_STATES, DEFAULT_MAX_ATTEMPTS, TERMINAL_JOB_STATES, Job, JobState, JobType, TargetKind
from models.pod_allocation import FINISHED_POD_PHASES, PodAllocation
from models.reservation import GpuReservation
from models.scaling_event import ScalingEvent, ScalingEventStatus, ScalingTrigger
from models.sweep_run import SweepName, SweepRun
from models.tenant import Tenant

__all__ = [
    "ACTIVE_JOB_STATES",
    "DEFAULT_MAX_ATTEMPTS",
    "FINISHED_POD_PHASES",
    "NODE_READY_STATUSES",
    "SCHEMA",
    "TERMINAL_JOB_STATES",
    "Base",
    "Deployment",
    "DeploymentStatus",
    "GpuNode",
    "GpuReservation",
    "Job",
    "JobState",
    "JobType",
    "PodAllocation",
    "ScalingEvent",
    "ScalingEventStatus",
    "ScalingTrigger",
    "SweepName",
    "SweepRun",
    "TargetKind",
    "Tenant",
]
