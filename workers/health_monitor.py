"""The health monitor sweep: keep every deployment's status true to the cluster, and recover stuck ones.

One run makes a constant number of list calls whatever the number of deployments (our Deployments and
our pods by label selector, and the nodes, each paginated), diagnoses each deployment
(:mod:`workers.diagnosis`), decides recovery steps (:mod:`workers.recovery`), and writes back what
changed in a fixed number of set-based statements (one UPDATE of the changed deployments, one upsert of
the new or changed pods, one UPDATE closing the vanished ones, one INSERT of all events; each left out
when it has no rows), plus the record of its observation that vouches for every deployment it covered
(:func:`last_observed_at_column`). The cluster unreachable -> the run skips and says so, and nothing is
written.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, DateTime, and_, case, func, insert, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from models import (
    SCHEMA,
    Deployment,
    DeploymentStatus,
    GpuNode,
    Job,
    ScalingEvent,
    ScalingEventStatus,
    SweepName,
    SweepRun,
)
from models.job import TERMINAL_JOB_STATES
from settings import get_settings
from workers import dispatch, k8s, recovery
from workers.cluster_errors import ClusterError
from workers.diagnosis import Diagnosis, PodView, diagnose_deployment, pod_view
from workers.domain import DomainError
from workers.kube_calls import list_pages
from workers.manifests import DEPLOYMENT_ID_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE
from workers.observe import pod_columns
from workers.sweep_lock import DEFAULT_KEY_PREFIX, lock_key_prefix, run_locked
from workers.sweep_metrics import SUCCEEDED, SweepReport, observed_sweep, summary_in_new_session

OUR_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
# A sweep normally takes well under a second; the TTL only bounds how long a crashed run blocks the next.
LOCK_TTL_SECONDS = 300.0
# Statuses the monitor may set. Transitional ones (SCALING, RESTARTING, DELETING, ...) belong to the job
# that holds the deployment; the monitor still refreshes their ready count and pods.
MONITORED_STATUSES = (
    DeploymentStatus.CREATING,
    DeploymentStatus.RUNNING,
    DeploymentStatus.STOPPED,
    DeploymentStatus.DEGRADED,
    DeploymentStatus.FAILED,
)
OBSERVED_STATUSES = (*MONITORED_STATUSES, DeploymentStatus.SCALING, DeploymentStatus.RESTARTING)


# ------------------------------------------------------------------------------------------ reading
def node_ready_status(node: Mapping[str, Any]) -> str:
    """``Ready`` / ``NotReady`` / ``Unknown`` from the node's Ready condition."""
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return {"True": "Ready", "False": "NotReady"}.get(condition.get("status"), "Unknown")
    return "Unknown"


@dataclass
class ClusterView:
    """What one sweep read from Kubernetes, indexed by our deployment id."""

    deployments: dict[str, dict] = field(default_factory=dict)
    pods: dict[str, list[PodView]] = field(default_factory=lambda: defaultdict(list))
    node_ready: dict[str, str] = field(default_factory=dict)
    pod_count: int = 0


class PodViewMemo:
    """The pod views of the last pod list, by pod uid with the ``resourceVersion`` each was read at.

    The API server gives an object a new ``resourceVersion`` on every change, so a pod listed again at the
    same one is the same pod and its (immutable) view is reused instead of extracted again: that extraction
    is most of what digesting a pod costs after the JSON itself, and most pods of a steady cluster are the
    same from one sweep to the next. A complete list replaces the memo with what it saw, so it holds one
    cluster's pods at most; it is kept per client, so another cluster (a new kubeconfig) starts afresh.
    """

    def __init__(self) -> None:
        self._clients: Any = None
        self._views: dict[str, tuple[str, PodView]] = {}

    def views(self, clients: Any, items: Iterable[dict]) -> Iterator[PodView]:
        remembered = self._views if self._clients is clients else {}
        seen: dict[str, tuple[str, PodView]] = {}
        for item in items:
            metadata = item.get("metadata") or {}
            uid, version = metadata.get("uid"), metadata.get("resourceVersion")
            known = remembered.get(uid) if uid and version else None
            pod = known[1] if known is not None and known[0] == version else pod_view(item)
            if uid and version:
                seen[uid] = (version, pod)
            yield pod
        self._clients, self._views = clients, seen


