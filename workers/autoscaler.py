"""The autoscaler sweep: HPA-style replica decisions from GPU utilization, vLLM queue depth and KV-cache use.

For every deployment with autoscaling on, the sweep reads the per-pod metrics (one paginated pod list,
two Prometheus queries, whatever the number of deployments), asks :mod:`workers.hpa` for the desired
replicas (the largest of the per-metric recommendations, bounded, stabilized, capped per step) and
acts through the same path as a manual scale: ``workers.requests.request_scale`` with trigger ``auto``,
whose admission check decides whether a scale-up fits. One that does not fit leaves no job and no pod,
only a ``blocked`` scaling event with the admission details and the metric inputs.

GPU utilization alone is a weak signal for LLM serving (continuous batching keeps it near 90 % under
any real load), hence the queue depth (``vllm:num_requests_waiting`` per replica) and KV-cache usage
targets. The recommendation history the stabilization windows need lives in one Redis hash, read and
written once per sweep; the sweep lock makes this run its only writer.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from models import (
    Deployment,
    DeploymentStatus,
    Job,
    ScalingEvent,
    ScalingEventStatus,
    ScalingTrigger,
    SweepName,
)
from models.job import TERMINAL_JOB_STATES
from settings import get_settings
from workers import dispatch, hpa, k8s
from workers.cluster_errors import ClusterError
from workers.diagnosis import pod_view
from workers.domain import AdmissionError, DomainError
from workers.health_monitor import OUR_SELECTOR
from workers.kube_calls import list_pages
from workers.manifests import DEPLOYMENT_ID_LABEL
from workers.observe import latest_change_started
from workers.prometheus_client import PrometheusUnavailableError, client_from_settings
from workers.sweep_lock import DEFAULT_KEY_PREFIX, default_redis, lock_key_prefix, run_locked
from workers.sweep_metrics import SweepReport, observed_sweep, summary_in_new_session

AUTOSCALER_ACTOR = "autoscaler"
LOCK_TTL_SECONDS = 300.0
DEFAULT_GPU_TARGET = 80.0  # percent, when autoscaling is on but no target was given (the HPA's CPU default)
# A blocked scale-up is recorded again only after this long, so a full cluster does not add an event per sweep.
BLOCKED_EVENT_REPEAT_SECONDS = 300.0
# Not STOPPED: a deployment scaled to zero was stopped on purpose, and with no replicas there is no load to
# scale on; it starts again only when asked to (a scale request).
SCALABLE = (DeploymentStatus.RUNNING, DeploymentStatus.DEGRADED)

GPU_UTILIZATION = "gpu_utilization"
QUEUE_DEPTH = "queue_depth"
KV_CACHE_USAGE = "kv_cache_usage"
# Target names accepted in ``autoscaling_targets`` (the API's free-form keys), by metric.
TARGET_ALIASES = {
    "gpu_utilization": GPU_UTILIZATION,
    "queue_depth": QUEUE_DEPTH,
    "num_requests_waiting": QUEUE_DEPTH,
    "vllm:num_requests_waiting": QUEUE_DEPTH,
    "kv_cache_usage": KV_CACHE_USAGE,
    "gpu_cache_usage_perc": KV_CACHE_USAGE,
    "vllm:gpu_cache_usage_perc": KV_CACHE_USAGE,
}


@dataclass(frozen=True)
class AutoscalerConfig:
    namespace: str = "model-serving"
    tolerance: float = hpa.DEFAULT_TOLERANCE
    scale_up_stabilization_seconds: float = 0.0
    scale_down_stabilization_seconds: float = 300.0

    @classmethod
    def from_settings(cls) -> AutoscalerConfig:
        return cls(namespace=get_settings().k8s_namespace)


@dataclass(frozen=True)
class AutoscaledDeployment:
    id: uuid.UUID
    tenant_id: str
    model_id: str
    replicas_desired: int
    min_replicas: int
    max_replicas: int
    target_gpu_utilization: int | None
    targets: dict[str, Any]
    busy: bool
    changed_at: datetime | None = None  # when its latest job (create, scale, restart) began


def _with_last_change(history: list[tuple[float, int]], deployment: AutoscaledDeployment) -> list[tuple[float, int]]:
    """``history`` plus the replica count the deployment was last set to, as a recommendation made when that
    change began. A deployment just created (or scaled) has no recommendations yet, so nothing else would hold
    it for the scale-down window: with its model still loading and no traffic, the first sweep would shrink it.
    Not saved with the history (it is added again on every sweep until it leaves the window)."""
    if deployment.changed_at is None:
        return history
    return [(deployment.changed_at.timestamp(), deployment.replicas_desired), *history]


def load_autoscaled(session: Session) -> list[AutoscaledDeployment]:
    rows = session.execute(
        select(
            Deployment.id, Deployment.tenant_id, Deployment.model_id, Deployment.replicas_desired,
            Deployment.min_replicas, Deployment.max_replicas, Deployment.target_gpu_utilization,
            Deployment.autoscaling_targets, Deployment.active_job_id, Job.state,
            latest_change_started().label("changed_at"),
        )
        .outerjoin(Job, Job.id == Deployment.active_job_id)
        .where(
            Deployment.autoscaling_enabled.is_(True),
            Deployment.deleted_at.is_(None),
            Deployment.status.in_(SCALABLE),
        )
    ).all()
    return [
        AutoscaledDeployment(
            id=row.id, tenant_id=row.tenant_id, model_id=row.model_id, replicas_desired=row.replicas_desired,
            min_replicas=row.min_replicas, max_replicas=row.max_replicas,
            target_gpu_utilization=row.target_gpu_utilization, targets=dict(row.autoscaling_targets or {}),
            busy=row.active_job_id is not None and row.state not in TERMINAL_JOB_STATES,
            changed_at=row.changed_at,
        )
        for row in rows
    ]


def _held_by(limited_by: list[str], desired: int, deployment: AutoscaledDeployment) -> str:
    """What held the result, for the event's reason: a bound only when the result sits on it (the window or the
    step cap can move a result clamped to min_replicas off it again), and the windows and step cap as such."""
    held = []
    if "min_replicas" in limited_by and desired == deployment.min_replicas:
        held.append("held to min_replicas")
    if "max_replicas" in limited_by and desired == deployment.max_replicas:
        held.append("held to max_replicas")
    if "scale_down_stabilization" in limited_by:
        held.append("held up by the scale-down window")
    if "scale_up_stabilization" in limited_by:
        held.append("held down by the scale-up window")
    if "step_cap" in limited_by:
        held.append("capped per step")
    return f" ({'; '.join(held)})" if held else ""


def metric_targets(deployment: AutoscaledDeployment) -> tuple[dict[str, float], list[str]]:
    """The deployment's targets by metric, and the target names that were not understood."""
    targets: dict[str, float] = {}
    ignored: list[str] = []
    for name, value in deployment.targets.items():
        metric = TARGET_ALIASES.get(name)
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if metric is None or not math.isfinite(number) or number <= 0:
            ignored.append(name)
            continue
        if metric == KV_CACHE_USAGE and number > 1:
            number /= 100.0  # given as a percentage
        targets[metric] = number
    if deployment.target_gpu_utilization:
        targets[GPU_UTILIZATION] = float(deployment.target_gpu_utilization)
    if not targets:
        targets[GPU_UTILIZATION] = DEFAULT_GPU_TARGET
    return targets, ignored


