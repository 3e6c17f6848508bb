"""Deployments: one vLLM model served on Kubernetes, its desired shape and its last observed state."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.mutable import MutableDict, MutableList
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, TimestampMixin, str_enum_column_type

# DNS-1035 label: what Kubernetes requires of Service names, which are derived from deployment names.
DNS_1035_LABEL_PATTERN = "^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"


class DeploymentStatus(enum.StrEnum):
    PENDING = "PENDING"
    CREATING = "CREATING"
    RUNNING = "RUNNING"
    # Scaled to zero replicas and settled: nothing serves the model, and nothing is wrong.
    STOPPED = "STOPPED"
    DEGRADED = "DEGRADED"
    RESTARTING = "RESTARTING"
    SCALING = "SCALING"
    DELETING = "DELETING"
    DELETED = "DELETED"
    FAILED = "FAILED"


class Deployment(TimestampMixin, Base):
    __tablename__ = "deployments"
    __table_args__ = (
        # Names are reusable once a deployment is deleted (the row is kept for history).
        Index(
            "uq_deployments_tenant_id_name_live",
            "tenant_id",
            "name",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index(
            "uq_deployments_k8s_namespace_k8s_name_live",
            "k8s_namespace",
            "k8s_name",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("ix_deployments_status", "status"),
        # Ending a job releases the deployment it held (WHERE active_job_id = :job): only busy rows are indexed.
        Index("ix_deployments_active_job_id", "active_job_id", postgresql_where=text("active_job_id IS NOT NULL")),
        CheckConstraint(f"name ~ '{DNS_1035_LABEL_PATTERN}'", name="name_dns_1035"),
        CheckConstraint("gpus_per_replica > 0", name="gpus_per_replica_positive"),
        CheckConstraint("replicas_desired >= 0", name="replicas_desired_non_negative"),
        CheckConstraint("replicas_ready >= 0", name="replicas_ready_non_negative"),
        CheckConstraint("min_replicas >= 0", name="min_replicas_non_negative"),
        CheckConstraint("max_replicas >= min_replicas", name="max_replicas_not_below_min"),
        CheckConstraint("max_model_len IS NULL OR max_model_len > 0", name="max_model_len_positive"),
        CheckConstraint(
            "target_gpu_utilization IS NULL OR target_gpu_utilization BETWEEN 1 AND 100",
            name="target_gpu_utilization_percent",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(String(63), ForeignKey("tenants.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    model_id: Mapped[str] = mapped_column(String(255))
    image: Mapped[str] = mapped_column(String(512))
    gpu_type: Mapped[str] = mapped_column(String(128))
    gpus_per_replica: Mapped[int] = mapped_column(default=1, server_default="1")
    replicas_desired: Mapped[int] = mapped_column(default=1, server_default="1")
    replicas_ready: Mapped[int] = mapped_column(default=0, server_default="0")
    max_model_len: Mapped[int | None]
    dtype: Mapped[str | None] = mapped_column(String(32))
    # Extra vLLM command-line arguments, passed through verbatim after validation by the API.
    vllm_args: Mapped[list[Any]] = mapped_column(
        MutableList.as_mutable(JSONB), default=list, server_default=text("'[]'::jsonb")
    )
    autoscaling_enabled: Mapped[bool] = mapped_column(default=False, server_default="false")
    min_replicas: Mapped[int] = mapped_column(default=1, server_default="1")
    max_replicas: Mapped[int] = mapped_column(default=1, server_default="1")
    target_gpu_utilization: Mapped[int | None]
    # Per-metric targets for the autoscaler, e.g. {"queue_depth": 5, "kv_cache_usage": 0.8}.
    autoscaling_targets: Mapped[dict[str, Any]] = mapped_column(
        MutableDict.as_mutable(JSONB), default=dict, server_default=text("'{}'::jsonb")
    )
    k8s_namespace: Mapped[str] = mapped_column(String(63))
    k8s_name: Mapped[str] = mapped_column(String(63))
    endpoint: Mapped[str | None] = mapped_column(String(512))
    status: Mapped[DeploymentStatus] = mapped_column(
        str_enum_column_type(DeploymentStatus, "deployment_status"),
        default=DeploymentStatus.PENDING,
        server_default=DeploymentStatus.PENDING.value,
    )
    # Short machine-readable cause (e.g. "ImagePullBackOff", "InsufficientGPU"); status_message is for humans.
    status_reason: Mapped[str | None] = mapped_column(String(128))
    status_message: Mapped[str | None] = mapped_column(Text)
    # "One operation at a time": the job that currently holds this deployment. Claimed with an atomic
    # UPDATE ... WHERE active_job_id IS NULL, released when that job reaches a terminal state.
    active_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    last_observed_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    def __repr__(self) -> str:
        return f"<Deployment {self.id} {self.tenant_id}/{self.name} {self.status}>"
