"""Jobs: the durable record of every asynchronous change to the cluster (the source of truth, not Celery)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, TimestampMixin, str_enum_column_type


class JobType(enum.StrEnum):
    DEPLOYMENT_CREATE = "deployment.create"
    DEPLOYMENT_DELETE = "deployment.delete"
    DEPLOYMENT_RESTART = "deployment.restart"
    DEPLOYMENT_SCALE = "deployment.scale"
    NODE_DRAIN = "node.drain"
    NODE_CORDON = "node.cordon"
    NODE_UNCORDON = "node.uncordon"


class JobState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """True once the job can never change again."""
        return self in TERMINAL_JOB_STATES


TERMINAL_JOB_STATES: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_JOB_STATES: frozenset[JobState] = frozenset(set(JobState) - TERMINAL_JOB_STATES)


class TargetKind(enum.StrEnum):
    DEPLOYMENT = "deployment"
    NODE = "node"


def _new_celery_task_id() -> str:
    return str(uuid.uuid4())


# Runs of a job's task before it fails for good: the first one and its retries (the tasks' max_retries is one less).
DEFAULT_MAX_ATTEMPTS = 5


class Job(TimestampMixin, Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # A repeated POST with the same Idempotency-Key inside one scope (tenant or requester) must find
        # the first job; the unique index makes the second INSERT fail even when two requests race.
        Index(
            "uq_jobs_idempotency_scope_key",
            "idempotency_scope",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index("ix_jobs_target_kind_target_id_state", "target_kind", "target_id", "state"),
        Index("ix_jobs_tenant_id_created_at", "tenant_id", "created_at"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        CheckConstraint("max_attempts > 0", name="max_attempts_positive"),
        CheckConstraint("idempotency_key IS NULL OR idempotency_scope IS NOT NULL", name="idempotency_key_has_scope"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    type: Mapped[JobType] = mapped_column(str_enum_column_type(JobType, "job_type"))
    state: Mapped[JobState] = mapped_column(
        str_enum_column_type(JobState, "job_state"),
        default=JobState.PENDING,
        server_default=JobState.PENDING.value,
    )
    # NULL for admin jobs on nodes, which belong to no tenant.
    tenant_id: Mapped[str | None] = mapped_column(String(63))
    requested_by: Mapped[str] = mapped_column(String(255))
    target_kind: Mapped[TargetKind] = mapped_column(str_enum_column_type(TargetKind, "job_target_kind"))
    target_id: Mapped[str] = mapped_column(String(255))
    # Generated before the row is committed, so the task can be enqueued with a known id after commit
    # and operators can find the job from Flower.
    celery_task_id: Mapped[str] = mapped_column(String(64), unique=True, default=_new_celery_task_id)
    idempotency_scope: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # Hash of the request body: a reused Idempotency-Key with a different body is refused, not replayed.
    request_fingerprint: Mapped[str | None] = mapped_column(String(128))
    params: Mapped[dict[str, Any]] = mapped_column(
        MutableDict.as_mutable(JSONB), default=dict, server_default=text("'{}'::jsonb")
    )
    progress: Mapped[dict[str, Any]] = mapped_column(
        MutableDict.as_mutable(JSONB), default=dict, server_default=text("'{}'::jsonb")
    )
    result: Mapped[dict[str, Any] | None] = mapped_column(MutableDict.as_mutable(JSONB(none_as_null=True)))
    # {"code": ..., "message": ..., "retryable": bool}
    error: Mapped[dict[str, Any] | None] = mapped_column(MutableDict.as_mutable(JSONB(none_as_null=True)))
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(default=DEFAULT_MAX_ATTEMPTS, server_default=str(DEFAULT_MAX_ATTEMPTS))
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default="false")
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    @property
    def is_terminal(self) -> bool:
        return JobState(self.state).is_terminal

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.type} {self.state}>"
