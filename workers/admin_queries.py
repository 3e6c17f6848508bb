"""Reads behind the admin API: the GPU node view, scaling events and the infrastructure health report.

All of it comes from Postgres (kept true to the cluster by the sweeps), so the admin pages answer even
when the Kubernetes API is slow or down; only the health report also asks Celery and Redis, each with a
short timeout, because worker liveness and queue depth live nowhere else.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from models import (
    ACTIVE_JOB_STATES,
    Deployment,
    DeploymentStatus,
    GpuNode,
    Job,
    JobType,
    PodAllocation,
    ScalingEvent,
    SweepRun,
    TargetKind,
)
from workers.domain import InvalidRequestError

MAX_PAGE_SIZE = 500

# A deployment in one of these states is "in motion"; past this age (or with a failure reason) it is stuck.
TRANSITIONAL_STATUSES = (
    DeploymentStatus.PENDING,
    DeploymentStatus.CREATING,
    DeploymentStatus.RESTARTING,
    DeploymentStatus.SCALING,
    DeploymentStatus.DELETING,
)
STUCK_AFTER = timedelta(minutes=15)


# --------------------------------------------------------------------------- cursors


def encode_cursor(values: list[Any]) -> str:
    """An opaque keyset cursor (the sort key of the last row of a page)."""
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    """The values inside ``cursor``; InvalidRequestError (422) if it was not made by :func:`encode_cursor`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != arity:
        raise InvalidRequestError("invalid_cursor", "cursor is not one this API returned", {"field": "cursor"})
    return values


# --------------------------------------------------------------------------- nodes


def _is_drain_job_active(session: Session, node_name: str) -> uuid.UUID | None:
    return session.scalar(
        select(Job.id).where(
            Job.target_kind == TargetKind.NODE,
            Job.target_id == node_name,
            Job.type == JobType.NODE_DRAIN,
            Job.state.in_(ACTIVE_JOB_STATES),
        )
    )


def node_view(node: GpuNode, pods: list[PodAllocation], deployments: dict[uuid.UUID, Deployment]) -> dict[str, Any]:
    """One node as the admin API shows it."""
    by_deployment: dict[uuid.UUID, dict[str, Any]] = {}
    for pod in pods:
        if pod.deployment_id is None or pod.deployment_id not in deployments:
            continue
        deployment = deployments[pod.deployment_id]
        entry = by_deployment.setdefault(
            deployment.id,
            {
                "deployment_id": str(deployment.id),
                "name": deployment.name,
                "tenant_id": deployment.tenant_id,
                "model_id": deployment.model_id,
                "pods": 0,
                "gpus": 0,
            },
        )
        entry["pods"] += 1
        entry["gpus"] += pod.gpus
    return {
        "name": node.name,
        "internal_ip": node.internal_ip,
        "gpu": {
            "product": node.gpu_product,
            "memory_mb": node.gpu_memory_mb,
            "capacity": node.gpu_capacity,
            "allocatable": node.gpu_allocatable,
            "allocated": node.gpu_allocated,
            "free": node.gpu_free,
        },
        "cpu": {"capacity_millicores": node.cpu_capacity_millicores,
                "allocatable_millicores": node.cpu_allocatable_millicores},
        "memory": {"capacity_bytes": node.memory_capacity_bytes, "allocatable_bytes": node.memory_allocatable_bytes},
        "ready_status": node.ready_status,
        "schedulable": not node.unschedulable,
        "cordon": {"cordoned": node.unschedulable, "by": node.cordoned_by, "reason": node.cordon_reason},
        "taints": list(node.taints or []),
        "labels": dict(node.labels or {}),
        "conditions": list(node.conditions or []),
        "deployments": sorted(by_deployment.values(), key=lambda item: item["name"]),
        "pods": [
            {
                "namespace": pod.namespace,
                "name": pod.pod_name,
                "deployment_id": str(pod.deployment_id) if pod.deployment_id else None,
                "tenant_id": pod.tenant_id,
                "gpus": pod.gpus,
                "phase": pod.phase,
                "ready": pod.ready,
                "restarts": pod.restarts,
                "reason": pod.reason,
            }
            for pod in sorted(pods, key=lambda item: (item.namespace, item.pod_name))
        ],
        "present": node.present,
        "first_seen_at": node.first_seen_at,
        "last_observed_at": node.last_seen_at,
    }