@dataclass
class PodMetrics:
    """Per ready pod ``(namespace, name)``: GPU utilization (mean over its GPUs), queue, KV cache."""

    values: dict[str, dict[tuple[str, str], float]] = field(default_factory=lambda: defaultdict(dict))


def read_pod_metrics(prometheus: Any, namespace: str) -> PodMetrics:
    """Two instant queries for all deployments at once."""
    metrics = PodMetrics()
    gpu = prometheus.query(f'avg by (namespace, pod) (DCGM_FI_DEV_GPU_UTIL{{namespace="{namespace}",pod!=""}})')
    for sample in gpu:
        if not math.isnan(sample.value):
            metrics.values[GPU_UTILIZATION][(sample.labels.get("namespace", ""), sample.labels.get("pod", ""))] = (
                sample.value
            )
    vllm = prometheus.query(
        f'{{__name__=~"vllm:num_requests_waiting|vllm:gpu_cache_usage_perc",namespace="{namespace}"}}'
    )
    for sample in vllm:
        metric = QUEUE_DEPTH if sample.labels.get("__name__") == "vllm:num_requests_waiting" else KV_CACHE_USAGE
        if not math.isnan(sample.value):
            metrics.values[metric][(sample.labels.get("namespace", ""), sample.labels.get("pod", ""))] = sample.value
    return metrics


def read_ready_pods(clients: Any, namespace: str) -> dict[str, list[tuple[str, str]]]:
    """Ready, non-terminating pods of each of our deployments: one paginated list call."""
    ready: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for item in list_pages(clients, clients.core.list_namespaced_pod, namespace, label_selector=OUR_SELECTOR):
        pod = pod_view(item)
        deployment_id = pod.labels.get(DEPLOYMENT_ID_LABEL)
        if deployment_id and pod.ready and not pod.deleting:
            ready[deployment_id].append((pod.namespace, pod.name))
    return ready