_POD_VIEWS = PodViewMemo()


def read_cluster(
    clients: Any, *, namespace: str, nodes: bool = True, meanwhile: Callable[[], None] | None = None
) -> ClusterView:
    """Our Deployments and pods (label selector) and the nodes: three paginated list calls.

    The three run on their own threads, each turning its pages into the view as they arrive: the pod
    list, by far the largest, overlaps with the other two, and the client digests one page while the
    server encodes the next (a pod unchanged since the last list cheaply: :class:`PodViewMemo`).
    ``meanwhile`` runs in the caller's thread while the lists are in flight (the sweep reads its own tables
    then). A list's ClusterError is re-raised here, after ``meanwhile``.
    """
    view = ClusterView()
    node_ready: dict[str, str] = {}

    def read_deployments() -> None:
        listed = list_pages(clients, clients.apps.list_namespaced_deployment, namespace, label_selector=OUR_SELECTOR)
        for item in listed:
            deployment_id = ((item.get("metadata") or {}).get("labels") or {}).get(DEPLOYMENT_ID_LABEL)
            if deployment_id:
                view.deployments[deployment_id] = item

    def read_pods() -> None:
        listed = list_pages(clients, clients.core.list_namespaced_pod, namespace, label_selector=OUR_SELECTOR)
        for pod in _POD_VIEWS.views(clients, listed):
            view.pod_count += 1
            deployment_id = pod.labels.get(DEPLOYMENT_ID_LABEL)
            if deployment_id:
                view.pods[deployment_id].append(pod)

    def read_nodes() -> None:
        for item in list_pages(clients, clients.core.list_node):
            node_ready[(item.get("metadata") or {}).get("name", "")] = node_ready_status(item)

    # Each list fills its own part of the view; nothing is shared between the threads.
    calls: list[Callable[[], None]] = [read_deployments, read_pods, *([read_nodes] if nodes else [])]
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="health-monitor-list") as pool:
        futures = [pool.submit(call) for call in calls]
        if meanwhile is not None:
            meanwhile()
        for future in futures:
            future.result()  # re-raises a list's ClusterError here, in the caller's thread
    view.node_ready = node_ready
    return view


@dataclass(frozen=True)
class MonitoredDeployment:
    """The columns the monitor needs of one deployment row (read in one query, no ORM identity map)."""

    id: uuid.UUID
    tenant_id: str
    model_id: str
    gpu_type: str
    gpus_per_replica: int
    replicas_desired: int
    replicas_ready: int
    status: str
    status_reason: str | None
    status_message: str | None
    created_at: datetime
    busy: bool  # another operation (a job) holds the deployment


def load_deployments(session: Session) -> list[MonitoredDeployment]:
    rows = session.execute(
        select(
            Deployment.id, Deployment.tenant_id, Deployment.model_id, Deployment.gpu_type,
            Deployment.gpus_per_replica, Deployment.replicas_desired, Deployment.replicas_ready,
            Deployment.status, Deployment.status_reason, Deployment.status_message, Deployment.created_at,
            Deployment.active_job_id, Job.state,
        )
        .outerjoin(Job, Job.id == Deployment.active_job_id)
        .where(Deployment.deleted_at.is_(None), Deployment.status.in_(OBSERVED_STATUSES))
    ).all()
    return [
        MonitoredDeployment(
            id=row.id, tenant_id=row.tenant_id, model_id=row.model_id, gpu_type=row.gpu_type,
            gpus_per_replica=row.gpus_per_replica, replicas_desired=row.replicas_desired,
            replicas_ready=row.replicas_ready, status=str(row.status), status_reason=row.status_reason,
            status_message=row.status_message, created_at=row.created_at,
            busy=row.active_job_id is not None and row.state not in TERMINAL_JOB_STATES,
        )
        for row in rows
    ]