def _live_pods_by_node(session: Session, node_names: list[str]) -> dict[str, list[PodAllocation]]:
    pods_by_node: dict[str, list[PodAllocation]] = defaultdict(list)
    if not node_names:
        return pods_by_node
    for pod in session.scalars(
        select(PodAllocation).where(PodAllocation.node_name.in_(node_names), PodAllocation.terminated_at.is_(None))
    ):
        pods_by_node[pod.node_name or ""].append(pod)
    return pods_by_node


def _deployments_by_id(session: Session, ids: set[uuid.UUID]) -> dict[uuid.UUID, Deployment]:
    if not ids:
        return {}
    return {row.id: row for row in session.scalars(select(Deployment).where(Deployment.id.in_(ids)))}


def list_nodes(
    session: Session,
    *,
    gpu_type: str | None = None,
    status: str | None = None,
    schedulable: bool | None = None,
    include_absent: bool = False,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """GPU nodes ordered by name, filtered, one keyset page at a time."""
    query = select(GpuNode).order_by(GpuNode.name)
    if not include_absent:
        query = query.where(GpuNode.present.is_(True))
    if gpu_type:
        query = query.where(GpuNode.gpu_product == gpu_type)
    if status:
        query = query.where(GpuNode.ready_status == status)
    if schedulable is not None:
        query = query.where(GpuNode.unschedulable.is_(not schedulable))
    if cursor:
        (after_name,) = decode_cursor(cursor, 1)
        query = query.where(GpuNode.name > str(after_name))
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    nodes = list(session.scalars(query.limit(limit + 1)))
    next_cursor = encode_cursor([nodes[limit - 1].name]) if len(nodes) > limit else None
    nodes = nodes[:limit]
    return _node_views(session, nodes), next_cursor


def _node_views(session: Session, nodes: list[GpuNode]) -> list[dict[str, Any]]:
    pods_by_node = _live_pods_by_node(session, [node.name for node in nodes])
    deployment_ids = {pod.deployment_id for pods in pods_by_node.values() for pod in pods if pod.deployment_id}
    deployments = _deployments_by_id(session, deployment_ids)
    views = []
    for node in nodes:
        view = node_view(node, pods_by_node.get(node.name, []), deployments)
        drain_job = _is_drain_job_active(session, node.name)
        view["active_drain_job_id"] = str(drain_job) if drain_job else None
        views.append(view)
    return views


def node_detail(session: Session, node_name: str) -> dict[str, Any] | None:
    """One node's view (present or not), or None."""
    node = session.get(GpuNode, node_name)
    return _node_views(session, [node])[0] if node is not None else None


# --------------------------------------------------------------------------- scaling events


def scaling_event_view(event: ScalingEvent) -> dict[str, Any]:
    return {
        "id": str(event.id),
        "deployment_id": str(event.deployment_id) if event.deployment_id else None,
        "tenant_id": event.tenant_id,
        "model_id": event.model_id,
        "trigger": str(event.trigger),
        "status": str(event.status),
        "reason": event.reason,
        "replicas_before": event.replicas_before,
        "replicas_after": event.replicas_after,
        "inputs": dict(event.inputs or {}),
        "actor": event.actor,
        "job_id": str(event.job_id) if event.job_id else None,
        "created_at": event.created_at,
    }


def list_scaling_events(
    session: Session,
    *,
    deployment_id: uuid.UUID | None = None,
    model_id: str | None = None,
    tenant_id: str | None = None,
    trigger: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Scaling events, newest first, filtered; keyset pagination on (created_at, id)."""
    query = select(ScalingEvent).order_by(ScalingEvent.created_at.desc(), ScalingEvent.id.desc())
    if deployment_id is not None:
        query = query.where(ScalingEvent.deployment_id == deployment_id)
    if model_id:
        query = query.where(ScalingEvent.model_id == model_id)
    if tenant_id:
        query = query.where(ScalingEvent.tenant_id == tenant_id)
    if trigger:
        query = query.where(ScalingEvent.trigger == trigger)
    if status:
        query = query.where(ScalingEvent.status == status)
    if since is not None:
        query = query.where(ScalingEvent.created_at >= since)
    if until is not None:
        query = query.where(ScalingEvent.created_at < until)
    if cursor:
        created_text, event_id_text = decode_cursor(cursor, 2)
        try:
            created_at = datetime.fromisoformat(str(created_text))
            event_id = uuid.UUID(str(event_id_text))
        except ValueError:
            raise InvalidRequestError("invalid_cursor", "cursor is not one this API returned",
                                      {"field": "cursor"}) from None
        query = query.where(
            or_(
                ScalingEvent.created_at < created_at,
                and_(ScalingEvent.created_at == created_at, ScalingEvent.id < event_id),
            )
        )
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    events = list(session.scalars(query.limit(limit + 1)))
    next_cursor = None
    if len(events) > limit:
        last = events[limit - 1]
        next_cursor = encode_cursor([last.created_at.isoformat(), str(last.id)])
    return [scaling_event_view(event) for event in events[:limit]], next_cursor


# --------------------------------------------------------------------------- health


def _age_seconds(moment: datetime | None, now: datetime) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(max((now - moment).total_seconds(), 0.0), 1)


def node_health(session: Session) -> dict[str, Any]:
    """Nodes by readiness and cordon state; GPUs total, allocated and stranded on unhealthy nodes."""
    nodes = list(session.scalars(select(GpuNode).where(GpuNode.present.is_(True))))
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
            "allocated": sum(node.gpu_allocated for node in nodes),
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
    stuck_query = select(Deployment).where(
        Deployment.deleted_at.is_(None),
        or_(
            Deployment.status.in_((DeploymentStatus.FAILED, DeploymentStatus.DEGRADED)),
            and_(
                Deployment.status.in_(TRANSITIONAL_STATUSES),
                or_(Deployment.status_reason.is_not(None), Deployment.updated_at < now - STUCK_AFTER),
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
        }
        for row in session.scalars(stuck_query.order_by(Deployment.updated_at).limit(100))
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
    """The whole report. ``workers`` and ``queues`` come from :func:`worker_liveness` and :func:`queue_depths`."""
    now = now or datetime.now(UTC)
    report: dict[str, Any] = {"checked_at": now}
    report.update(node_health(session))
    report["deployments"] = deployment_health(session, now)
    report.update(sweep_health(session, now, sweep_intervals))
    report["workers"] = workers
    report["queues"] = queues
    report["verdict"], report["problems"] = verdict(report)
    return report


# --------------------------------------------------------------------------- liveness (Celery, Redis)


def worker_liveness(celery_app: Any, *, timeout: float = 1.0) -> dict[str, Any]:
    """Ping the workers through the broker; an empty or failed reply means none is alive.

    A broadcast ping is slow and racy as a lock, but as a liveness probe on an admin page it is what
    Flower does too; the short timeout bounds the page's latency.
    """
    try:
        replies = celery_app.control.inspect(timeout=timeout).ping() or {}
    except Exception as error:  # any broker failure means "cannot tell", reported, never a 500
        return {"alive": False, "count": 0, "names": [], "error": f"{type(error).__name__}: {error}"}
    names = sorted(replies)
    return {"alive": bool(names), "count": len(names), "names": names, "error": None if names else "no reply"}


def _priority_queue_keys(queue: str, key_prefix: str) -> list[str]:
    # Celery's Redis transport keeps one list per priority step: "q", then "q\x06\x16<priority>".
    return [key_prefix + queue] + [f"{key_prefix}{queue}\x06\x16{priority}" for priority in (3, 6, 9)]


def queue_depths(redis_client: Any, queues: list[str], *, key_prefix: str = "") -> dict[str, Any]:
    """Messages waiting per Celery queue (Redis LLEN), or ``available: False`` with the error."""
    try:
        depths = {
            queue: sum(int(redis_client.llen(key)) for key in _priority_queue_keys(queue, key_prefix))
            for queue in queues
        }
    except Exception as error:  # an unreachable broker is a finding of the report, not a crash
        return {"available": False, "depths": {}, "total": None, "error": f"{type(error).__name__}: {error}"}
    return {"available": True, "depths": depths, "total": sum(depths.values()), "error": None}


# --------------------------------------------------------------------------- GPU utilization

# An allocated GPU below this utilization is counted as idle: held by a pod, doing (almost) nothing.
IDLE_GPU_UTILIZATION_PERCENT = 5.0
GPU_UTIL_METRIC = "DCGM_FI_DEV_GPU_UTIL"
GPU_MEMORY_USED_METRIC = "DCGM_FI_DEV_FB_USED"  # MiB, as dcgm-exporter reports it


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def _dcgm_gpus(prometheus: Any) -> list[dict[str, Any]]:
    """Per-GPU samples from DCGM: node, GPU index, pod (if allocated), utilization and memory used."""
    gpus: dict[tuple[str, str], dict[str, Any]] = {}
    for metric, field_name in ((GPU_UTIL_METRIC, "utilization_percent"), (GPU_MEMORY_USED_METRIC, "memory_used_mb")):
        for sample in prometheus.query(metric):
            node = sample.labels.get("Hostname") or sample.labels.get("node") or sample.labels.get("instance", "")
            key = (node, sample.labels.get("gpu", "0"))
            entry = gpus.setdefault(
                key,
                {"node": node, "gpu": key[1], "namespace": None, "pod": None,
                 "utilization_percent": None, "memory_used_mb": None},
            )
            entry[field_name] = round(sample.value, 2)
            if sample.labels.get("pod"):
                entry["namespace"] = sample.labels.get("namespace") or None
                entry["pod"] = sample.labels["pod"]
    return sorted(gpus.values(), key=lambda gpu: (gpu["node"], _gpu_index(gpu["gpu"])))


def _gpu_index(text: str) -> int:
    return int(text) if text.isdigit() else 0


def _cpu_millicores(quantity: str) -> float:
    quantity = str(quantity)
    if quantity.endswith("n"):
        return float(quantity[:-1]) / 1e6
    if quantity.endswith("u"):
        return float(quantity[:-1]) / 1e3
    if quantity.endswith("m"):
        return float(quantity[:-1])
    return float(quantity) * 1000


_MEMORY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def _memory_bytes(quantity: str) -> int:
    quantity = str(quantity)
    for suffix, factor in _MEMORY_SUFFIXES.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(float(quantity))


def resource_metrics(custom_objects_api: Any, *, timeout: float) -> dict[str, Any]:
    """CPU/memory usage per node and per pod from metrics.k8s.io (raises on any failure)."""
    nodes = custom_objects_api.list_cluster_custom_object(
        "metrics.k8s.io", "v1beta1", "nodes", _request_timeout=timeout
    )
    pods = custom_objects_api.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "pods", _request_timeout=timeout)
    node_usage = {
        item["metadata"]["name"]: {
            "cpu_millicores": round(_cpu_millicores(item["usage"].get("cpu", "0"))),
            "memory_bytes": _memory_bytes(item["usage"].get("memory", "0")),
        }
        for item in nodes.get("items") or []
    }
    pod_usage = {}
    for item in pods.get("items") or []:
        containers = item.get("containers") or []
        pod_usage[(item["metadata"].get("namespace", ""), item["metadata"]["name"])] = {
            "cpu_millicores": round(sum(_cpu_millicores(c["usage"].get("cpu", "0")) for c in containers)),
            "memory_bytes": sum(_memory_bytes(c["usage"].get("memory", "0")) for c in containers),
        }
    return {"nodes": node_usage, "pods": pod_usage}


def gpu_utilization(
    session: Session,
    *,
    prometheus: Any | None,
    prometheus_error: str | None = None,
    metrics_reader: Any | None = None,
    gpu_type: str | None = None,
    node_name: str | None = None,
) -> dict[str, Any]:
    """Utilization per GPU / node / deployment / cluster, with allocated-vs-used and CPU/memory.

    The allocation view (from Postgres) is always returned; the DCGM part needs ``prometheus`` (a
    :class:`workers.prometheus_client.PrometheusClient`) and the CPU/memory part ``metrics_reader`` (a
    callable returning :func:`resource_metrics`). When either fails, the response says so
    (``metrics_available: false`` with the reason) instead of failing: an admin looking at a broken
    cluster needs this page most.
    """
    from workers.prometheus_client import PrometheusUnavailableError

    node_query = select(GpuNode).where(GpuNode.present.is_(True)).order_by(GpuNode.name)
    if gpu_type:
        node_query = node_query.where(GpuNode.gpu_product == gpu_type)
    if node_name:
        node_query = node_query.where(GpuNode.name == node_name)
    nodes = list(session.scalars(node_query))
    node_names = [node.name for node in nodes]
    pods_by_node = _live_pods_by_node(session, node_names)
    pods = [pod for node_pods in pods_by_node.values() for pod in node_pods]
    deployments = _deployments_by_id(session, {pod.deployment_id for pod in pods if pod.deployment_id})
    deployment_of_pod = {(pod.namespace, pod.pod_name): pod.deployment_id for pod in pods}

    gpu_samples: list[dict[str, Any]] = []
    reasons: list[str] = []
    gpu_metrics_available = False
    if prometheus is None:
        reasons.append(prometheus_error or "PROMETHEUS_URL is not configured")
    else:
        try:
            gpu_samples = [gpu for gpu in _dcgm_gpus(prometheus) if gpu["node"] in set(node_names)]
            gpu_metrics_available = True
        except PrometheusUnavailableError as error:
            reasons.append(f"GPU metrics unavailable: {error.reason}")
    usage: dict[str, Any] = {"nodes": {}, "pods": {}}
    resource_metrics_available = False
    if metrics_reader is not None:
        try:
            usage = metrics_reader()
            resource_metrics_available = True
        except Exception as error:  # metrics.k8s.io down (503), unreachable, or refused
            reasons.append(f"metrics.k8s.io unavailable: {type(error).__name__}: {_short(error)}")
    else:
        reasons.append("metrics.k8s.io not queried: no cluster client")

    node_views = []
    for node in nodes:
        samples = [gpu for gpu in gpu_samples if gpu["node"] == node.name]
        for gpu in samples:
            gpu["memory_total_mb"] = node.gpu_memory_mb
            deployment_id = deployment_of_pod.get((gpu["namespace"], gpu["pod"])) if gpu["pod"] else None
            gpu["deployment_id"] = str(deployment_id) if deployment_id else None
            gpu["idle"] = bool(
                gpu["pod"] and (gpu["utilization_percent"] or 0.0) < IDLE_GPU_UTILIZATION_PERCENT
            )
        allocated_samples = [gpu for gpu in samples if gpu["pod"]]
        node_views.append(
            {
                "name": node.name,
                "gpu_product": node.gpu_product,
                "gpus": {"capacity": node.gpu_capacity, "allocatable": node.gpu_allocatable,
                         "allocated": node.gpu_allocated, "free": node.gpu_free},
                "utilization_percent": _mean([g["utilization_percent"] for g in samples
                                              if g["utilization_percent"] is not None]),
                "memory_used_mb": sum(g["memory_used_mb"] or 0 for g in samples) if samples else None,
                "memory_total_mb": (node.gpu_memory_mb or 0) * node.gpu_capacity if node.gpu_memory_mb else None,
                "allocated_idle_gpus": (
                    sum(1 for g in allocated_samples if g["idle"]) if gpu_metrics_available else None
                ),
                "cpu_used_millicores": usage["nodes"].get(node.name, {}).get("cpu_millicores"),
                "cpu_allocatable_millicores": node.cpu_allocatable_millicores,
                "memory_used_bytes": usage["nodes"].get(node.name, {}).get("memory_bytes"),
                "memory_allocatable_bytes": node.memory_allocatable_bytes,
                "last_observed_at": node.last_seen_at,
            }
        )

    deployment_views = []
    for deployment_id, deployment in sorted(deployments.items(), key=lambda item: item[1].name):
        own_pods = [pod for pod in pods if pod.deployment_id == deployment_id]
        own_gpus = [gpu for gpu in gpu_samples if gpu.get("deployment_id") == str(deployment_id)]
        pod_usage = [usage["pods"].get((pod.namespace, pod.pod_name)) for pod in own_pods]
        deployment_views.append(
            {
                "deployment_id": str(deployment_id),
                "name": deployment.name,
                "tenant_id": deployment.tenant_id,
                "model_id": deployment.model_id,
                "pods": len(own_pods),
                "gpus_allocated": sum(pod.gpus for pod in own_pods),
                "utilization_percent": _mean([g["utilization_percent"] for g in own_gpus
                                              if g["utilization_percent"] is not None]),
                "memory_used_mb": sum(g["memory_used_mb"] or 0 for g in own_gpus) if own_gpus else None,
                "allocated_idle_gpus": sum(1 for g in own_gpus if g["idle"]) if gpu_metrics_available else None,
                "cpu_used_millicores": sum(u["cpu_millicores"] for u in pod_usage if u) if resource_metrics_available
                else None,
                "memory_used_bytes": sum(u["memory_bytes"] for u in pod_usage if u) if resource_metrics_available
                else None,
            }
        )

    allocated_total = sum(node.gpu_allocated for node in nodes)
    allocated_busy = sum(1 for gpu in gpu_samples if gpu["pod"] and not gpu["idle"])
    cluster = {
        "gpus": {
            "capacity": sum(node.gpu_capacity for node in nodes),
            "allocatable": sum(node.gpu_allocatable for node in nodes),
            "allocated": allocated_total,
            "free": sum(node.gpu_free for node in nodes),
        },
        "utilization_percent": _mean([g["utilization_percent"] for g in gpu_samples
                                      if g["utilization_percent"] is not None]),
        "allocated_utilization_percent": _mean([g["utilization_percent"] or 0.0 for g in gpu_samples if g["pod"]]),
        "allocated_busy_gpus": allocated_busy if gpu_metrics_available else None,
        "allocated_idle_gpus": sum(1 for g in gpu_samples if g["idle"]) if gpu_metrics_available else None,
        "memory_used_mb": sum(g["memory_used_mb"] or 0 for g in gpu_samples) if gpu_metrics_available else None,
    }
    return {
        "metrics_available": gpu_metrics_available and resource_metrics_available,
        "gpu_metrics_available": gpu_metrics_available,
        "resource_metrics_available": resource_metrics_available,
        "reason": "; ".join(reasons) or None,
        "idle_threshold_percent": IDLE_GPU_UTILIZATION_PERCENT,
        "cluster": cluster,
        "nodes": node_views,
        "deployments": deployment_views,
        "gpus": gpu_samples,
    }


def _short(error: BaseException) -> str:
    text = str(getattr(error, "reason", None) or error)
    return text.splitlines()[0][:300] if text else ""


# --------------------------------------------------------------------------- manual scaling by model


def deployment_for_model(session: Session, model_id: str, deployment_id: uuid.UUID | None) -> Deployment:
    """The live deployment serving ``model_id`` (any tenant); 404 if none, 409 listing them if ambiguous."""
    from workers.domain import ConflictError, NotFoundError

    query = select(Deployment).where(
        Deployment.model_id == model_id,
        Deployment.deleted_at.is_(None),
        Deployment.status.not_in((DeploymentStatus.DELETED, DeploymentStatus.DELETING)),
    )
    candidates = list(session.scalars(query.order_by(Deployment.tenant_id, Deployment.name)))
    if deployment_id is not None:
        for deployment in candidates:
            if deployment.id == deployment_id:
                return deployment
        raise NotFoundError(
            "deployment_not_found",
            f"deployment {deployment_id} does not serve model {model_id!r}",
            {"model_id": model_id, "deployment_id": str(deployment_id)},
        )
    if not candidates:
        raise NotFoundError("model_not_found", f"no live deployment serves model {model_id!r}", {"model_id": model_id})
    if len(candidates) > 1:
        raise ConflictError(
            "ambiguous_model",
            f"{len(candidates)} deployments serve model {model_id!r}; name one with deployment_id",
            {
                "model_id": model_id,
                "deployments": [
                    {"deployment_id": str(row.id), "tenant_id": row.tenant_id, "name": row.name,
                     "replicas_desired": row.replicas_desired, "status": str(row.status)}
                    for row in candidates
                ],
            },
        )
    return candidates[0]


def record_blocked_scale(
    session: Session, deployment_id: uuid.UUID, *, replicas: int, reason: str, actor: str, error: Any
) -> ScalingEvent:
    """A ``blocked`` manual scaling event for a scale-up that admission refused (the 409's audit record)."""
    from models import ScalingEventStatus, ScalingTrigger

    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        raise ValueError(f"deployment {deployment_id} vanished")
    event = ScalingEvent(
        deployment_id=deployment.id,
        tenant_id=deployment.tenant_id,
        model_id=deployment.model_id,
        trigger=ScalingTrigger.MANUAL,
        reason=reason,
        replicas_before=deployment.replicas_desired,
        replicas_after=replicas,
        status=ScalingEventStatus.BLOCKED,
        inputs={"source": "admin_api", "refused": {"code": error.code, "message": error.message,
                                                   "details": error.details}},
        actor=actor,
    )
    session.add(event)
    session.flush()
    return event
