"""The plan phase: sort the node's pods, claim our deployments and reserve room for their surge."""

from __future__ import annotations

import uuid

from sqlalchemy import or_, select, update

from models import TERMINAL_JOB_STATES, Deployment, Job, JobState, ScalingEventStatus
from workers.domain import AdmissionError
from workers.drain.endings import finish_aborted, wait_or_timeout
from workers.drain.options import POLL_SECONDS
from workers.drain.pods import classify_pods, list_node_pods
from workers.drain.progress import PHASE_PLAN, DrainStep
from workers.drain.replicas import current_replicas
from workers.drain.surge_admission import admit_surge


def make_plan(step: DrainStep) -> float | None:
    """List and classify the node's pods, claim our deployments and reserve room for their surge."""
    pods = list_node_pods(step.node)
    classes = classify_pods(step.session, pods, step.options)
    if classes["blocked"]:
        step.plan["skipped"] = classes["skipped"]
        finish_aborted(
            step,
            JobState.FAILED,
            "pods_not_evictable",
            "the node holds pods that cannot be evicted with these options: "
            + "; ".join(f"{p['namespace']}/{p['name']}: {p['reason']}" for p in classes["blocked"]),
            details={"blocked_pods": classes["blocked"]},
        )
    deployments: dict[str, Deployment] = classes["deployments"]
    busy = claim_deployments(step, list(classes["ours"]))
    if busy:
        step.progress["waiting_on"] = "deployments busy with other jobs: " + ", ".join(busy)
        return wait_or_timeout(step, PHASE_PLAN, POLL_SECONDS * 2, "deployments_busy")[1]
    items = []
    no_room = []
    # Reservations live in a savepoint: if any deployment has no room, they all go, while the cordon
    # and the claims written earlier in this transaction stay.
    reservations = step.session.begin_nested()
    for deployment_id, refs in sorted(classes["ours"].items()):
        deployment = deployments[deployment_id]
        desired, ready = current_replicas(deployment.k8s_namespace, deployment.k8s_name)
        item = {
            "deployment_id": deployment_id,
            "name": deployment.name,
            "namespace": deployment.k8s_namespace,
            "k8s_name": deployment.k8s_name,
            "tenant_id": deployment.tenant_id,
            "model_id": deployment.model_id,
            "pods": [ref["name"] for ref in refs],
            "k": len(refs),
            "desired": desired,
            "ready_before": ready,
            "evicted": [],
            "surge": False,
            "surged": False,
            "returned": False,
            "replacements_ready": 0,
        }
        try:
            item["replacement_nodes"] = admit_surge(step.session, deployment, step.job.id, len(refs))
            item["surge"] = True
        except AdmissionError as error:
            item["capacity_error"] = {"code": error.code, "message": error.message, "details": error.details}
            no_room.append(item)
        items.append(item)
    if no_room and not step.options.allow_capacity_loss:
        # Nothing evicted, nothing surged: drop this transaction's reservations, record why, stop.
        reservations.rollback()
        for item in no_room:
            step.scaling_event(item, item["desired"], item["desired"] + item["k"], ScalingEventStatus.BLOCKED,
                               f"drain of {step.node}: no room elsewhere for {item['k']} replacement(s)",
                               capacity_error=item["capacity_error"])
        step.plan["deployments"] = items
        finish_aborted(
            step,
            JobState.FAILED,
            "no_capacity_elsewhere",
            "no capacity elsewhere for the replicas on this node: "
            + "; ".join(f"{item['name']}: {item['capacity_error']['message']}" for item in no_room)
            + " (the node stays cordoned; nothing was evicted; set allow_capacity_loss to drain anyway)",
            details={"deployments": [
                {"deployment_id": item["deployment_id"], "name": item["name"], "replicas_on_node": item["k"],
                 **item["capacity_error"]["details"]} for item in no_room
            ]},
        )
    reservations.commit()
    step.plan["deployments"] = items
    step.plan["foreign"] = [{**ref, "evicted": False} for ref in classes["foreign"]]
    step.plan["skipped"] = classes["skipped"]
    step.refresh_counts()
    return None


def claim_deployments(step: DrainStep, deployment_ids: list[str]) -> list[str]:
    """Hold each deployment for this job (one operation at a time); returns the ones another job holds."""
    busy = []
    terminal = select(Job.id).where(Job.state.in_(tuple(TERMINAL_JOB_STATES)))
    for deployment_id in deployment_ids:
        claimed = step.session.execute(
            update(Deployment)
            .where(
                Deployment.id == uuid.UUID(deployment_id),
                or_(
                    Deployment.active_job_id.is_(None),
                    Deployment.active_job_id == step.job.id,
                    Deployment.active_job_id.in_(terminal),
                ),
            )
            .values(active_job_id=step.job.id)
            .returning(Deployment.id)
        ).first()
        if claimed is None:
            busy.append(deployment_id)
    return busy