# ------------------------------------------------------------------------------------------ writing
# Rows travel as one JSON document (``jsonb_to_recordset``), not one array per column: the driver's
# per-element array quoting of thousands of values cost more than the statement itself.
_UPDATE_DEPLOYMENTS = text(
    f"""
    UPDATE {SCHEMA}.deployments AS d SET
        status = CASE WHEN v.write_status THEN v.status ELSE d.status END,
        status_reason = CASE WHEN v.write_status THEN v.reason ELSE d.status_reason END,
        status_message = CASE WHEN v.write_status THEN v.message ELSE d.status_message END,
        replicas_ready = v.ready,
        last_observed_at = :observed_at,
        updated_at = CASE
            WHEN v.write_status AND (d.status, d.status_reason, d.status_message)
                 IS DISTINCT FROM (v.status, v.reason, v.message) THEN now()
            ELSE d.updated_at END
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(
        id uuid, status text, reason text, message text, ready int, write_status boolean, expected text
    )
    WHERE d.id = v.id AND d.deleted_at IS NULL AND d.status = v.expected
    """  # noqa: S608 - SCHEMA is a validated lowercase identifier (settings.DB_SCHEMA); values are bound
)

_P = f"{SCHEMA}.pod_allocations"
# What the upsert keeps up to date. The sweep sends only pods whose stored open row differs (write_pods);
# a pod whose row (open or closed) already matches is still left out in SQL, before the upsert.
# (ON CONFLICT DO UPDATE locks the existing row even when its WHERE then skips the update: a WAL-logged
# write per steady pod, most of the statement's time. Filtering first touches only new and changed pods;
# the ON CONFLICT clause still guards against a row written meanwhile.)
_TRACKED = "node_name, phase, ready, restarts, reason, message, gpus, deployment_id"
_UPSERT_PODS = text(
    f"""
    INSERT INTO {_P} (
        id, pod_uid, namespace, pod_name, deployment_id, tenant_id, node_name, gpus, phase, ready,
        restarts, reason, message, started_at, observed_at
    )
    SELECT gen_random_uuid(), v.pod_uid, v.namespace, v.pod_name, d.id, v.tenant_id, v.node_name, v.gpus,
           v.phase, v.ready, v.restarts, v.reason, v.message, v.started_at, :observed_at
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(
        pod_uid text, namespace text, pod_name text, deployment_id uuid, tenant_id text, node_name text, gpus int,
        phase text, ready boolean, restarts int, reason text, message text, started_at timestamptz
    )
    LEFT JOIN {SCHEMA}.deployments AS d ON d.id = v.deployment_id
    LEFT JOIN {_P} AS p ON p.pod_uid = v.pod_uid
    WHERE p.pod_uid IS NULL
       OR (p.{_TRACKED.replace(", ", ", p.")})
          IS DISTINCT FROM (v.node_name, v.phase, v.ready, v.restarts, v.reason, v.message, v.gpus, d.id)
    ORDER BY v.pod_uid
    ON CONFLICT (pod_uid) DO UPDATE SET
        node_name = EXCLUDED.node_name, gpus = EXCLUDED.gpus, phase = EXCLUDED.phase, ready = EXCLUDED.ready,
        restarts = EXCLUDED.restarts, reason = EXCLUDED.reason, message = EXCLUDED.message,
        started_at = COALESCE(EXCLUDED.started_at, {_P}.started_at),
        deployment_id = EXCLUDED.deployment_id, tenant_id = EXCLUDED.tenant_id, observed_at = EXCLUDED.observed_at
    -- Unchanged pods are not rewritten: no new row versions (and WAL) for thousands of steady pods per sweep.
    WHERE ({_P}.{_TRACKED.replace(", ", f", {_P}.")})
          IS DISTINCT FROM
          (EXCLUDED.{_TRACKED.replace(", ", ", EXCLUDED.")})
    """  # noqa: S608 - SCHEMA is a validated identifier; values are bound
)

# Our pods that the list no longer returns are gone: close their rows (picked out in Python from the rows
# read at the start of the sweep; ``terminated_at IS NULL`` leaves a row closed meanwhile as it was).
_CLOSE_VANISHED_PODS = text(
    f"""
    UPDATE {SCHEMA}.pod_allocations SET terminated_at = :observed_at, ready = false, observed_at = :observed_at
    WHERE terminated_at IS NULL AND pod_uid IN (SELECT jsonb_array_elements_text(CAST(:uids AS jsonb)))
    """  # noqa: S608 - SCHEMA is a validated identifier; values are bound
)