def samples_for(
    deployment: AutoscaledDeployment, targets: dict[str, float], ready_pods: list[tuple[str, str]], metrics: PodMetrics
) -> list[hpa.MetricSample]:
    samples = []
    for metric, target in sorted(targets.items()):
        values = [metrics.values[metric][pod] for pod in ready_pods if pod in metrics.values[metric]]
        unready = max(deployment.replicas_desired - len(values), 0)
        samples.append(hpa.MetricSample(metric, target, values, unready_replicas=unready))
    return samples


# ------------------------------------------------------------------------------- recommendation history
def history_key(key_prefix: str) -> str:
    return f"{key_prefix}autoscaler:recommendations"


def load_history(redis_client: Any, key_prefix: str) -> dict[str, list[tuple[float, int]]]:
    raw = redis_client.hgetall(history_key(key_prefix))
    history: dict[str, list[tuple[float, int]]] = {}
    for field_name, value in raw.items():
        name = field_name.decode() if isinstance(field_name, bytes) else str(field_name)
        try:
            history[name] = [(float(t), int(r)) for t, r in json.loads(value)]
        except (ValueError, TypeError):
            continue  # a corrupt entry only loses its window, it cannot break the sweep
    return history


def save_history(
    redis_client: Any, key_prefix: str, history: dict[str, list[tuple[float, int]]], stale: list[str]
) -> None:
    key = history_key(key_prefix)
    pipeline = redis_client.pipeline(transaction=True)
    if history:
        pipeline.hset(key, mapping={name: json.dumps(entries) for name, entries in history.items()})
    if stale:
        pipeline.hdel(key, *stale)
    pipeline.execute()


def last_blocked(session: Session, deployment_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[int, float]]:
    """The latest autoscaler event per deployment, if it was a block: (replicas asked, sweep time)."""
    if not deployment_ids:
        return {}
    rows = session.execute(
        select(ScalingEvent.deployment_id, ScalingEvent.status, ScalingEvent.replicas_after, ScalingEvent.inputs)
        .ext(distinct_on(ScalingEvent.deployment_id))
        .where(ScalingEvent.trigger == ScalingTrigger.AUTO, ScalingEvent.deployment_id.in_(deployment_ids))
        .order_by(ScalingEvent.deployment_id, ScalingEvent.created_at.desc())
    ).all()
    return {
        row.deployment_id: (row.replicas_after, float((row.inputs or {}).get("at") or 0.0))
        for row in rows
        if row.status == ScalingEventStatus.BLOCKED
    }


# ------------------------------------------------------------------------------------------ the sweep
def run_autoscaler(
    session: Session,
    *,
    now: float | None = None,
    clients: Any | None = None,
    prometheus: Any | None = None,
    config: AutoscalerConfig | None = None,
    enqueue: Callable[[Job], None] | None = None,
    redis_client: Any | None = None,
    key_prefix: str = DEFAULT_KEY_PREFIX,
) -> SweepReport:
    """One autoscaler sweep (see the module doc). ``now`` is epoch seconds (the cluster's clock in tests)."""
    config = config or AutoscalerConfig.from_settings()
    redis_client = redis_client if redis_client is not None else default_redis()
    with observed_sweep(session, SweepName.AUTOSCALER.value) as report:
        run_locked(
            report, SweepName.AUTOSCALER.value, LOCK_TTL_SECONDS,
            lambda: _sweep(
                session, report, now if now is not None else time.time(), config,
                clients=clients, prometheus=prometheus,
                enqueue=enqueue if enqueue is not None else dispatch.enqueue,
                redis_client=redis_client, key_prefix=key_prefix,
            ),
            client=redis_client, key_prefix=key_prefix,
        )
    return report


