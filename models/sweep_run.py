"""The last run of each periodic sweep, so /health can say how stale the reconciled state is."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class SweepName(enum.StrEnum):
    HEALTH_MONITOR = "health_monitor"
    RESOURCE_TRACKER = "resource_tracker"
    AUTOSCALER = "autoscaler"


class SweepRun(Base):
    __tablename__ = "sweep_runs"

    # Plain string, not a CHECK-ed enum: adding a sweep should not need a migration.
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_started_at: Mapped[datetime | None]
    last_finished_at: Mapped[datetime | None]
    # "running" | "succeeded" | "failed"
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_summary: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))

    def __repr__(self) -> str:
        return f"<SweepRun {self.name} {self.last_status}>"
