"""GPU nodes as last seen by the resource tracker: capacity, allocation, health, cordon state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.mutable import MutableDict, MutableList
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

NODE_READY_STATUSES = ("Ready", "NotReady", "Unknown")


class GpuNode(Base):
    __tablename__ = "gpu_nodes"
    __table_args__ = (
        CheckConstraint("ready_status IN ('Ready', 'NotReady', 'Unknown')", name="ready_status_known"),
        CheckConstraint(
            "gpu_capacity >= 0 AND gpu_allocatable >= 0 AND gpu_allocated >= 0", name="gpu_counts_non_negative"
        ),
        CheckConstraint("cpu_capacity_millicores >= 0 AND cpu_allocatable_millicores >= 0", name="cpu_non_negative"),
        CheckConstraint("memory_capacity_bytes >= 0 AND memory_allocatable_bytes >= 0", name="memory_non_negative"),
    )

    name: Mapped[str] = mapped_column(String(253), primary_key=True)
    uid: Mapped[str | None] = mapped_column(String(64))
    internal_ip: Mapped[str | None] = mapped_column(String(64))
    hostname: Mapped[str | None] = mapped_column(String(253))
    gpu_product: Mapped[str | None] = mapped_column(String(128), index=True)
    gpu_memory_mb: Mapped[int | None]
    gpu_capacity: Mapped[int] = mapped_column(default=0, server_default="0")
    gpu_allocatable: Mapped[int] = mapped_column(default=0, server_default="0")
    # GPUs requested by pods bound to this node, as counted by the last resource-tracker sweep.
    gpu_allocated: Mapped[int] = mapped_column(default=0, server_default="0")
    cpu_capacity_millicores: Mapped[int] = mapped_column(default=0, server_default="0")
    cpu_allocatable_millicores: Mapped[int] = mapped_column(default=0, server_default="0")
    memory_capacity_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    memory_allocatable_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    ready_status: Mapped[str] = mapped_column(String(16), default="Unknown", server_default="Unknown")
    unschedulable: Mapped[bool] = mapped_column(default=False, server_default="false")
    # Who cordoned the node and why, so an uncordon by the service never undoes an operator's cordon.
    cordoned_by: Mapped[str | None] = mapped_column(String(255))
    cordon_reason: Mapped[str | None] = mapped_column(Text)
    taints: Mapped[list[Any]] = mapped_column(
        MutableList.as_mutable(JSONB), default=list, server_default=text("'[]'::jsonb")
    )
    labels: Mapped[dict[str, Any]] = mapped_column(
        MutableDict.as_mutable(JSONB), default=dict, server_default=text("'{}'::jsonb")
    )
    conditions: Mapped[list[Any]] = mapped_column(
        MutableList.as_mutable(JSONB), default=list, server_default=text("'[]'::jsonb")
    )
    gpu_utilization: Mapped[float | None]
    # False once the node vanished from the cluster; the row stays so history and reservations still resolve.
    present: Mapped[bool] = mapped_column(default=True, server_default="true")
    first_seen_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(server_default=func.now())

    @property
    def gpu_free(self) -> int:
        """GPUs neither allocated nor reserved-by-Kubernetes; never negative."""
        return max(self.gpu_allocatable - self.gpu_allocated, 0)

    def __repr__(self) -> str:
        return f"<GpuNode {self.name} {self.ready_status}>"
