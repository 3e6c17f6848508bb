"""What a drain would do to a node, answered without doing it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from models import GpuNode
from workers import node_ops
from workers.domain import AdmissionError
from workers.drain.options import DrainOptions
from workers.drain.pods import classify_pods, list_node_pods
from workers.drain.replicas import current_replicas
from workers.drain.surge_admission import admit_surge


def plan_impact(session: Session, node_name: str, options: DrainOptions) -> dict[str, Any]:
    """What a drain of ``node_name`` would do, without changing anything (the caller rolls back).

    Admission is run for real inside the caller's transaction (with the node marked unschedulable in it),
    so the capacity answer is exactly what the drain would get; the caller must roll the session back.
    """
    node_ops.lock_node_row(session, node_name)
    pods = list_node_pods(node_name)
    classes = classify_pods(session, pods, options)
    session.execute(update(GpuNode).where(GpuNode.name == node_name).values(unschedulable=True))
    impact = []
    for deployment_id, refs in sorted(classes["ours"].items()):
        deployment = classes["deployments"][deployment_id]
        desired, ready = current_replicas(deployment.k8s_namespace, deployment.k8s_name)
        entry = {
            "deployment_id": deployment_id,
            "name": deployment.name,
            "tenant_id": deployment.tenant_id,
            "model_id": deployment.model_id,
            "replicas_desired": desired,
            "replicas_ready": ready,
            "replicas_on_node": len(refs),
            "pods": [ref["name"] for ref in refs],
            "gpus_per_replica": deployment.gpus_per_replica,
        }
        try:
            placement = admit_surge(session, deployment, None, len(refs))
            entry.update(capacity_elsewhere=True, replicas_lost=0, replacement_nodes=placement)
        except AdmissionError as error:
            entry.update(
                capacity_elsewhere=False,
                replicas_lost=len(refs) if options.allow_capacity_loss else 0,
                capacity_error={"code": error.code, "message": error.message, "details": error.details},
            )
        impact.append(entry)
    blocked = classes["blocked"]
    no_room = [entry["name"] for entry in impact if not entry["capacity_elsewhere"]]
    would_stop = bool(blocked) or (bool(no_room) and not options.allow_capacity_loss)
    return {
        "node": node_name,
        "dry_run": True,
        "would_succeed": not would_stop,
        "deployments": impact,
        "foreign_pods": classes["foreign"],
        "skipped_pods": classes["skipped"],
        "blocked_pods": blocked,
        "terminating_pods": classes["terminating"],
        "pods_total": sum(len(refs) for refs in classes["ours"].values()) + len(classes["foreign"]),
        "options": options.to_params(),
    }
