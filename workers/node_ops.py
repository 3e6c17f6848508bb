"""Cordon and uncordon GPU nodes, and the admin jobs that request them.

Both go through jobs (like every other cluster change) so they share the audit trail (who, why, when),
the Idempotency-Key handling and the transient-error retry contract of the tasks. The GpuNode row records
who cordoned a node and why; the drain uses the same functions, so an operator can always tell a node
cordoned by a drain from one cordoned by hand.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models import ACTIVE_JOB_STATES, GpuNode, Job, JobType, TargetKind
from workers import cluster_errors, idempotency_keys, jobs
from workers.domain import ConflictError, NotFoundError
from workers.k8s import get_clients

NODE_JOB_MAX_ATTEMPTS = 5


@dataclass
class NodeJobSubmitted:
    job: Job
    replayed: bool


def find_node(session: Session, node_name: str, *, lock: bool = False) -> GpuNode:
    """The node's row (``lock``: locked until the transaction ends); NotFoundError if no such node is present."""
    query = select(GpuNode).where(GpuNode.name == node_name)
    node = session.scalar(query.with_for_update() if lock else query)
    if node is None or not node.present:
        raise NotFoundError("node_not_found", f"no GPU node named {node_name!r}", {"node": node_name})
    return node


def lock_node_row(session: Session, node_name: str) -> GpuNode:
    """The node's row, locked until the transaction ends (serialises job submissions per node)."""
    return find_node(session, node_name, lock=True)


def active_node_job(session: Session, node_name: str, job_type: JobType) -> Job | None:
    return session.scalar(
        select(Job).where(
            Job.target_kind == TargetKind.NODE,
            Job.target_id == node_name,
            Job.type == job_type,
            Job.state.in_(ACTIVE_JOB_STATES),
        )
    )


def request_node_job(
    session: Session,
    *,
    node_name: str,
    job_type: JobType,
    params: dict[str, Any],
    requested_by: str,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
) -> NodeJobSubmitted:
    """Validate and write a node job (cordon / uncordon / drain); the caller commits, then enqueues.

    The node row is locked first, so two concurrent submissions for one node are decided one after the
    other: of two drains, the second sees the first and gets ``409 drain_in_progress``.
    """
    scope = idempotency_keys.scope_for(None, requested_by)  # admin jobs belong to no tenant
    replay = idempotency_keys.earlier_job(
        session, scope, idempotency_key, fingerprint, former_scope=f"admin:{requested_by}"
    )
    if replay is not None:
        return NodeJobSubmitted(replay, replayed=True)
    lock_node_row(session, node_name)
    drain = active_node_job(session, node_name, JobType.NODE_DRAIN)
    # The drain cordoned the node and owns it until it ends: a second drain, an uncordon, or a cordon (which would
    # replace the drain's reason with its own) waits for it.
    if drain is not None:
        raise ConflictError(
            "drain_in_progress",
            f"node {node_name} is being drained by job {drain.id}",
            {"job_id": str(drain.id), "node": node_name},
        )
    job = Job(
        type=job_type,
        tenant_id=None,
        requested_by=requested_by,
        target_kind=TargetKind.NODE,
        target_id=node_name,
        params=params,
        progress={},
        idempotency_scope=scope if idempotency_key else None,
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
        max_attempts=NODE_JOB_MAX_ATTEMPTS,
    )
    session.add(job)
    session.flush()
    return NodeJobSubmitted(job, replayed=False)


# --------------------------------------------------------------------------- cluster operations


def set_unschedulable(node_name: str, unschedulable: bool) -> None:
    """Patch ``spec.unschedulable`` (idempotent: patching the value it already has is a no-op)."""
    clients = get_clients()
    with cluster_errors.translate():
        clients.core.patch_node(node_name, {"spec": {"unschedulable": unschedulable}}, **clients.timeout)


def record_cordon(session: Session, node_name: str, *, cordoned: bool, by: str | None, reason: str | None) -> None:
    """Mirror the cordon state on the GpuNode row at once, so admission stops placing replicas there
    without waiting for the next resource-tracker sweep."""
    session.execute(
        update(GpuNode)
        .where(GpuNode.name == node_name)
        .values(
            unschedulable=cordoned,
            cordoned_by=by if cordoned else None,
            cordon_reason=reason if cordoned else None,
        )
    )


def cordon(session: Session, node_name: str, *, by: str, reason: str | None) -> None:
    set_unschedulable(node_name, True)
    record_cordon(session, node_name, cordoned=True, by=by, reason=reason)


def uncordon(session: Session, node_name: str) -> None:
    set_unschedulable(node_name, False)
    record_cordon(session, node_name, cordoned=False, by=None, reason=None)


def run_node_job(session: Session, job_id: uuid.UUID | str) -> str:
    """Carry out a cordon or uncordon job; commits. Returns the job's final state (or "skipped").

    Transient cluster errors propagate (the task retries them with backoff); a permanent error fails the
    job with the cluster's message. A 404 on the node means it left the cluster: nothing to cordon.
    """
    job = jobs.start(session, job_id)
    if job is None:
        session.rollback()
        return "skipped"
    session.commit()
    node_name = job.target_id
    try:
        if job.type == JobType.NODE_CORDON:
            cordon(session, node_name, by=job.requested_by, reason=job.params.get("reason"))
        elif job.type == JobType.NODE_UNCORDON:
            uncordon(session, node_name)
        else:
            raise ValueError(f"run_node_job cannot run a {job.type} job")
    except cluster_errors.PermanentClusterError as error:
        session.rollback()
        code = "node_not_found" if error.status == 404 else error.code
        jobs.fail(session, job.id, {"code": code, "message": error.message, "retryable": False})
        session.commit()
        return "FAILED"
    jobs.succeed(
        session,
        job.id,
        {"node": node_name, "schedulable": job.type == JobType.NODE_UNCORDON,
         "reason": job.params.get("reason")},
    )
    session.commit()
    return "SUCCEEDED"
