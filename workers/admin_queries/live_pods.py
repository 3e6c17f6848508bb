"""The pods running on nodes now (from Postgres) and the deployments they belong to, shared by the node views."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import FINISHED_POD_PHASES, Deployment, PodAllocation


def live_pods_by_node(session: Session, node_names: list[str]) -> dict[str, list[PodAllocation]]:
    pods_by_node: dict[str, list[PodAllocation]] = defaultdict(list)
    if not node_names:
        return pods_by_node
    for pod in session.scalars(
        select(PodAllocation).where(PodAllocation.node_name.in_(node_names), PodAllocation.terminated_at.is_(None))
    ):
        pods_by_node[pod.node_name or ""].append(pod)
    return pods_by_node


def gpus_held(pods: list[PodAllocation]) -> int:
    """GPUs a node's live pods hold (finished pods hold none), as last observed.

    The admin views count a node's allocation from its pod rows, which every status poll keeps current for the
    service's deployments, rather than from the node row's total, which only the resource tracker writes (once
    a minute): a node's allocated GPUs then agree with the pods and deployments listed beside them."""
    return sum(pod.gpus for pod in pods if pod.phase not in FINISHED_POD_PHASES)


def deployments_by_id(session: Session, ids: set[uuid.UUID]) -> dict[uuid.UUID, Deployment]:
    if not ids:
        return {}
    return {row.id: row for row in session.scalars(select(Deployment).where(Deployment.id.in_(ids)))}