# The stored side of the pod comparison: the open rows in our namespace, the columns ``_TRACKED`` names.
_OPEN_PODS = text(
    f"""
    SELECT pod_uid, {_TRACKED} FROM {SCHEMA}.pod_allocations
    WHERE namespace = :namespace AND terminated_at IS NULL
    """  # noqa: S608 - SCHEMA is a validated identifier; values are bound
)

StoredPod = tuple[Any, ...]  # the ``_TRACKED`` columns of one row, in that order


def load_open_pods(session: Session, namespace: str) -> dict[str, StoredPod]:
    """The open pod_allocations rows of the namespace by pod uid: what the sweep compares the list with."""
    # All rows at once: fetching thousands one by one costs a driver call each.
    rows = session.execute(_OPEN_PODS, {"namespace": namespace}).all()
    return {row[0]: tuple(row[1:]) for row in rows}


def _timestamp(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def write_pods(
    session: Session, view: ClusterView, observed_at: datetime, stored: Mapping[str, StoredPod]
) -> None:
    """Write the pods that differ from their stored open row (new or changed) and close the rows of those that
    vanished: at most two statements, none when nothing changed (the usual sweep).

    ``stored`` is :func:`load_open_pods` read at the start of the sweep. A pod written meanwhile by another
    writer is still safe: the upsert compares against the row as it is then, and the close skips closed rows.
    """
    rows = []
    for deployment_label, pods in view.pods.items():
        deployment_id = _uuid_or_none(deployment_label)
        if deployment_id is None:
            continue
        for pod in pods:
            if not pod.uid:
                continue
            columns = pod_columns(pod)
            tracked = (pod.node, pod.phase, pod.ready, pod.restarts, columns["reason"], pod.message, pod.gpus,
                       deployment_id)  # fmt: skip
            if stored.get(pod.uid) == tracked:
                continue
            rows.append({
                **columns,
                "deployment_id": deployment_label, "tenant_id": pod.labels.get("orchestration.ai/tenant"),
                "started_at": _iso(_timestamp(pod.started_at)),
            })
    if rows:
        session.execute(_UPSERT_PODS, {"observed_at": observed_at, "rows": json.dumps(rows)})
    # Every pod the list returned, its label a valid id or not: a row closes only when its pod is gone.
    listed = {pod.uid for pods in view.pods.values() for pod in pods}
    # _TRACKED ends with deployment_id: rows not tied to a deployment were never ours to close.
    vanished = [uid for uid, row in stored.items() if row[-1] is not None and uid not in listed]
    if vanished:
        # As a JSON array: cheaper to send than a text[] of many elements quoted one by one.
        session.execute(_CLOSE_VANISHED_PODS, {"observed_at": observed_at, "uids": json.dumps(vanished)})


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


@dataclass
class DeploymentOutcome:
    deployment: MonitoredDeployment
    diagnosis: Diagnosis
    status: str
    reason: str | None
    message: str | None
    write_status: bool


def write_deployments(session: Session, outcomes: Iterable[DeploymentOutcome], observed_at: datetime) -> None:
    """Write the deployments whose observed state changed (status, reason, message, ready count), stamping
    their ``last_observed_at``: one statement, none when nothing changed. The unchanged ones are vouched for
    by the sweep's observation record instead (:func:`record_observation`, :func:`last_observed_at_column`):
    rewriting thousands of rows per sweep only to move a timestamp cost more than the rest of the writes."""
    document = [
        {
            "id": str(row.deployment.id), "status": row.status, "reason": row.reason, "message": row.message,
            "ready": row.diagnosis.ready_replicas, "write_status": row.write_status, "expected": row.deployment.status,
        }
        for row in outcomes
        # Where the monitor may not set the status, the outcome carries the stored one: only ready can differ.
        if (row.status, row.reason, row.message, row.diagnosis.ready_replicas)
        != (row.deployment.status, row.deployment.status_reason, row.deployment.status_message,
            row.deployment.replicas_ready)
    ]
    if document:
        session.execute(_UPDATE_DEPLOYMENTS, {"observed_at": observed_at, "rows": json.dumps(document)})


# ------------------------------------------------------------------------------------------ last observation
# The last successful sweep's observation, in a ``sweep_runs`` row of its own: written in the sweep's own
# transaction (never ahead of the writes it vouches for) and by successful sweeps only (the sweep's own row
# is rewritten by every run, skipped and failed ones included). ``last_started_at`` is the database time the
# sweep's transaction began, when it read the deployments; ``last_finished_at`` the sweep's time of
# observation, the value ``last_observed_at`` takes.
OBSERVATION_RECORD = f"{SweepName.HEALTH_MONITOR.value}:observation"


def record_observation(session: Session, observed_at: datetime) -> None:
    values = {"last_started_at": func.now(), "last_finished_at": observed_at, "last_status": SUCCEEDED}
    statement = pg_insert(SweepRun).values(name=OBSERVATION_RECORD, **values)
    session.execute(statement.on_conflict_do_update(index_elements=[SweepRun.name], set_=values))


def last_observed_at_column() -> ColumnElement[datetime]:
    """A deployment's ``last_observed_at`` as readers should show it: the later of its row's own value (the
    last write of an observation, by this monitor or by a job's poller) and the last successful sweep's time,
    if that sweep covered the deployment. It did if the deployment is one the sweep reads (live, a status in
    ``OBSERVED_STATUSES``) and the row is unchanged since the sweep read it (``updated_at`` no later than the
    sweep's transaction): a deployment that, say, was PENDING then and CREATING now shows its own time.

    Constants are SQL literals, so the expression can be compiled once and run without bound parameters.
    """
    # The record is read by two uncorrelated subqueries, each evaluated once per statement (not once per row).
    record = SweepRun.name == literal_column(f"'{OBSERVATION_RECORD}'")
    started = select(SweepRun.last_started_at).where(record).scalar_subquery()
    finished = select(SweepRun.last_finished_at).where(record).scalar_subquery()
    covered_until = case(
        (
            and_(
                Deployment.deleted_at.is_(None),
                Deployment.status.in_([literal_column(f"'{status.value}'") for status in OBSERVED_STATUSES]),
                Deployment.updated_at <= started,
            ),
            finished,
        ),
    )
    # GREATEST ignores NULLs: either side alone is the answer when the other is unknown.
    return func.greatest(Deployment.last_observed_at, covered_until, type_=DateTime(timezone=True)).label(
        "last_observed_at"
    )


# ------------------------------------------------------------------------------------------ the sweep
@dataclass(frozen=True)
class HealthMonitorConfig:
    create_deadline_seconds: float
    model_load_deadline_seconds: float
    recovery_policy: recovery.RecoveryPolicy = field(default_factory=recovery.RecoveryPolicy)
    namespace: str = "model-serving"

    @classmethod
    def from_settings(cls) -> HealthMonitorConfig:
        settings = get_settings()
        return cls(
            create_deadline_seconds=float(settings.create_deadline_seconds),
            # The startup probe allows CREATE_DEADLINE_SECONDS for the model to load; past it, it never will.
            model_load_deadline_seconds=float(settings.create_deadline_seconds),
            namespace=settings.k8s_namespace,
        )


@dataclass
class _Actions:
    events: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    status_overrides: dict[uuid.UUID, tuple[str, str, str]] = field(default_factory=dict)


def run_health_monitor(
    session: Session,
    *,
    now: float | None = None,
    clients: Any | None = None,
    config: HealthMonitorConfig | None = None,
    enqueue: Callable[[Job], None] | None = None,
    redis_client: Any | None = None,
    key_prefix: str = DEFAULT_KEY_PREFIX,
) -> SweepReport:
    """One health-monitor sweep (see the module doc). ``now`` is epoch seconds (the cluster's clock in tests)."""
    config = config or HealthMonitorConfig.from_settings()
    with observed_sweep(session, SweepName.HEALTH_MONITOR.value) as report:
        run_locked(
            report, SweepName.HEALTH_MONITOR.value, LOCK_TTL_SECONDS,
            lambda: _sweep(session, report, now if now is not None else time.time(), clients or k8s.get_clients(),
                           config, enqueue if enqueue is not None else dispatch.enqueue),
            client=redis_client, key_prefix=key_prefix,
        )
    return report


def _sweep(
    session: Session,
    report: SweepReport,
    now: float,
    clients: Any,
    config: HealthMonitorConfig,
    enqueue: Callable[[Job], None],
) -> None:
    # The service's own side (deployments, recovery states, stored pods) is read while the lists are in flight.
    deployments: list[MonitoredDeployment] = []
    states: dict[uuid.UUID, recovery.RecoveryState] = {}
    stored_pods: dict[str, StoredPod] = {}

    def read_database() -> None:
        deployments.extend(load_deployments(session))
        states.update(recovery.load_states(session))
        stored_pods.update(load_open_pods(session, config.namespace))

    try:
        view = read_cluster(clients, namespace=config.namespace, meanwhile=read_database)
    except ClusterError as error:
        report.error(error.code, error.message)
        report.skip(f"kubernetes_unavailable: {error.message}")
        return
    report.saw("k8s_deployments", len(view.deployments))
    report.saw("pods", view.pod_count)
    report.saw("nodes", len(view.node_ready))
    report.saw("deployments", len(deployments))
    observed_at = datetime.fromtimestamp(now, tz=UTC)

    outcomes: list[DeploymentOutcome] = []
    actions = _Actions()
    for deployment in deployments:
        key = str(deployment.id)
        diagnosis = diagnose_deployment(
            current_status=deployment.status,
            desired_replicas=deployment.replicas_desired,
            k8s_deployment=view.deployments.get(key),
            pods=view.pods.get(key, []),
            node_ready=view.node_ready,
            now=now,
            model_load_deadline_seconds=config.model_load_deadline_seconds,
        )
        # A finished scale whose status poller was lost still converges here; a restart's end needs the
        # poller (it releases the surge replica), so RESTARTING is left to it.
        may_set_status = not deployment.busy and (
            deployment.status in MONITORED_STATUSES or deployment.status == DeploymentStatus.SCALING
        )
        if may_set_status and deployment.status in MONITORED_STATUSES:
            _recover(
                session, report, clients, deployment, diagnosis, states.get(deployment.id), now, config, actions,
                view.node_ready,
            )
        status, reason, message = actions.status_overrides.get(
            deployment.id,
            (diagnosis.status, diagnosis.reason.value if diagnosis.reason else None, diagnosis.message),
        )
        if not may_set_status or (status == deployment.status == "FAILED"):
            # Busy: the job owns the status. Still FAILED: keep the reason it failed with, not today's symptom.
            status, reason, message = deployment.status, deployment.status_reason, deployment.status_message
        elif status != deployment.status:
            report.acted(f"status_{status.lower()}")
        outcomes.append(DeploymentOutcome(deployment, diagnosis, status, reason, message, may_set_status))

    write_deployments(session, outcomes, observed_at)
    write_pods(session, view, observed_at, stored_pods)
    record_observation(session, observed_at)
    if actions.events:
        session.execute(insert(ScalingEvent), actions.events)
    session.commit()
    for job in actions.jobs:
        enqueue(job)
    report.details["unhealthy"] = [
        {"deployment_id": str(o.deployment.id), "status": o.status, "reason": o.reason}
        for o in outcomes
        if o.status not in ("RUNNING", "STOPPED")
    ]


def _recover(
    session: Session,
    report: SweepReport,
    clients: Any,
    deployment: MonitoredDeployment,
    diagnosis: Diagnosis,
    state: recovery.RecoveryState | None,
    now: float,
    config: HealthMonitorConfig,
    actions: _Actions,
    node_ready: Mapping[str, str],
) -> None:
    """Decide and carry out this sweep's recovery step for one deployment, recording it."""
    state = state or recovery.RecoveryState()
    age = now - deployment.created_at.timestamp()
    decision = recovery.decide(
        diagnosis,
        state,
        config.recovery_policy,
        now,
        replicas=deployment.replicas_desired,
        can_restart=deployment.status in ("RUNNING", "DEGRADED"),
        stuck_creating=deployment.status == "CREATING" and age > config.create_deadline_seconds,
    )
    common: dict[str, Any] = {"deployment": deployment, "now": now, "diagnosis": diagnosis}
    if decision.kind == "close":
        actions.events.append(recovery.event_row(
            outcome=recovery.Outcome.RECOVERED, status=ScalingEventStatus.SUCCEEDED,
            reason=f"healthy again after {state.attempts} recovery attempt(s)", attempt=state.attempts, **common,
        ))
        report.acted("recovery_closed")
        return
    if decision.kind == "give_up":
        reason_code = recovery.give_up_reason(diagnosis, state)
        message = f"{diagnosis.message or 'not serving'} — gave up {decision.note}"
        if diagnosis.ready_replicas == 0:
            actions.status_overrides[deployment.id] = ("FAILED", reason_code, message)
        actions.events.append(recovery.event_row(
            outcome=recovery.Outcome.GAVE_UP, status=ScalingEventStatus.FAILED,
            reason=f"recovery gave up: {reason_code}", attempt=decision.attempt, **common,
        ))
        report.acted("recovery_gave_up")
        return
    if decision.kind != "act" or decision.step is None:
        return
    pod_names = [pod.name for pod in decision.pods]
    extra: dict[str, Any]
    try:
        if decision.step == recovery.Step.DELETE_PODS:
            recovery.delete_pods(clients, decision.pods)
            event_status, outcome, extra, job = ScalingEventStatus.SUCCEEDED, recovery.Outcome.ATTEMPTED, {}, None
        elif decision.step == recovery.Step.MOVE_PODS:
            event_status, outcome, extra, job = _move_pods(session, clients, deployment, decision, node_ready)
        else:
            event_status, outcome, extra, job = _restart(session, deployment)
    except ClusterError as error:
        # Not counted as an attempt: nothing (or not all) happened; the next sweep re-diagnoses and retries.
        report.error(error.code, f"recovery of {deployment.id}: {error.message}")
        return
    if job is not None:
        actions.jobs.append(job)
    actions.events.append(recovery.event_row(
        outcome=outcome, status=event_status, step=decision.step, pods=pod_names, attempt=decision.attempt,
        job_id=job.id if job is not None else None, extra=extra,
        reason=f"recovery attempt {decision.attempt}: {decision.step.value} ({diagnosis.reason})", **common,
    ))
    report.acted(f"recovery_{decision.step.value}" if outcome == recovery.Outcome.ATTEMPTED else "recovery_blocked")


def _move_pods(
    session: Session,
    clients: Any,
    deployment: MonitoredDeployment,
    decision: recovery.Decision,
    node_ready: Mapping[str, str],
) -> tuple[ScalingEventStatus, recovery.Outcome, dict[str, Any], Job | None]:
    savepoint = session.begin_nested()
    # Admission places by the gpu_nodes rows, which the resource tracker refreshes less often than this
    # sweep runs: record the failed nodes' state first, so the moved replicas are never placed back on them.
    for state in sorted({state for state in node_ready.values() if state != "Ready"}):
        names = sorted(name for name, seen in node_ready.items() if seen == state)
        session.execute(
            update(GpuNode).where(GpuNode.name.in_(names), GpuNode.ready_status == "Ready").values(ready_status=state)
        )
    try:
        placed = recovery.reserve_moved_replicas(session, deployment, decision.pods)
    except DomainError as error:
        savepoint.rollback()
        return ScalingEventStatus.BLOCKED, recovery.Outcome.BLOCKED, {"admission": error.to_dict()}, None
    try:
        recovery.delete_pods(clients, decision.pods, force=True)
    except ClusterError:
        savepoint.rollback()
        raise
    savepoint.commit()
    return ScalingEventStatus.SUCCEEDED, recovery.Outcome.ATTEMPTED, placed, None


def _restart(
    session: Session, deployment: MonitoredDeployment
) -> tuple[ScalingEventStatus, recovery.Outcome, dict[str, Any], Job | None]:
    from workers.requests import request_restart

    savepoint = session.begin_nested()
    try:
        submitted = request_restart(
            session, tenant_id=None, deployment_id=deployment.id, requested_by=recovery.RECOVERY_ACTOR
        )
    except DomainError as error:
        savepoint.rollback()
        return ScalingEventStatus.BLOCKED, recovery.Outcome.BLOCKED, {"refused": error.to_dict()}, None
    savepoint.commit()
    return ScalingEventStatus.PENDING, recovery.Outcome.ATTEMPTED, {}, submitted.job


def health_monitor_sweep() -> dict[str, Any]:
    """The ``sweeps.health_monitor`` task's body: one run in a fresh session; returns the run's summary."""
    return summary_in_new_session(run_health_monitor, key_prefix=lock_key_prefix())
