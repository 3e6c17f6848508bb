"""Tenants: the owners of deployments, and the unit GPU quotas apply to."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, CreatedAtMixin

# A tenant id becomes a Kubernetes label value and part of object names, so it must be a DNS label.
K8S_LABEL_SAFE_PATTERN = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class Tenant(CreatedAtMixin, Base):
    __tablename__ = "tenants"
    __table_args__ = (
        CheckConstraint(f"id ~ '{K8S_LABEL_SAFE_PATTERN}'", name="id_label_safe"),
        CheckConstraint("gpu_quota IS NULL OR gpu_quota >= 0", name="gpu_quota_non_negative"),
    )

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    # NULL means "the platform default" (DEFAULT_TENANT_GPU_QUOTA), so changing the default reaches
    # every tenant that was never given an explicit quota.
    gpu_quota: Mapped[int | None]
    active: Mapped[bool] = mapped_column(default=True, server_default="true")

    def __repr__(self) -> str:
        return f"<Tenant {self.id}>"