def _sweep(
    session: Session,
    report: SweepReport,
    now: float,
    config: AutoscalerConfig,
    *,
    clients: Any | None,
    prometheus: Any | None,
    enqueue: Callable[[Job], None],
    redis_client: Any,
    key_prefix: str,
) -> None:
    deployments = load_autoscaled(session)
    report.saw("deployments", len(deployments))
    if not deployments:
        return
    try:
        ready = read_ready_pods(clients or k8s.get_clients(), config.namespace)
    except ClusterError as error:
        report.error(error.code, error.message)
        report.skip(f"kubernetes_unavailable: {error.message}")
        return
    try:
        metrics = read_pod_metrics(prometheus or client_from_settings(get_settings().prometheus_url), config.namespace)
    except PrometheusUnavailableError as error:
        # Deciding on missing data could only shrink or grow blindly: hold every deployment as it is.
        report.error("prometheus_unavailable", error.reason)
        report.skip(f"prometheus_unavailable: {error.reason}")
        return
    history = load_history(redis_client, key_prefix)
    blocked_before = last_blocked(session, [d.id for d in deployments])
    new_history: dict[str, list[tuple[float, int]]] = {}
    events: list[dict[str, Any]] = []
    jobs: list[Job] = []
    decisions: list[dict[str, Any]] = []
    for deployment in deployments:
        key = str(deployment.id)
        targets, ignored = metric_targets(deployment)
        policy = hpa.HpaPolicy(
            min_replicas=deployment.min_replicas,
            max_replicas=max(deployment.max_replicas, deployment.min_replicas),
            tolerance=config.tolerance,
            scale_up_stabilization_seconds=config.scale_up_stabilization_seconds,
            scale_down_stabilization_seconds=config.scale_down_stabilization_seconds,
        )
        samples = samples_for(deployment, targets, ready.get(key, []), metrics)
        past = history.get(key, [])
        held = _with_last_change(past, deployment)
        recommendation = hpa.recommend(samples, deployment.replicas_desired, policy, held, now)
        new_history[key] = hpa.prune_history([*past, (now, recommendation.raw_replicas)], now, policy)
        report.saw("recommendations")
        if not recommendation.changes:
            continue
        if deployment.busy:
            report.saw("busy_deployments")
            continue
        inputs = {**recommendation.inputs(), "at": now, "ignored_targets": ignored}
        direction = "up" if recommendation.desired_replicas > deployment.replicas_desired else "down"
        desired = recommendation.desired_replicas
        observed = ", ".join(
            f"{m.name} {m.average:.3g} vs target {m.target:g}" for m in recommendation.metrics if m.average is not None
        )
        reason = f"autoscale {direction} {deployment.replicas_desired} -> {desired}: {observed}" + _held_by(
            recommendation.limited_by, desired, deployment
        )
        outcome = _scale(session, deployment, desired, reason, inputs)
        if isinstance(outcome, Job):
            jobs.append(outcome)
            report.acted(f"scale_{direction}")
            decisions.append({"deployment_id": key, "replicas": desired, "job_id": str(outcome.id)})
        elif isinstance(outcome, AdmissionError):
            previous = blocked_before.get(deployment.id)
            if previous and previous[0] == desired and now - previous[1] < BLOCKED_EVENT_REPEAT_SECONDS:
                report.saw("blocked_repeats")
                continue
            events.append(_blocked_event(deployment, desired, reason, inputs, outcome))
            report.acted("scale_blocked")
            decisions.append({"deployment_id": key, "replicas": desired, "blocked": outcome.code})
        else:
            report.error(outcome.code, f"scale of {key} refused: {outcome.message}")
    if events:
        session.execute(insert(ScalingEvent), events)
    session.commit()
    save_history(redis_client, key_prefix, new_history, [name for name in history if name not in new_history])
    for job in jobs:
        enqueue(job)
    report.details["decisions"] = decisions


def _scale(
    session: Session, deployment: AutoscaledDeployment, replicas: int, reason: str, inputs: dict[str, Any]
) -> Job | DomainError:
    """The manual scale's own path (admission included), inside a savepoint so a refusal leaves no trace."""
    from workers.requests import request_scale

    savepoint = session.begin_nested()
    try:
        submitted = request_scale(
            session, tenant_id=None, deployment_id=deployment.id, replicas=replicas, reason=reason,
            requested_by=AUTOSCALER_ACTOR, trigger=ScalingTrigger.AUTO.value, inputs=inputs,
        )
    except DomainError as error:
        savepoint.rollback()
        return error
    savepoint.commit()
    return submitted.job


def _blocked_event(
    deployment: AutoscaledDeployment, replicas: int, reason: str, inputs: dict[str, Any], error: AdmissionError
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "deployment_id": deployment.id,
        "tenant_id": deployment.tenant_id,
        "model_id": deployment.model_id,
        "trigger": ScalingTrigger.AUTO,
        "reason": f"{reason} — blocked: {error.message}",
        "replicas_before": deployment.replicas_desired,
        "replicas_after": replicas,
        "status": ScalingEventStatus.BLOCKED,
        "inputs": {**inputs, "admission": error.to_dict()},
        "actor": AUTOSCALER_ACTOR,
        "job_id": None,
    }


def autoscaler_sweep() -> dict[str, Any]:
    """The ``sweeps.autoscaler`` task's body: one run in a fresh session; returns the run's summary."""
    return summary_in_new_session(run_autoscaler, key_prefix=lock_key_prefix())
