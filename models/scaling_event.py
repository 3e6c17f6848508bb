"""Scaling events: an audit trail of every replica-count decision, including blocked ones."""

from __future__ import annotations

import enum
import uuid
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, CreatedAtMixin, str_enum_column_type


class ScalingTrigger(enum.StrEnum):
    MANUAL = "manual"
    AUTO = "auto"
    RECOVERY = "recovery"
    DRAIN = "drain"


class ScalingEventStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"


class ScalingEvent(CreatedAtMixin, Base):
    __tablename__ = "scaling_events"
    __table_args__ = (
        Index("ix_scaling_events_deployment_id_created_at", "deployment_id", "created_at"),
        Index("ix_scaling_events_tenant_id_created_at", "tenant_id", "created_at"),
        CheckConstraint("replicas_before >= 0 AND replicas_after >= 0", name="replicas_non_negative"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # Kept (as NULL) after the deployment row goes, with tenant_id and model_id copied for the audit trail.
    deployment_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("deployments.id", ondelete="SET NULL"))
    tenant_id: Mapped[str] = mapped_column(String(63))
    model_id: Mapped[str] = mapped_column(String(255))
    trigger: Mapped[ScalingTrigger] = mapped_column(str_enum_column_type(ScalingTrigger, "scaling_trigger"))
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    replicas_before: Mapped[int]
    replicas_after: Mapped[int]
    status: Mapped[ScalingEventStatus] = mapped_column(
        str_enum_column_type(ScalingEventStatus, "scaling_event_status"),
        default=ScalingEventStatus.PENDING,
        server_default=ScalingEventStatus.PENDING.value,
    )
    # The metric values and limits the decision was based on, so an autoscaler choice can be explained later.
    inputs: Mapped[dict[str, Any]] = mapped_column(
        MutableDict.as_mutable(JSONB), default=dict, server_default=text("'{}'::jsonb")
    )
    actor: Mapped[str | None] = mapped_column(String(255))
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))

    def __repr__(self) -> str:
        return f"<ScalingEvent {self.deployment_id} {self.replicas_before}->{self.replicas_after} {self.status}>"
