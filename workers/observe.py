"""The status poller: read a deployment's Kubernetes objects and pods, write what they say to Postgres.

One observation is a handful of calls (the Deployment, its pods by label selector) and returns whether
the deployment is still converging, so the status poller (``workers.status_polls``) can look again later
instead of holding a worker slot while a model loads for minutes.

Status rules:
- CREATING/RESTARTING/SCALING/DEGRADED -> RUNNING once the rollout is complete: observedGeneration current,
  every replica updated and ready, no extra pods; STOPPED instead when that is zero replicas (scaled to 0).
- FAILED with a reason when the cluster says the rollout cannot succeed: the image does not exist
  (ErrImagePull "not found"/"denied"), a container crash-loops past CRASH_LOOP_RESTART_LIMIT restarts
  while nothing is ready, or the Deployment reports ProgressDeadlineExceeded.
- Pods the scheduler cannot place leave the status as it is, with reason ``waiting_for_gpus`` and the
  scheduler's own message: GPUs may free up, and the progress deadline bounds the wait.
- RUNNING -> DEGRADED when replicas are lost.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Integer,
    String,
    Text,
    Uuid,
    all_,
    bindparam,
    column,
    exists,
    func,
    null,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert

from models import (
    FINISHED_POD_PHASES,
    Deployment,
    DeploymentStatus,
    GpuReservation,
    Job,
    JobType,
    PodAllocation,
    TargetKind,
)
from models.db import autocommit_session, session_scope
from models.driver_sql import DriverStatement
from workers import admission, diagnosis
from workers.diagnosis import is_pod_ready, pod_gpus
from workers.k8s import get_clients
from workers.kube_calls import get, list_objects, object_path
from workers.manifests import label_selector

logger = logging.getLogger(__name__)

# Reasons a converging deployment shows while it is making progress: the normal course of a rollout, not a fault.
POD_STARTING = "pod_starting"
MODEL_LOADING = "model_loading"
PROGRESS_REASONS = (POD_STARTING, MODEL_LOADING)

CRASH_LOOP_RESTART_LIMIT = 3
SETTLING_STATUSES = (
    DeploymentStatus.PENDING,
    DeploymentStatus.CREATING,
    DeploymentStatus.RESTARTING,
    DeploymentStatus.SCALING,
)
_PERMANENT_PULL_ERROR = re.compile(r"not found|manifest unknown|denied|unauthorized|does not exist", re.IGNORECASE)


@dataclass
class PodView:
    uid: str
    name: str
    namespace: str
    node: str | None
    phase: str
    ready: bool
    restarts: int
    gpus: int
    reason: str | None
    message: str | None
    started_at: datetime | None
    unschedulable_message: str | None = None
    last_termination: str | None = None  # why the serving container last ended ("OOMKilled", "Error")
    terminating: bool = False


@dataclass
class Verdict:
    status: DeploymentStatus
    reason: str | None
    message: str | None
    ready: int
    rollout_complete: bool
    pods: list[PodView] = field(default_factory=list)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def pod_view(pod: dict[str, Any]) -> PodView:
    """Flatten the parts of a pod the service cares about."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    restarts = sum(int(item.get("restartCount") or 0) for item in statuses)
    ready = is_pod_ready(pod)
    reason = status.get("reason")
    message = status.get("message")
    last_termination = None
    for item in statuses:
        state = item.get("state") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or (item.get("lastState") or {}).get("terminated") or {}
        last_termination = last_termination or terminated.get("reason")
        if waiting.get("reason") and waiting.get("reason") != "ContainerCreating":
            reason, message = waiting.get("reason"), waiting.get("message")
            if reason == "CrashLoopBackOff" and terminated.get("reason"):
                message = f"{terminated.get('reason')}: {terminated.get('message') or waiting.get('message') or ''}"
            break
        if waiting.get("reason") == "ContainerCreating" and reason is None:
            reason = "ContainerCreating"
    unschedulable = None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            unschedulable = condition.get("message") or condition.get("reason") or "Unschedulable"
            reason = reason or condition.get("reason") or "Unschedulable"
            message = message or unschedulable
    return PodView(
        uid=metadata.get("uid") or f"{metadata.get('namespace')}/{metadata.get('name')}",
        name=metadata.get("name", ""),
        namespace=metadata.get("namespace", ""),
        node=(pod.get("spec") or {}).get("nodeName"),
        phase=status.get("phase") or "Pending",
        ready=ready,
        restarts=restarts,
        gpus=pod_gpus(pod),
        reason=reason,
        message=message,
        started_at=_parse_time(status.get("startTime")),
        unschedulable_message=unschedulable,
        terminating=bool(metadata.get("deletionTimestamp")),
        last_termination=last_termination,
    )


