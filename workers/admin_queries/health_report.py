"""The infrastructure health report: nodes, GPUs, stuck deployments, sweeps and beat, and one verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from models import Deployment, DeploymentStatus, GpuNode, SweepRun
from workers.admin_queries.live_pods import gpus_held, live_pods_by_node
from workers.observe import PROGRESS_REASONS, latest_change_started

# A deployment in one of these states is "in motion"; past this age, or with a reason that is not progress
# (a pod starting, a model loading: every rollout shows those), it is stuck.
TRANSITIONAL_STATUSES = (
    DeploymentStatus.PENDING,
    DeploymentStatus.CREATING,
    DeploymentStatus.RESTARTING,
    DeploymentStatus.SCALING,
    DeploymentStatus.DELETING,
)
STUCK_AFTER = timedelta(minutes=15)


def _age_seconds(moment: datetime | None, now: datetime) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(max((now - moment).total_seconds(), 0.0), 1)


def node_health(session: Session) -> dict[str, Any]:
    """Nodes by readiness and cordon state; GPUs total, allocated and stranded on unhealthy nodes."""
    nodes = list(session.scalars(select(GpuNode).where(GpuNode.present.is_(True))))
    pods_by_node = live_pods_by_node(session, [node.name for node in nodes])
    unhealthy = [node for node in nodes if node.ready_status != "Ready"]
    return {
        "nodes": {
            "total": len(nodes),
            "ready": sum(1 for node in nodes if node.ready_status == "Ready"),
            "not_ready": sum(1 for node in nodes if node.ready_status == "NotReady"),
            "unknown": sum(1 for node in nodes if node.ready_status == "Unknown"),
            "cordoned": sum(1 for node in nodes if node.unschedulable),
            "unhealthy_names": sorted(node.name for node in unhealthy),
        },
        "gpus": {
            "total": sum(node.gpu_capacity for node in nodes),
            "allocatable": sum(node.gpu_allocatable for node in nodes),
            "allocated": sum(gpus_held(pods_by_node.get(node.name, [])) for node in nodes),
            "on_unhealthy_nodes": sum(node.gpu_capacity for node in unhealthy),
            # GPUs the device plugin stopped advertising on nodes that are otherwise up (GPU faults).
            "degraded": sum(max(node.gpu_capacity - node.gpu_allocatable, 0) for node in nodes),
        },
    }


def deployment_health(session: Session, now: datetime) -> dict[str, Any]:
    """Live deployments by status, plus those stuck in a transition or failed, with their reasons."""
    counts = dict(
        session.execute(
            select(Deployment.status, func.count()).where(Deployment.deleted_at.is_(None)).group_by(Deployment.status)
        ).all()
    )
    # When the transition began: its job's creation (the status poll rewrites updated_at on every look, so
    # that says nothing about how long a rollout has been going), else the deployment's own.
    change_started = func.coalesce(latest_change_started(), Deployment.created_at)
    stuck_query = select(Deployment, change_started).where(
        Deployment.deleted_at.is_(None),
        or_(
            Deployment.status.in_((DeploymentStatus.FAILED, DeploymentStatus.DEGRADED)),
            and_(
                Deployment.status.in_(TRANSITIONAL_STATUSES),
                or_(
                    and_(Deployment.status_reason.is_not(None), Deployment.status_reason.not_in(PROGRESS_REASONS)),
                    change_started < now - STUCK_AFTER,
                ),
            ),
        ),
    )
    stuck = [
        {
            "deployment_id": str(row.id),
            "tenant_id": row.tenant_id,
            "name": row.name,
            "model_id": row.model_id,
            "status": str(row.status),
            "reason": row.status_reason,
            "message": row.status_message,
            "replicas": {"desired": row.replicas_desired, "ready": row.replicas_ready},
            "since": row.updated_at,
            "change_started_at": started,
        }
        for row, started in session.execute(stuck_query.order_by(Deployment.updated_at).limit(100))
    ]
    return {"by_status": {str(status): count for status, count in counts.items()}, "stuck": stuck}


def sweep_health(session: Session, now: datetime, intervals: dict[str, int]) -> dict[str, Any]:
    """When each sweep last ran, and whether beat looks alive (some sweep started recently)."""
    runs = {run.name: run for run in session.scalars(select(SweepRun))}
    sweeps = {}
    for name, interval in sorted(intervals.items()):
        run = runs.get(name)
        since_start = _age_seconds(run.last_started_at if run else None, now)
        sweeps[name] = {
            "interval_seconds": interval,
            "last_started_at": run.last_started_at if run else None,
            "last_finished_at": run.last_finished_at if run else None,
            "last_status": run.last_status if run else None,
            "seconds_since_last_run": since_start,
            # Three missed intervals: one late run is jitter, three is a stopped beat or a dead queue.
            "stale": since_start is None or since_start > 3 * interval,
        }
    fresh = [sweep for sweep in sweeps.values() if not sweep["stale"]]
    beat = {
        "alive": bool(fresh),
        "evidence": "sweep_runs",
        "seconds_since_last_sweep": min(
            (sweep["seconds_since_last_run"] for sweep in sweeps.values()
             if sweep["seconds_since_last_run"] is not None),
            default=None,
        ),
    }
    return {"sweeps": sweeps, "beat": beat}


def verdict(report: dict[str, Any]) -> tuple[str, list[str]]:
    """``healthy`` / ``degraded`` / ``unhealthy`` and the reasons, from a health report's parts."""
    problems: list[str] = []
    severe: list[str] = []
    nodes = report["nodes"]
    if nodes["total"] == 0 or nodes["ready"] == 0:
        severe.append("no Ready GPU node")
    elif nodes["ready"] < nodes["total"]:
        problems.append(f"{nodes['total'] - nodes['ready']} GPU node(s) not Ready")
    if report["gpus"]["degraded"]:
        problems.append(f"{report['gpus']['degraded']} GPU(s) not allocatable on their nodes")
    if report["deployments"]["stuck"]:
        problems.append(f"{len(report['deployments']['stuck'])} deployment(s) stuck or failed")
    workers = report["workers"]
    if not workers["alive"]:
        severe.append("no Celery worker answered: " + (workers.get("error") or "no reply"))
    if not report["beat"]["alive"]:
        problems.append("no sweep ran recently: Celery beat looks stopped")
    stale = [name for name, sweep in report["sweeps"].items() if sweep["stale"]]
    if stale and report["beat"]["alive"]:
        problems.append("stale sweep(s): " + ", ".join(stale))
    if not report["queues"]["available"]:
        severe.append("broker unreachable: " + (report["queues"].get("error") or ""))
    if severe:
        return "unhealthy", severe + problems
    if problems:
        return "degraded", problems
    return "healthy", []


def infrastructure_health(
    session: Session,
    *,
    workers: dict[str, Any],
    queues: dict[str, Any],
    sweep_intervals: dict[str, int],
    now: datetime | None = None,
) -> dict[str, Any]:
    """The whole report; ``workers`` and ``queues`` come from :mod:`workers.admin_queries.celery_liveness`."""
    now = now or datetime.now(UTC)
    report: dict[str, Any] = {"checked_at": now}
    report.update(node_health(session))
    report["deployments"] = deployment_health(session, now)
    report.update(sweep_health(session, now, sweep_intervals))
    report["workers"] = workers
    report["queues"] = queues
    report["verdict"], report["problems"] = verdict(report)
    return report
