"""A tenant's GPU quota: read it, with what the tenant holds, and set it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from models import Tenant
from workers import admission
from workers.queries import ensure_tenant


def tenant_quota(session: Session, tenant_id: str) -> dict[str, Any]:
    """The quota admission applies (the tenant's own, else the default), whether it is the tenant's own, and the
    GPUs the tenant's live reservations hold. A tenant never seen reads as the default with nothing held."""
    tenant = session.get(Tenant, tenant_id)
    quota, used = admission.tenant_quota(session, tenant_id)
    explicit = tenant is not None and tenant.gpu_quota is not None
    return {"tenant_id": tenant_id, "gpu_quota": quota, "explicit": explicit, "used": used}


def set_tenant_quota(session: Session, tenant_id: str, gpu_quota: int | None) -> dict[str, Any]:
    """Set the tenant's quota (``None``: back to the default). A quota below what the tenant holds takes nothing
    away: it refuses new GPUs (creates, scale-ups) until the tenant is under it."""
    ensure_tenant(session, tenant_id).gpu_quota = gpu_quota
    session.flush()
    return tenant_quota(session, tenant_id)