def judge(
    current: DeploymentStatus, desired: int, k8s_deployment: dict[str, Any] | None, pods: list[PodView]
) -> Verdict:
    """Decide the deployment's status from what the cluster reports (pure: unit-testable)."""
    if k8s_deployment is None:
        # Called only when no job is applying it, so the object was removed behind the service's back.
        return Verdict(
            DeploymentStatus.FAILED, "missing_in_cluster", "the Kubernetes Deployment does not exist", 0, False, pods
        )
    metadata = k8s_deployment.get("metadata") or {}
    spec = k8s_deployment.get("spec") or {}
    status = k8s_deployment.get("status") or {}
    spec_replicas = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    ready = int(status.get("readyReplicas") or 0)
    generation_current = int(status.get("observedGeneration") or 0) >= int(metadata.get("generation") or 0)
    live_pods = [pod for pod in pods if not pod.terminating]
    rollout_complete = (
        generation_current
        and spec_replicas == desired
        and int(status.get("updatedReplicas") or 0) == spec_replicas
        and int(status.get("replicas") or 0) == spec_replicas
        and ready == spec_replicas
        and len(live_pods) == spec_replicas
    )
    if rollout_complete:
        # Zero replicas converged is a deployment that serves nothing on purpose, not one that is up.
        settled = DeploymentStatus.STOPPED if desired == 0 else DeploymentStatus.RUNNING
        return Verdict(settled, None, None, ready, True, pods)

    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    progressing = conditions.get("Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        detail = _worst_pod_detail(live_pods) or progressing.get("message") or "rollout made no progress"
        return Verdict(DeploymentStatus.FAILED, "progress_deadline_exceeded", detail, ready, False, pods)
    for pod in live_pods:
        if pod.reason in ("ErrImagePull", "ImagePullBackOff") and _PERMANENT_PULL_ERROR.search(pod.message or ""):
            if ready == 0:
                return Verdict(DeploymentStatus.FAILED, "image_pull_failure", pod.message, ready, False, pods)
            return Verdict(DeploymentStatus.DEGRADED, "image_pull_failure", pod.message, ready, False, pods)
    crash_looping = [pod for pod in live_pods if pod.reason == "CrashLoopBackOff" or pod.restarts > 0]
    worst = max(crash_looping, key=lambda pod: pod.restarts, default=None)
    if worst is not None and worst.restarts >= CRASH_LOOP_RESTART_LIMIT:
        detail = f"pod {worst.name} restarted {worst.restarts} times: {worst.message or worst.reason}"
        # Out of memory is its own code (as the health monitor reports it): the fix is a bigger GPU or a smaller
        # max_model_len, not the model's arguments.
        code = "oom_killed" if worst.last_termination == "OOMKilled" else "crash_loop"
        if ready == 0:
            return Verdict(DeploymentStatus.FAILED, code, detail, ready, False, pods)
        return Verdict(DeploymentStatus.DEGRADED, code, detail, ready, False, pods)
    waiting = next((pod for pod in live_pods if pod.unschedulable_message), None)
    reason: str | None = None
    message: str | None = None
    if waiting is not None:
        reason, message = "waiting_for_gpus", waiting.unschedulable_message
    elif current in SETTLING_STATUSES or current == DeploymentStatus.FAILED:
        loading = next((pod for pod in live_pods if not pod.ready), None)
        if loading is not None:
            # Reasons are our own codes, as the health monitor's are; the pod's own words go in the message.
            reason = MODEL_LOADING if loading.phase == "Running" else POD_STARTING
            message = f"pod {loading.name}: {loading.message or loading.reason or loading.phase}"
    if current in SETTLING_STATUSES:
        next_status = DeploymentStatus.CREATING if current == DeploymentStatus.PENDING else current
        return Verdict(next_status, reason, message, ready, False, pods)
    if current == DeploymentStatus.FAILED:
        return Verdict(current, reason, message, ready, False, pods)
    # RUNNING or DEGRADED with fewer ready replicas than desired: replicas were lost.
    if ready < desired:
        return Verdict(
            DeploymentStatus.DEGRADED,
            reason or "replicas_unavailable",
            message or f"{ready} of {desired} replicas ready",
            ready,
            False,
            pods,
        )
    return Verdict(current, reason, message, ready, False, pods)


def _worst_pod_detail(pods: list[PodView]) -> str | None:
    for pod in pods:
        if pod.unschedulable_message:
            return f"waiting for GPUs: {pod.unschedulable_message}"
    for pod in pods:
        if not pod.ready and pod.reason:
            return f"pod {pod.name}: {pod.reason} {pod.message or ''}".strip()
    return None


MAX_POLL_DELAY_SECONDS = 15.0


def poll_delay(seconds_since_change: float, interval: float) -> float:
    """Seconds until the next poll: the configured interval at first, then a tenth of the time the change has
    been in progress (capped), so a model loading for minutes is polled a few times a minute while a fresh
    change is seen within seconds, and hundreds of loading deployments do not flood the workers."""
    return max(float(interval), min(seconds_since_change / 10.0, MAX_POLL_DELAY_SECONDS))


def latest_change_started() -> Any:
    """Correlated scalar subquery: when the deployment's most recent job was created."""
    return (
        select(func.max(Job.created_at))
        .where(Job.target_kind == TargetKind.DEPLOYMENT, Job.target_id == func.cast(Deployment.id, String))
        .correlate(Deployment)
        .scalar_subquery()
    )


def _delay_since(started: datetime | None, now: datetime) -> float:
    from settings import get_settings

    elapsed = (now - started).total_seconds() if started is not None else 0.0
    return poll_delay(elapsed, get_settings().status_poll_interval_seconds)


@dataclass(frozen=True)
class _Observed:
    """What the write needs from the first read, copied out so no connection is held during cluster calls."""

    tenant_id: str
    name: str
    namespace: str
    selector: str
    status: DeploymentStatus
    desired: int
    busy: bool
    poll_delay: float


def _observation_read() -> Any:
    return select(
        Deployment.tenant_id,
        Deployment.k8s_name,
        Deployment.k8s_namespace,
        Deployment.status,
        Deployment.replicas_desired,
        Deployment.active_job_id,
        latest_change_started(),
        func.now(),
    ).where(Deployment.id == bindparam("deployment_id", type_=Uuid))


_OBSERVATION_READ = DriverStatement(_observation_read)


def _read_for_observation(deployment_uuid: uuid.UUID) -> _Observed | None:
    """ONE read: the deployment, plus what the next poll's delay needs (latest change, database clock)."""
    with autocommit_session() as session:
        row = _OBSERVATION_READ.execute(session, {"deployment_id": deployment_uuid}).fetchone()
    if row is None:
        return None
    tenant_id, k8s_name, namespace, status, desired, active_job_id, change_started, now = row
    if status in (DeploymentStatus.DELETED, DeploymentStatus.DELETING):
        return None
    return _Observed(
        poll_delay=_delay_since(change_started, now),
        tenant_id=tenant_id,
        name=k8s_name,
        namespace=namespace,
        selector=label_selector(k8s_name),
        status=DeploymentStatus(status),
        desired=desired,
        busy=active_job_id is not None,
    )


def observe_deployment(deployment_id: uuid.UUID | str) -> float | None:
    """Observe once and record. While the deployment is still converging, returns the seconds until it should be
    polled again (:func:`poll_delay` of its latest change); None once it has settled (or is gone)."""
    deployment_uuid = uuid.UUID(str(deployment_id))
    observed = _read_for_observation(deployment_uuid)
    if observed is None:
        return None
    return observed.poll_delay if _observe(deployment_uuid, observed) else None


def _observe(deployment_uuid: uuid.UUID, observed: _Observed) -> bool:
    """Read the cluster, judge, record (see :func:`observe_deployment`)."""
    status_before, desired, busy = observed.status, observed.desired, observed.busy
    clients = get_clients()
    k8s_deployment = get(clients, object_path("deployment", observed.namespace, observed.name))
    pods = [
        pod_view(pod)
        for pod in list_objects(clients, object_path("pod", observed.namespace), label_selector=observed.selector)
    ]
    verdict = judge(status_before, desired, k8s_deployment, pods)
    if busy:
        # A job is still changing the cluster (e.g. the restart patch may not be applied yet): what we see
        # may be the state from before it, so record pods and readiness but keep the status for now.
        verdict = Verdict(status_before, verdict.reason, verdict.message, verdict.ready, False, verdict.pods)
    if verdict.rollout_complete and status_before in _SETTLED_BY_COMPLETION:
        outcome = _record_settled(deployment_uuid, status_before, desired, verdict)
    else:
        outcome = _record_guarded(deployment_uuid, observed, verdict)
    if outcome is not None:
        return outcome
    still_converging = busy or verdict.status in SETTLING_STATUSES
    if verdict.status != status_before:
        logger.info(
            "deployment status changed",
            extra={
                "deployment_id": str(deployment_uuid),
                "from": str(status_before),
                "to": str(verdict.status),
                "reason": verdict.reason,
            },
        )
    return still_converging


def _changed_meanwhile(deployment_uuid: uuid.UUID) -> bool:
    """After a guarded write matched nothing: True (poll again) if a new request changed the target while
    we were reading, False if the deployment is gone or being deleted (stop polling)."""
    with autocommit_session() as session:
        status = session.execute(select(Deployment.status).where(Deployment.id == deployment_uuid)).scalar()
    return status is not None and status not in (DeploymentStatus.DELETED, DeploymentStatus.DELETING)


def _record_guarded(deployment_uuid: uuid.UUID, observed: _Observed, verdict: Verdict) -> bool | None:
    """Write the verdict and the pods as ONE statement, guarded on the state the verdict was judged from.

    The UPDATE's WHERE re-checks status and desired replicas on the row's latest version (it waits for a
    concurrent writer's row lock, then re-evaluates), so a request that changed the target meanwhile makes it
    match nothing, and then the pod writes (which depend on it) do nothing either: the same outcome as
    locking the row, checking and writing, without the BEGIN, SELECT ... FOR UPDATE and COMMIT round trips.
    Returns None when written, else what :func:`observe_deployment` should return.
    """
    now = datetime.now(UTC)
    parameters = {
        "observed_id": deployment_uuid,
        "status_before": observed.status,
        "desired_before": observed.desired,
        "new_status": verdict.status,
        "new_reason": verdict.reason,
        "new_message": verdict.message,
        "new_ready": verdict.ready,
        "pod_rows": [_pod_row(pod) for pod in verdict.pods],
        "pod_tenant_id": observed.tenant_id,
        "pods_observed_at": now,
        "live_pod_uids": [pod.uid for pod in verdict.pods] or [""],
    }
    with autocommit_session() as session:
        row = _GUARDED_OBSERVATION.execute(session, parameters).fetchone()
    if row is not None and row[0]:
        return None
    return _changed_meanwhile(deployment_uuid)


def pod_columns(pod: PodView | diagnosis.PodView) -> dict[str, Any]:
    """The ``pod_allocations`` columns a pod view fills in; every writer of pod rows (these below, the inventory
    sync, the health monitor) adds the deployment, the tenant and the times."""
    return {
        "pod_uid": pod.uid,
        "namespace": pod.namespace,
        "pod_name": pod.name,
        "node_name": pod.node,
        "gpus": pod.gpus,
        "phase": pod.phase,
        "ready": pod.ready,
        "restarts": pod.restarts,
        "reason": (pod.reason or None) and pod.reason[:128],
        "message": pod.message,
    }


def _pod_row(pod: PodView) -> dict[str, Any]:
    """A pod as a JSON-ready row for :func:`_guarded_observation_statement`."""
    return {
        **pod_columns(pod),
        "id": str(uuid.uuid4()),
        "started_at": pod.started_at.isoformat() if pod.started_at else None,
    }


def _guarded_observation_statement() -> Any:
    """The statement of :func:`_record_guarded`, compiled once as ``_GUARDED_OBSERVATION``: a CTE'd
    guarded UPDATE of the deployment, the pods upsert and the vanished-pods UPDATE, both conditional on
    the guard having matched; it returns how many deployment rows the guard matched (0 or 1)."""
    observed_deployment = (
        update(Deployment)
        .where(
            Deployment.id == bindparam("observed_id", type_=Uuid),
            Deployment.status == bindparam("status_before", type_=Deployment.__table__.c.status.type),
            Deployment.replicas_desired == bindparam("desired_before", type_=Integer),
        )
        .values(
            status=bindparam("new_status", type_=Deployment.__table__.c.status.type),
            status_reason=bindparam("new_reason", type_=String),
            status_message=bindparam("new_message", type_=Text),
            replicas_ready=bindparam("new_ready", type_=Integer),
            last_observed_at=func.now(),
        )
        .returning(Deployment.id)
        .cte("observed_deployment")
    )
    written = exists(select(observed_deployment.c.id))
    vanished_pods = (
        update(PodAllocation)
        .where(
            PodAllocation.deployment_id == bindparam("observed_id", type_=Uuid),
            PodAllocation.terminated_at.is_(None),
            PodAllocation.pod_uid != all_(bindparam("live_pod_uids", type_=ARRAY(String))),
            written,
        )
        .values(terminated_at=bindparam("pods_observed_at", type_=DateTime(timezone=True)))
        .returning(PodAllocation.id)
        .cte("vanished_pods")
    )
    return (
        select(select(func.count()).select_from(observed_deployment).scalar_subquery())
        .add_cte(_upsert_pods(written))
        .add_cte(vanished_pods)
    )


_GUARDED_OBSERVATION = DriverStatement(_guarded_observation_statement)


# A change that completes here (a create, a scale, a restart, or a recovery from DEGRADED) ends with the GPUs
# booked where its replicas run: admission picked nodes, the scheduler placed the pods, and until they agree
# admission offers the wrong nodes' GPUs.
_SETTLED_BY_COMPLETION = (
    DeploymentStatus.CREATING,
    DeploymentStatus.SCALING,
    DeploymentStatus.RESTARTING,
    DeploymentStatus.DEGRADED,
)


def _record_settled(
    deployment_uuid: uuid.UUID, status_before: DeploymentStatus, desired: int, verdict: Verdict
) -> bool | None:
    """The write that ends a change (once per change, not per poll): the verdict, plus a restart's surge ended
    (:func:`_settle_restart`) or the reservations moved to where the replicas run, in one transaction under the
    deployment's row lock. Returns like :func:`_record_guarded`."""
    with session_scope() as session:
        deployment = session.get(Deployment, deployment_uuid, with_for_update=True)
        if deployment is None or deployment.status in (DeploymentStatus.DELETED, DeploymentStatus.DELETING):
            return False
        if deployment.status != status_before or deployment.replicas_desired != desired:
            # A new request changed the target while we were reading: judge again on the next poll.
            return True
        if status_before == DeploymentStatus.RESTARTING:
            _settle_restart(session, deployment, verdict.pods)
        else:
            _book_where_running(session, deployment, verdict.pods)
        deployment.status = verdict.status
        deployment.status_reason = verdict.reason
        deployment.status_message = verdict.message
        deployment.replicas_ready = verdict.ready
        deployment.last_observed_at = func.now()
        record_pods(session, deployment.id, deployment.tenant_id, verdict.pods)
    return None


def _upsert_pods(written: Any) -> Any:
    """The pods upsert of :func:`record_pods` as a CTE that writes only if ``written`` holds. The pods travel
    as one JSONB parameter (``pod_rows``), so the statement's text (and its prepared plan) is the same for
    any pod count, none included."""
    rows = (
        func.jsonb_to_recordset(bindparam("pod_rows", type_=JSONB))
        .table_valued(
            column("id", Uuid),
            column("pod_uid", String),
            column("namespace", String),
            column("pod_name", String),
            column("node_name", String),
            column("gpus", Integer),
            column("phase", String),
            column("ready", Boolean),
            column("restarts", Integer),
            column("reason", String),
            column("message", Text),
            column("started_at", DateTime(timezone=True)),
        )
        .render_derived(name="observed_pod", with_types=True)
    )
    statement = insert(PodAllocation).from_select(
        [
            "id",
            "pod_uid",
            "namespace",
            "pod_name",
            "deployment_id",
            "tenant_id",
            "node_name",
            "gpus",
            "phase",
            "ready",
            "restarts",
            "reason",
            "message",
            "started_at",
            "observed_at",
            "terminated_at",
        ],
        select(
            rows.c.id,
            rows.c.pod_uid,
            rows.c.namespace,
            rows.c.pod_name,
            bindparam("observed_id", type_=Uuid),
            bindparam("pod_tenant_id", type_=String),
            rows.c.node_name,
            rows.c.gpus,
            rows.c.phase,
            rows.c.ready,
            rows.c.restarts,
            rows.c.reason,
            rows.c.message,
            rows.c.started_at,
            bindparam("pods_observed_at", type_=DateTime(timezone=True)),
            null(),
        ).where(written),
    )
    excluded = statement.excluded
    return (
        statement.on_conflict_do_update(index_elements=[PodAllocation.pod_uid], set_=_pod_upsert_set(excluded))
        .returning(PodAllocation.id)
        .cte("recorded_pods")
    )


def _pod_upsert_set(excluded: Any) -> dict[str, Any]:
    """The columns an observation overwrites on a pod row that already exists (both upserts)."""
    return {
        "deployment_id": excluded.deployment_id,
        "tenant_id": excluded.tenant_id,
        "node_name": excluded.node_name,
        "gpus": excluded.gpus,
        "phase": excluded.phase,
        "ready": excluded.ready,
        "restarts": excluded.restarts,
        "reason": excluded.reason,
        "message": excluded.message,
        "started_at": excluded.started_at,
        "observed_at": excluded.observed_at,
        "terminated_at": None,
    }


def _settle_restart(session: Any, deployment: Deployment, pods: list[PodView]) -> None:
    """The end of a restart's rollout: a single-replica restart's temporary replica is released and the no-surge
    strategy restored, and the reservations follow the replicas that now run.

    New replicas run wherever the scheduler put them, often not where the surge was admitted and rarely where the
    old ones were: admission would otherwise offer the nodes they left as full and the ones they landed on as free
    until the resource tracker's next sweep (a minute: long enough to admit a replica that can never start; the
    tracker leaves rollouts in progress alone)."""
    surge_rows = (
        session.execute(
            select(GpuReservation.job_id)
            .join(Job, Job.id == GpuReservation.job_id)
            .where(
                GpuReservation.deployment_id == deployment.id,
                GpuReservation.released_at.is_(None),
                Job.type == JobType.DEPLOYMENT_RESTART,
            )
        )
        .scalars()
        .all()
    )
    if surge_rows:
        from workers.deployments import finish_restart_rollout

        finish_restart_rollout(get_clients(), deployment)
    if _book_where_running(session, deployment, pods):
        return
    for job_id in set(surge_rows):
        admission.release(session, deployment.id, job_id=job_id)


def _book_where_running(session: Any, deployment: Deployment, pods: list[PodView]) -> bool:
    """Move the deployment's reservations to the nodes its replicas run on, if they are all running (as many as
    desired) and are not booked there already; False if they are not all running (nothing is changed)."""
    running: dict[str, int] = {}
    for pod in pods:
        if pod.node and not pod.terminating and pod.phase not in FINISHED_POD_PHASES:
            running[pod.node] = running.get(pod.node, 0) + 1
    if sum(running.values()) != deployment.replicas_desired:
        return False
    booked: dict[str, int] = {}
    for node_name, replicas in session.execute(
        select(GpuReservation.node_name, GpuReservation.replicas).where(
            GpuReservation.deployment_id == deployment.id, GpuReservation.released_at.is_(None)
        )
    ):
        booked[node_name] = booked.get(node_name, 0) + replicas
    if booked != running:
        admission.reserve_where_running(session, deployment, running)
    return True


def record_pods(session: Any, deployment_id: uuid.UUID, tenant_id: str, pods: list[PodView]) -> None:
    """Upsert the deployment's pods into PodAllocation (one statement) and mark vanished ones terminated."""
    now = datetime.now(UTC)
    if pods:
        rows = [
            {
                **pod_columns(pod),
                "id": uuid.uuid4(),
                "deployment_id": deployment_id,
                "tenant_id": tenant_id,
                "started_at": pod.started_at,
                "observed_at": now,
                "terminated_at": None,
            }
            for pod in pods
        ]
        statement = insert(PodAllocation).values(rows)
        excluded = statement.excluded
        session.execute(
            statement.on_conflict_do_update(index_elements=[PodAllocation.pod_uid], set_=_pod_upsert_set(excluded))
        )
    session.execute(
        update(PodAllocation)
        .where(
            PodAllocation.deployment_id == deployment_id,
            PodAllocation.terminated_at.is_(None),
            PodAllocation.pod_uid.not_in([pod.uid for pod in pods] or [""]),
        )
        .values(terminated_at=now)
    )
