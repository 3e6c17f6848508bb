"""Fixtures for workers tests: GPU node rows and tenants, written through a session."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from models import GpuNode, PodAllocation, Tenant


def add_nodes(session: Session, spec: dict[str, tuple[str, int]], **overrides) -> None:
    """``{"l40s-0": ("nvidia-l40s", 8)}`` -> present, Ready, schedulable GpuNode rows."""
    for name, (product, gpus) in spec.items():
        values = {
            "name": name,
            "gpu_product": product,
            "gpu_capacity": gpus,
            "gpu_allocatable": gpus,
            "ready_status": "Ready",
            "unschedulable": False,
            "present": True,
        }
        values.update(overrides)
        session.add(GpuNode(**values))
    session.flush()


def add_foreign_pod(session: Session, node: str, gpus: int, name: str = "foreign") -> None:
    session.add(
        PodAllocation(
            pod_uid=f"uid-{name}", namespace="other", pod_name=name, node_name=node, gpus=gpus, phase="Running"
        )
    )
    session.flush()


def add_tenant(session: Session, tenant_id: str = "acme", quota: int | None = None) -> Tenant:
    tenant = Tenant(id=tenant_id, name=tenant_id, gpu_quota=quota)
    session.add(tenant)
    session.flush()
    return tenant


@pytest.fixture
def nodes(db_session: Session) -> Callable[..., None]:
    return lambda spec, **overrides: add_nodes(db_session, spec, **overrides)
