"""The pods running on nodes now (from Postgres) and the deployments they belong to, shared by the node views."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Deployment, PodAllocation


def live_pods_by_node(session: Session, node_names: list[str]) -> dict[str, list[PodAllocation]]:
    pods_by_node: dict[str, list[PodAllocation]] = defaultdict(list)
    if not node_names:
        return pods_by_node
    for pod in session.scalars(
        select(PodAllocation).where(PodAllocation.node_name.in_(node_names), PodAllocation.terminated_at.is_(None))
    ):
        pods_by_node[pod.node_name or ""].append(pod)
    return pods_by_node


def deployments_by_id(session: Session, ids: set[uuid.UUID]) -> dict[uuid.UUID, Deployment]:
    if not ids:
        return {}
    return {row.id: row for row in session.scalars(select(Deployment).where(Deployment.id.in_(ids)))}
