"""Node drain, make-before-break: move our vLLM replicas off a node without ever dropping below desired.

``kubectl drain`` evicts first and lets the ReplicaSet replace afterwards, so every evicted model replica
is missing for a full model load (minutes). Here, for each of our deployments with ``k`` pods on the node:

1. cordon the node (the row records who and why);
2. list its pods page by page and sort them like kubectl (DaemonSet and mirror pods stay, unmanaged pods
   only with ``force``, foreign emptyDir pods only with ``delete_emptydir_data``; ours are always movable);
3. admit ``k`` extra replicas elsewhere (GPU reservations). No room -> unless ``allow_capacity_loss`` the
   job fails ``no_capacity_elsewhere`` with the node cordoned and nothing evicted;
4. surge the Deployment to ``desired + k`` and wait (re-enqueueing itself with a countdown, never holding
   a worker slot) until ``readyReplicas >= desired + k``;
5. evict the old pods one by one through the Eviction API; after each accepted eviction scale the
   Deployment down by one, so the ReplicaSet removes the not-yet-ready replacement it just created rather
   than a Ready pod, and the PDB (maxUnavailable 1, counted against the lowered replica count) allows the
   next eviction at once. A 429 from a PDB is retried with backoff until the job's timeout and shown as
   ``blocked`` with the budget's message;
6. evict foreign pods the kubectl way, wait until no evictable pod is left on the node, succeed.

The task runs one *step* at a time and stores the phase and plan in ``job.progress``; every step is
idempotent (absolute replica counts, "already gone" counts as evicted), so a redelivered or duplicated
message resumes from the last committed phase. Cancellation (``cancel_requested``) and the deadline are
checked at every step: surged deployments are scaled back, surge reservations released, the node stays
cordoned and the job ends CANCELLED (or FAILED with the reason).
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from models import (
    TERMINAL_JOB_STATES,
    Deployment,
    GpuNode,
    Job,
    JobState,
    JobType,
    ScalingEvent,
    ScalingEventStatus,
    ScalingTrigger,
)
from workers import admission, cluster_errors, jobs, node_ops
from workers.domain import AdmissionError, ConflictError, InvalidRequestError
from workers.k8s import get_clients
from workers.manifests import DEPLOYMENT_ID_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE

DEFAULT_TIMEOUT_SECONDS = 1800
MAX_TIMEOUT_SECONDS = 24 * 3600
POLL_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 15.0
LIST_PAGE_SIZE = 100
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
# A re-enqueued step that has not run this long after it was due is considered lost (the worker that
# should have sent it died between commit and send); a redelivered older message may then adopt the job.
LOST_STEP_GRACE_SECONDS = 120

PHASE_CORDON = "cordon"
PHASE_PLAN = "plan"
PHASE_SURGE = "surge"
PHASE_WAIT_READY = "wait_ready"
PHASE_EVICT = "evict"
PHASE_WAIT_EMPTY = "wait_empty"


@dataclass(frozen=True)
class DrainOptions:
    force: bool = False
    delete_emptydir_data: bool = False
    allow_capacity_loss: bool = False
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    grace_period_seconds: int | None = None
    reason: str | None = None

    def to_params(self) -> dict[str, Any]:
        return {
            "force": self.force,
            "delete_emptydir_data": self.delete_emptydir_data,
            "allow_capacity_loss": self.allow_capacity_loss,
            "timeout_seconds": self.timeout_seconds,
            "grace_period_seconds": self.grace_period_seconds,
            "reason": self.reason,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> DrainOptions:
        return cls(
            force=bool(params.get("force", False)),
            delete_emptydir_data=bool(params.get("delete_emptydir_data", False)),
            allow_capacity_loss=bool(params.get("allow_capacity_loss", False)),
            timeout_seconds=int(params.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS),
            grace_period_seconds=params.get("grace_period_seconds"),
            reason=params.get("reason"),
        )


@dataclass(frozen=True)
class StepOutcome:
    """What the task does next: nothing (``countdown is None``), or send the next step with this id."""

    state: str
    countdown: float | None = None
    next_token: str | None = None


# --------------------------------------------------------------------------- pods and their classes


def _owner(pod: dict[str, Any]) -> dict[str, Any] | None:
    for ref in pod["metadata"].get("owner_references") or []:
        if ref.get("controller"):
            return ref
    return None


def _pod_ref(pod: dict[str, Any]) -> dict[str, str]:
    return {"namespace": pod["metadata"]["namespace"], "name": pod["metadata"]["name"]}


def list_node_pods(node_name: str) -> list[dict[str, Any]]:
    """Every pod bound to the node, listed page by page (limit/continue), as wire-form dicts."""
    clients = get_clients()
    pods: list[dict[str, Any]] = []
    continue_token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"field_selector": f"spec.nodeName={node_name}", "limit": LIST_PAGE_SIZE}
        if continue_token:
            kwargs["_continue"] = continue_token
        with cluster_errors.translate():
            page = clients.core.list_pod_for_all_namespaces(**kwargs, **clients.timeout)
        for item in page.items:
            pod = clients.api_client.sanitize_for_serialization(item)
            metadata = pod.setdefault("metadata", {})
            metadata["owner_references"] = metadata.get("ownerReferences") or []
            metadata.setdefault("labels", {})
            metadata.setdefault("annotations", {})
            pods.append(pod)
        continue_token = page.metadata._continue if page.metadata else None
        if not continue_token:
            return pods


def _is_finished(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _has_emptydir(pod: dict[str, Any]) -> bool:
    return any("emptyDir" in volume for volume in (pod.get("spec") or {}).get("volumes") or [])


def classify_pods(
    session: Session, pods: list[dict[str, Any]], options: DrainOptions
) -> dict[str, Any]:
    """Sort the node's pods as kubectl drain's filters do, plus our own pods grouped by deployment.

    Returns ``{"ours": {deployment_id: [pod refs]}, "foreign": [...], "skipped": [...], "blocked": [...],
    "terminating": [...]}``. ``blocked`` pods make kubectl refuse the whole drain, and so do we.
    """
    ours: dict[str, list[dict[str, str]]] = {}
    foreign: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    blocked: list[dict[str, str]] = []
    terminating: list[dict[str, str]] = []
    deployment_ids = {
        pod["metadata"]["labels"].get(DEPLOYMENT_ID_LABEL)
        for pod in pods
        if pod["metadata"]["labels"].get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE
    }
    known = _known_deployments(session, deployment_ids)
    for pod in pods:
        ref = _pod_ref(pod)
        metadata = pod["metadata"]
        owner = _owner(pod)
        if metadata.get("deletionTimestamp"):
            terminating.append(ref)
            continue
        if MIRROR_POD_ANNOTATION in metadata["annotations"]:
            skipped.append({**ref, "reason": "mirror pod (static, managed by the kubelet)"})
            continue
        if owner is not None and owner.get("kind") == "DaemonSet":
            skipped.append({**ref, "reason": "DaemonSet-managed pod (ignored, as --ignore-daemonsets)"})
            continue
        deployment_id = metadata["labels"].get(DEPLOYMENT_ID_LABEL)
        if (
            metadata["labels"].get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE
            and deployment_id in known
            and not _is_finished(pod)
        ):
            ours.setdefault(deployment_id, []).append(ref)
            continue
        if _is_finished(pod):
            foreign.append(ref)  # kubectl deletes completed pods whatever their owner
            continue
        if owner is None and not options.force:
            blocked.append({**ref, "reason": "declares no controller (use force)"})
            continue
        if _has_emptydir(pod) and not options.delete_emptydir_data:
            blocked.append({**ref, "reason": "uses emptyDir local storage (use delete_emptydir_data)"})
            continue
        foreign.append(ref)
    return {"ours": ours, "foreign": foreign, "skipped": skipped, "blocked": blocked, "terminating": terminating,
            "deployments": known}


def _known_deployments(session: Session, ids: set[str | None]) -> dict[str, Deployment]:
    valid = []
    for value in ids:
        try:
            valid.append(uuid.UUID(str(value)))
        except ValueError:
            continue
    if not valid:
        return {}
    rows = session.scalars(
        select(Deployment).where(Deployment.id.in_(valid), Deployment.deleted_at.is_(None))
    )
    return {str(row.id): row for row in rows}


def _current_replicas(namespace: str, name: str) -> tuple[int, int]:
    """(spec.replicas, status.readyReplicas) of the Kubernetes Deployment."""
    clients = get_clients()
    with cluster_errors.translate():
        obj = clients.apps.read_namespaced_deployment(name, namespace, **clients.timeout)
    return int(obj.spec.replicas or 0), int((obj.status.ready_replicas if obj.status else 0) or 0)


def _scale(namespace: str, name: str, replicas: int) -> None:
    clients = get_clients()
    with cluster_errors.translate():
        clients.apps.patch_namespaced_deployment_scale(
            name, namespace, {"spec": {"replicas": replicas}}, **clients.timeout
        )


# --------------------------------------------------------------------------- dry run


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
        desired, ready = _current_replicas(deployment.k8s_namespace, deployment.k8s_name)
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
            placement = _admit_surge(session, deployment, None, len(refs))
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


def _admit_surge(session: Session, deployment: Deployment, job_id: uuid.UUID | None, replicas: int) -> dict[str, int]:
    # A drain surge is platform-initiated and temporary (it ends as a move, not growth): no tenant quota.
    placement = admission.admit(
        session,
        tenant_id=deployment.tenant_id,
        deployment_id=deployment.id,
        job_id=job_id,
        gpu_type=deployment.gpu_type,
        gpus_per_replica=deployment.gpus_per_replica,
        replicas=replicas,
        check_quota=False,
    )
    return dict(placement.replicas_by_node)


# --------------------------------------------------------------------------- submitting


def request_drain(
    session: Session,
    *,
    node_name: str,
    options: DrainOptions,
    requested_by: str,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
) -> node_ops.NodeJobSubmitted:
    """Write the drain job (one per node: 409 ``drain_in_progress``); the caller commits, then enqueues."""
    if not 1 <= options.timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise InvalidRequestError(
            "invalid_timeout", f"timeout_seconds must be 1-{MAX_TIMEOUT_SECONDS}", {"field": "timeout_seconds"}
        )
    submitted = node_ops.request_node_job(
        session,
        node_name=node_name,
        job_type=JobType.NODE_DRAIN,
        params=options.to_params(),
        requested_by=requested_by,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
    if not submitted.replayed:
        submitted.job.progress = {"phase": PHASE_CORDON, "step_token": submitted.job.celery_task_id}
    return submitted


def request_cancel(session: Session, job_id: uuid.UUID) -> Job:
    """Ask a drain to stop at its next step (cancelling a finished job is a 409)."""
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or job.target_kind != "node":
        from workers.domain import NotFoundError

        raise NotFoundError("job_not_found", f"no admin job {job_id}", {"job_id": str(job_id)})
    if job.type != JobType.NODE_DRAIN:
        raise ConflictError("job_not_cancellable", f"a {job.type} job cannot be cancelled", {"job_id": str(job.id)})
    if JobState(job.state) in TERMINAL_JOB_STATES:
        raise ConflictError(
            "job_finished", f"job {job.id} already ended {job.state}", {"job_id": str(job.id), "state": str(job.state)}
        )
    job.cancel_requested = True
    session.flush()
    return job


# --------------------------------------------------------------------------- the step machine


class _Finished(Exception):  # noqa: N818 - control flow, not an error
    """Raised inside a step when the job reached a terminal state."""

    def __init__(self, state: str) -> None:
        self.state = state
        super().__init__(state)


class DrainStep:
    """One step of one drain job, inside one transaction that holds the job's row lock."""

    def __init__(self, session: Session, job: Job) -> None:
        self.session = session
        self.job = job
        self.options = DrainOptions.from_params(dict(job.params or {}))
        self.progress: dict[str, Any] = copy.deepcopy(dict(job.progress or {}))
        self.node = job.target_id

    # ---- bookkeeping

    def save(self) -> None:
        self.progress["updated_at"] = _now().isoformat()
        self.job.progress = copy.deepcopy(self.progress)
        self.session.flush()

    @property
    def plan(self) -> dict[str, Any]:
        return self.progress.setdefault("plan", {"deployments": [], "foreign": [], "skipped": []})

    def deadline(self) -> datetime:
        return datetime.fromisoformat(self.progress["deadline"])

    def past_deadline(self) -> bool:
        return _now() >= self.deadline()

    def refresh_counts(self) -> None:
        plan = self.plan
        total = sum(len(item["pods"]) for item in plan["deployments"]) + len(plan["foreign"])
        evicted = sum(len(item["evicted"]) for item in plan["deployments"]) + sum(
            1 for pod in plan["foreign"] if pod.get("evicted")
        )
        self.progress["pods"] = {"total": total, "evicted": evicted, "remaining": total - evicted}
        surged = [item for item in plan["deployments"] if item["surge"]]
        self.progress["replacements"] = {
            "requested": sum(item["k"] for item in surged),
            "ready": sum(item.get("replacements_ready", 0) for item in surged),
        }

    def scaling_event(self, item: dict[str, Any], before: int, after: int, status: ScalingEventStatus,
                      reason: str, **inputs: Any) -> ScalingEvent:
        event = ScalingEvent(
            deployment_id=uuid.UUID(item["deployment_id"]),
            tenant_id=item["tenant_id"],
            model_id=item["model_id"],
            trigger=ScalingTrigger.DRAIN,
            reason=reason,
            replicas_before=before,
            replicas_after=after,
            status=status,
            inputs={"node": self.node, "pods_on_node": item["k"], **inputs},
            actor=self.job.requested_by,
            job_id=self.job.id,
        )
        self.session.add(event)
        self.session.flush()
        return event

    # ---- phases

    def run(self) -> tuple[str, float | None]:
        """Advance as far as possible now; returns (phase reached, countdown or None when finished)."""
        if "deadline" not in self.progress:
            self.progress["deadline"] = (_now() + timedelta(seconds=self.options.timeout_seconds)).isoformat()
            self.progress["started_at"] = _now().isoformat()
        if self.job.cancel_requested:
            self.finish_aborted(JobState.CANCELLED, "cancelled", "the drain was cancelled; the node stays cordoned")
        phase = self.progress.get("phase", PHASE_CORDON)
        if phase == PHASE_CORDON:
            node_ops.cordon(self.session, self.node, by=f"drain:{self.job.requested_by}",
                            reason=self.options.reason or f"drain job {self.job.id}")
            phase = self.enter(PHASE_PLAN)
        if phase == PHASE_PLAN:
            countdown = self.make_plan()
            if countdown is not None:
                return PHASE_PLAN, countdown
            phase = self.enter(PHASE_SURGE)
        if phase == PHASE_SURGE:
            self.surge()
            phase = self.enter(PHASE_WAIT_READY)
        if phase == PHASE_WAIT_READY:
            if not self.replacements_ready():
                return self.wait_or_timeout(PHASE_WAIT_READY, POLL_SECONDS, "replacements_not_ready")
            phase = self.enter(PHASE_EVICT)
        if phase == PHASE_EVICT:
            if not self.evict_all():
                return self.wait_or_timeout(PHASE_EVICT, self.backoff(), "eviction_blocked")
            phase = self.enter(PHASE_WAIT_EMPTY)
        if phase == PHASE_WAIT_EMPTY:
            if not self.node_empty():
                return self.wait_or_timeout(PHASE_WAIT_EMPTY, POLL_SECONDS, "pods_still_terminating")
            self.finish_succeeded()
        raise AssertionError(f"unknown drain phase {phase!r}")

    def enter(self, phase: str) -> str:
        self.progress["phase"] = phase
        self.progress["waiting_on"] = None
        self.progress["blocked"] = None
        self.progress["eviction_attempts"] = 0
        self.save()
        return phase

    def wait_or_timeout(self, phase: str, countdown: float, timeout_code: str) -> tuple[str, float]:
        if self.past_deadline():
            waiting = self.progress.get("waiting_on") or phase
            self.finish_aborted(
                JobState.FAILED,
                timeout_code,
                f"drain timed out after {self.options.timeout_seconds}s waiting on: {waiting}",
                details={"blocked": self.progress.get("blocked"), "waiting_on": waiting},
            )
        self.save()
        return phase, countdown

    def backoff(self) -> float:
        attempts = int(self.progress.get("eviction_attempts", 0))
        return min(1.0 * 2 ** min(attempts, 6), MAX_BACKOFF_SECONDS)

    def make_plan(self) -> float | None:
        """List and classify the node's pods, claim our deployments and reserve room for their surge."""
        pods = list_node_pods(self.node)
        classes = classify_pods(self.session, pods, self.options)
        if classes["blocked"]:
            self.plan["skipped"] = classes["skipped"]
            self.finish_aborted(
                JobState.FAILED,
                "pods_not_evictable",
                "the node holds pods that cannot be evicted with these options: "
                + "; ".join(f"{p['namespace']}/{p['name']}: {p['reason']}" for p in classes["blocked"]),
                details={"blocked_pods": classes["blocked"]},
            )
        deployments: dict[str, Deployment] = classes["deployments"]
        busy = self.claim_deployments(list(classes["ours"]))
        if busy:
            self.progress["waiting_on"] = "deployments busy with other jobs: " + ", ".join(busy)
            return self.wait_or_timeout(PHASE_PLAN, POLL_SECONDS * 2, "deployments_busy")[1]
        items = []
        no_room = []
        # Reservations live in a savepoint: if any deployment has no room, they all go, while the cordon
        # and the claims written earlier in this transaction stay.
        reservations = self.session.begin_nested()
        for deployment_id, refs in sorted(classes["ours"].items()):
            deployment = deployments[deployment_id]
            desired, ready = _current_replicas(deployment.k8s_namespace, deployment.k8s_name)
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
                item["replacement_nodes"] = _admit_surge(self.session, deployment, self.job.id, len(refs))
                item["surge"] = True
            except AdmissionError as error:
                item["capacity_error"] = {"code": error.code, "message": error.message, "details": error.details}
                no_room.append(item)
            items.append(item)
        if no_room and not self.options.allow_capacity_loss:
            # Nothing evicted, nothing surged: drop this transaction's reservations, record why, stop.
            reservations.rollback()
            for item in no_room:
                self.scaling_event(item, item["desired"], item["desired"] + item["k"], ScalingEventStatus.BLOCKED,
                                   f"drain of {self.node}: no room elsewhere for {item['k']} replacement(s)",
                                   capacity_error=item["capacity_error"])
            self.plan["deployments"] = items
            self.finish_aborted(
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
        self.plan["deployments"] = items
        self.plan["foreign"] = [{**ref, "evicted": False} for ref in classes["foreign"]]
        self.plan["skipped"] = classes["skipped"]
        self.refresh_counts()
        return None

    def claim_deployments(self, deployment_ids: list[str]) -> list[str]:
        """Hold each deployment for this job (one operation at a time); returns the ones another job holds."""
        busy = []
        terminal = select(Job.id).where(Job.state.in_(tuple(TERMINAL_JOB_STATES)))
        for deployment_id in deployment_ids:
            claimed = self.session.execute(
                update(Deployment)
                .where(
                    Deployment.id == uuid.UUID(deployment_id),
                    or_(
                        Deployment.active_job_id.is_(None),
                        Deployment.active_job_id == self.job.id,
                        Deployment.active_job_id.in_(terminal),
                    ),
                )
                .values(active_job_id=self.job.id)
                .returning(Deployment.id)
            ).first()
            if claimed is None:
                busy.append(deployment_id)
        return busy

    def surge(self) -> None:
        for item in self.plan["deployments"]:
            if not item["surge"] or item["surged"]:
                continue
            _scale(item["namespace"], item["k8s_name"], item["desired"] + item["k"])
            event = self.scaling_event(
                item, item["desired"], item["desired"] + item["k"], ScalingEventStatus.SUCCEEDED,
                f"drain of {self.node}: surge {item['k']} replacement(s) before evicting (make-before-break)",
                replacement_nodes=item.get("replacement_nodes", {}),
            )
            item["surged"] = True
            item["surge_event_id"] = str(event.id)
        self.refresh_counts()
        self.save()

    def replacements_ready(self) -> bool:
        waiting = []
        for item in self.plan["deployments"]:
            if not item["surged"] or item["returned"]:
                continue
            _, ready = _current_replicas(item["namespace"], item["k8s_name"])
            item["replacements_ready"] = max(0, min(ready - item["desired"], item["k"]))
            if ready < item["desired"] + item["k"]:
                waiting.append(f"{item['name']} Ready {ready}/{item['desired'] + item['k']}")
        self.refresh_counts()
        self.progress["waiting_on"] = ("replacements becoming Ready: " + ", ".join(waiting)) if waiting else None
        self.save()
        return not waiting

    def evict_all(self) -> bool:
        """One pass of evictions; True when every planned pod is gone or going."""
        present = {(pod["metadata"]["namespace"], pod["metadata"]["name"]): pod for pod in list_node_pods(self.node)}
        blocked: list[dict[str, str]] = []
        for item in self.plan["deployments"]:
            for pod_name in item["pods"]:
                if pod_name in item["evicted"]:
                    continue
                outcome = self.evict_one(present, item["namespace"], pod_name)
                if outcome is not None:
                    blocked.append(outcome)
                    break  # the budget counts this deployment's pods together: retry it on the next pass
                item["evicted"].append(pod_name)
                if item["surged"]:
                    # Scale down by one at once: the ReplicaSet removes the replacement it is about to create
                    # for the evicted pod (not Ready), and the PDB recomputes against the lower count.
                    remaining = item["k"] - len(item["evicted"])
                    _scale(item["namespace"], item["k8s_name"], item["desired"] + remaining)
                self.save_partial()
            if len(item["evicted"]) == item["k"] and not item["returned"]:
                self.return_deployment(item)
        for pod in self.plan["foreign"]:
            if pod.get("evicted"):
                continue
            outcome = self.evict_one(present, pod["namespace"], pod["name"])
            if outcome is not None:
                blocked.append(outcome)
                continue
            pod["evicted"] = True
        self.refresh_counts()
        if blocked:
            self.progress["eviction_attempts"] = int(self.progress.get("eviction_attempts", 0)) + 1
            self.progress["blocked"] = blocked
            self.progress["waiting_on"] = "evictions blocked by PodDisruptionBudget: " + "; ".join(
                f"{b['namespace']}/{b['name']}: {b['message']}" for b in blocked
            )
        else:
            self.progress["blocked"] = None
            self.progress["waiting_on"] = None
        self.save()
        return not blocked

    def save_partial(self) -> None:
        self.refresh_counts()
        self.save()

    def evict_one(self, present: dict[tuple[str, str], dict[str, Any]], namespace: str, name: str) -> dict | None:
        """Evict one pod; None when it is gone or going, else the blocking budget's message."""
        pod = present.get((namespace, name))
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return None
        clients = get_clients()
        body: dict[str, Any] = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        if self.options.grace_period_seconds is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": self.options.grace_period_seconds}
        try:
            with cluster_errors.translate():
                clients.core.create_namespaced_pod_eviction(name, namespace, body, **clients.timeout)
        except cluster_errors.ClusterError as error:
            if error.status == 404:
                return None
            if error.status == 429:
                return {"namespace": namespace, "name": name, "message": _budget_message(error)}
            raise
        return None

    def return_deployment(self, item: dict[str, Any]) -> None:
        """All old pods of the deployment are evicted: settle it at its desired count and move its reservations."""
        if item["surged"]:
            _scale(item["namespace"], item["k8s_name"], item["desired"])
            self.scaling_event(
                item, item["desired"] + item["k"], item["desired"], ScalingEventStatus.SUCCEEDED,
                f"drain of {self.node}: old replicas evicted, back to {item['desired']}",
            )
        # The replicas now run where the surge reserved room: the surge rows stay (they now describe the
        # moved replicas) and the reservations that pointed at the drained node are given back.
        admission.release_replicas(self.session, uuid.UUID(item["deployment_id"]), item["k"], node_name=self.node)
        item["returned"] = True

    def node_empty(self) -> bool:
        remaining = []
        for pod in list_node_pods(self.node):
            metadata = pod["metadata"]
            owner = _owner(pod)
            if MIRROR_POD_ANNOTATION in metadata["annotations"]:
                continue
            if owner is not None and owner.get("kind") == "DaemonSet":
                continue
            remaining.append(f"{metadata['namespace']}/{metadata['name']}")
        self.progress["waiting_on"] = ("pods leaving the node: " + ", ".join(remaining[:10])) if remaining else None
        self.save()
        return not remaining

    # ---- endings

    def undo_surges(self) -> list[str]:
        """Scale every surged, not yet returned deployment back and drop its unused surge reservations."""
        undone = []
        for item in self.plan.get("deployments", []):
            if item.get("returned"):
                continue
            moved = len(item.get("evicted", []))
            if item.get("surged"):
                with_moved = item["desired"]
                _scale(item["namespace"], item["k8s_name"], with_moved)
                self.scaling_event(
                    item, item["desired"] + item["k"] - moved, with_moved, ScalingEventStatus.SUCCEEDED,
                    f"drain of {self.node} stopped: surge withdrawn",
                )
                undone.append(item["name"])
            deployment_id = uuid.UUID(item["deployment_id"])
            admission.release_replicas(self.session, deployment_id, moved, node_name=self.node)
            admission.release_replicas(self.session, deployment_id, item["k"] - moved, job_id=self.job.id)
            item["returned"] = True
        return undone

    def finish_aborted(self, state: JobState, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        undone = self.undo_surges()
        self.progress["phase"] = "cancelled" if state == JobState.CANCELLED else "failed"
        self.progress["waiting_on"] = None
        self.refresh_counts()
        self.save()
        error = {"code": code, "message": message, "retryable": False, "details": {**(details or {}),
                                                                                 "surges_withdrawn": undone}}
        if state == JobState.CANCELLED:
            jobs.cancel(self.session, self.job.id, message)
            self.session.execute(update(Job).where(Job.id == self.job.id).values(error=error))
        else:
            jobs.fail(self.session, self.job.id, error)
        raise _Finished(str(state))

    def finish_succeeded(self) -> None:
        self.progress["phase"] = "done"
        self.progress["waiting_on"] = None
        self.refresh_counts()
        self.save()
        plan = self.plan
        summary = {
            "node": self.node,
            "cordoned": True,
            "deployments": [
                {"deployment_id": item["deployment_id"], "name": item["name"], "replicas_moved": len(item["evicted"]),
                 "make_before_break": item["surge"], "replicas_desired": item["desired"]}
                for item in plan["deployments"]
            ],
            "foreign_pods_evicted": [f"{p['namespace']}/{p['name']}" for p in plan["foreign"]],
            "skipped_pods": plan["skipped"],
            "pods": self.progress.get("pods"),
            "duration_seconds": round(
                (_now() - datetime.fromisoformat(self.progress["started_at"])).total_seconds(), 1
            ),
        }
        jobs.succeed(self.session, self.job.id, summary)
        raise _Finished(str(JobState.SUCCEEDED))


def _budget_message(error: cluster_errors.ClusterError) -> str:
    """The DisruptionBudget cause ("The disruption budget X needs N healthy pods ...") if the body has one."""
    cause = error.__cause__
    body = getattr(cause, "body", None)
    if body:
        import json

        try:
            payload = json.loads(body)
        except (TypeError, ValueError):
            payload = {}
        for item in (payload.get("details") or {}).get("causes") or []:
            if item.get("reason") == "DisruptionBudget" and item.get("message"):
                return f"{payload.get('message', error.message)} {item['message']}"
    return error.message


def _now() -> datetime:
    return datetime.now(UTC)


def _seconds_until_adoptable(job: Job, step_token: str) -> float:
    """0 if ``step_token`` may run the job's next step now, else how long until it may.

    Only the latest scheduled step acts. An older message (a redelivery after a worker died) may adopt the
    job once the latest step is overdue by LOST_STEP_GRACE_SECONDS: that step's message was lost (the
    worker died between committing the step and sending the next message).
    """
    progress = job.progress or {}
    current = progress.get("step_token") or job.celery_task_id
    if current == step_token:
        return 0.0
    due_at = progress.get("step_due_at")
    if due_at is None:
        return float(LOST_STEP_GRACE_SECONDS)
    adoptable_at = datetime.fromisoformat(due_at) + timedelta(seconds=LOST_STEP_GRACE_SECONDS)
    return max((adoptable_at - _now()).total_seconds(), 0.0)


def run_step(session: Session, job_id: uuid.UUID | str, step_token: str) -> StepOutcome:
    """Run one step of the drain ``job_id``; commits. The task sends the next step when ``countdown`` is set.

    A message that cannot act now is never just dropped while the job is active, because it may be the only
    one left: if the job row is locked (another delivery mid-step, or a cancel being written) it comes back
    in a second; if a newer step owns the job it comes back when that step would count as lost.
    """
    job_uuid = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    job = session.scalar(select(Job).where(Job.id == job_uuid).with_for_update(skip_locked=True))
    if job is None:
        session.rollback()
        state = session.scalar(select(Job.state).where(Job.id == job_uuid))
        session.rollback()
        if state is None or JobState(state) in TERMINAL_JOB_STATES:
            return StepOutcome("skipped")
        return StepOutcome("deferred", countdown=POLL_SECONDS / 2, next_token=step_token)
    if JobState(job.state) in TERMINAL_JOB_STATES:
        session.rollback()
        return StepOutcome("skipped")
    wait = _seconds_until_adoptable(job, step_token)
    if wait > 0:
        session.rollback()
        return StepOutcome("deferred", countdown=wait + 1.0, next_token=step_token)
    if job.state != JobState.RUNNING:
        jobs.start(session, job.id)
        session.refresh(job)
    step = DrainStep(session, job)
    try:
        phase, countdown = step.run()
    except _Finished as finished:
        _release_claims(session, job_uuid)
        session.commit()
        return StepOutcome(finished.state)
    except cluster_errors.TransientClusterError as error:
        session.rollback()
        return _after_transient_error(session, job_uuid, error)
    except cluster_errors.PermanentClusterError as error:
        session.rollback()
        return _after_permanent_error(session, job_uuid, error)
    next_token = str(uuid.uuid4())
    step.progress["step_token"] = next_token
    step.progress["step_due_at"] = (_now() + timedelta(seconds=countdown or 0)).isoformat()
    step.save()
    session.commit()
    return StepOutcome(phase, countdown=countdown, next_token=next_token)


def _release_claims(session: Session, job_id: uuid.UUID) -> None:
    session.execute(update(Deployment).where(Deployment.active_job_id == job_id).values(active_job_id=None))


def _after_transient_error(session: Session, job_id: uuid.UUID, error: cluster_errors.ClusterError) -> StepOutcome:
    """Keep the phase; try the step again with backoff until the deadline, then fail cleanly."""
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or JobState(job.state) in TERMINAL_JOB_STATES:
        session.rollback()
        return StepOutcome("skipped")
    step = DrainStep(session, job)
    failures = int(step.progress.get("transient_errors", 0)) + 1
    step.progress["transient_errors"] = failures
    step.progress["last_error"] = error.to_job_error()
    if "deadline" in step.progress and step.past_deadline():
        return _abort_with_cleanup(session, step, error)
    countdown = error.retry_after or min(1.0 * 2 ** min(failures, 5), MAX_BACKOFF_SECONDS)
    next_token = str(uuid.uuid4())
    step.progress["step_token"] = next_token
    step.progress["step_due_at"] = (_now() + timedelta(seconds=countdown)).isoformat()
    step.save()
    session.commit()
    return StepOutcome(str(step.progress.get("phase")), countdown=countdown, next_token=next_token)


def _after_permanent_error(session: Session, job_id: uuid.UUID, error: cluster_errors.ClusterError) -> StepOutcome:
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or JobState(job.state) in TERMINAL_JOB_STATES:
        session.rollback()
        return StepOutcome("skipped")
    return _abort_with_cleanup(session, DrainStep(session, job), error)


def _abort_with_cleanup(session: Session, step: DrainStep, error: cluster_errors.ClusterError) -> StepOutcome:
    try:
        step.finish_aborted(JobState.FAILED, error.code, error.message)
    except _Finished as finished:
        _release_claims(session, step.job.id)
        session.commit()
        return StepOutcome(finished.state)
    except cluster_errors.ClusterError as cleanup_error:
        # The cluster is still failing: record the failure without the scale-back (the health monitor
        # reconciles replicas from desired state later) rather than leaving the job hanging.
        session.rollback()
        jobs.fail(session, step.job.id, {**error.to_job_error(), "details": {"cleanup_error": str(cleanup_error)}})
        _release_claims(session, step.job.id)
        session.commit()
        return StepOutcome(str(JobState.FAILED))
    raise AssertionError("finish_aborted always raises")

