"""Recovery of unhealthy deployments: which step to take, when, and when to give up.

The ladder, per recovery episode (from the first action until the deployment is seen healthy again):
- pods crash-looping, OOM-killed, failing to pull or to start, or not ready past the model-load
  deadline: delete those pods so their ReplicaSet replaces them (same replica count, so never more
  GPUs than admitted); the last attempt of a multi-replica deployment is a rolling restart through the
  ordinary restart job instead;
- pods on a NotReady node: move them, i.e. first reserve room for them on Ready nodes through admission
  (the reservation moves, the tenant's total is unchanged) and only then force-delete them; no room ->
  a ``blocked`` event and nothing is deleted;
- attempts are spaced by exponential backoff and capped; once the last one has had its time, a
  deployment with no ready replica is FAILED with the reason (one still serving stays DEGRADED).

Every step is a ``scaling_events`` row with trigger ``recovery`` whose ``inputs`` carry the attempt
number and the sweep's clock; the latest such row per deployment *is* the recovery state, so a
restarted worker (or a second beat) picks up exactly where the last sweep left off.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from models import GpuReservation, ScalingEvent, ScalingEventStatus, ScalingTrigger
from workers import admission
from workers.cluster_errors import ClusterError, call, is_status
from workers.diagnosis import Diagnosis, PodView, Reason

RECOVERY_ACTOR = "health_monitor"


class Outcome(enum.StrEnum):
    ATTEMPTED = "attempted"
    BLOCKED = "blocked"
    GAVE_UP = "gave_up"
    RECOVERED = "recovered"


class Step(enum.StrEnum):
    DELETE_PODS = "delete_pods"
    MOVE_PODS = "move_pods"
    RESTART = "restart"


@dataclass(frozen=True)
class RecoveryPolicy:
    max_attempts: int = 3
    base_backoff_seconds: float = 60.0
    max_backoff_seconds: float = 600.0

    def backoff_after(self, attempt: int) -> float:
        """Seconds to wait after attempt ``attempt`` (1-based) before the next one, or before giving up."""
        return min(self.base_backoff_seconds * 2 ** max(attempt - 1, 0), self.max_backoff_seconds)


@dataclass(frozen=True)
class RecoveryState:
    """Where a deployment stands in its current recovery episode (attempt 0 = no episode open)."""

    attempts: int = 0
    last_at: float | None = None
    outcome: Outcome | None = None
    reason: str | None = None  # what the last step was treating

    @property
    def episode_open(self) -> bool:
        return self.outcome is not None and self.outcome != Outcome.RECOVERED

    @property
    def gave_up(self) -> bool:
        return self.outcome == Outcome.GAVE_UP


@dataclass(frozen=True)
class Decision:
    """What to do for one deployment this sweep."""

    kind: str  # "none" | "wait" | "act" | "give_up" | "close"
    step: Step | None = None
    attempt: int = 0
    pods: tuple[PodView, ...] = field(default_factory=tuple)
    note: str = ""


NOTHING = Decision("none")


def load_states(session: Session) -> dict[uuid.UUID, RecoveryState]:
    """The latest recovery event per deployment, as states (one query for all deployments).

    Ordered by the sweep clock stored in ``inputs`` rather than ``created_at``: the database clock is
    per transaction, and the sweep's own clock is what the backoff is measured in.
    """
    rows = session.execute(
        select(ScalingEvent.deployment_id, ScalingEvent.inputs)
        .ext(distinct_on(ScalingEvent.deployment_id))
        .where(
            ScalingEvent.trigger == ScalingTrigger.RECOVERY,
            ScalingEvent.deployment_id.is_not(None),
            ScalingEvent.inputs.has_key("recovery_outcome"),
        )
        .order_by(
            ScalingEvent.deployment_id,
            ScalingEvent.inputs["at"].as_float().desc(),
            ScalingEvent.created_at.desc(),
        )
    ).all()
    states: dict[uuid.UUID, RecoveryState] = {}
    for deployment_id, inputs in rows:
        try:
            outcome = Outcome(inputs.get("recovery_outcome"))
        except ValueError:
            continue
        attempts = 0 if outcome == Outcome.RECOVERED else int(inputs.get("attempt") or 0)
        reason = (inputs.get("diagnosis") or {}).get("reason")
        states[deployment_id] = RecoveryState(attempts, float(inputs.get("at") or 0.0), outcome, reason)
    return states


def give_up_reason(diagnosis: Diagnosis, state: RecoveryState) -> str:
    """The reason a deployment fails with: today's symptom, unless it is only the generic "no progress"
    that replaced pods show, in which case the cause the episode was treating is the better answer."""
    current = diagnosis.reason
    if current not in (None, Reason.PROGRESS_DEADLINE_EXCEEDED, Reason.NOT_IN_CLUSTER):
        return current.value
    return state.reason or (current.value if current else "create_deadline_exceeded")


def choose_step(
    diagnosis: Diagnosis, attempt: int, policy: RecoveryPolicy, *, replicas: int, can_restart: bool
) -> Step:
    if diagnosis.reason == Reason.NODE_NOT_READY:
        return Step.MOVE_PODS
    if diagnosis.reason == Reason.PROGRESS_DEADLINE_EXCEEDED and can_restart:
        return Step.RESTART
    # A rolling restart of a single replica would need a surge replica beyond the admitted GPUs; deleting
    # its pod is the same restart without the extra GPU.
    if attempt >= policy.max_attempts and replicas > 1 and can_restart:
        return Step.RESTART
    return Step.DELETE_PODS


def target_pods(diagnosis: Diagnosis, step: Step) -> tuple[PodView, ...]:
    if step == Step.RESTART:
        return ()
    if diagnosis.reason is None:
        return ()
    pods = diagnosis.pods_with(diagnosis.reason)
    if not pods and diagnosis.reason == Reason.PROGRESS_DEADLINE_EXCEEDED:
        # No pod-level cause: recycle the ones that are not ready.
        pods = [problem.pod for problem in diagnosis.problems]
    return tuple(pods)


def decide(
    diagnosis: Diagnosis,
    state: RecoveryState,
    policy: RecoveryPolicy,
    now: float,
    *,
    replicas: int,
    can_restart: bool,
    stuck_creating: bool,
) -> Decision:
    """The next recovery move for one deployment (pure; the caller executes it)."""
    if diagnosis.status in ("RUNNING", "STOPPED"):
        return Decision("close") if state.episode_open else NOTHING
    if state.gave_up or diagnosis.status == "FAILED":
        return NOTHING
    if not diagnosis.recoverable:
        if stuck_creating:
            return Decision("give_up", note="still not serving after the create deadline")
        return NOTHING
    since_last = now - state.last_at if state.last_at is not None else 0.0
    if state.attempts and since_last < policy.backoff_after(state.attempts):
        return Decision("wait", attempt=state.attempts)
    if state.attempts >= policy.max_attempts:
        return Decision("give_up", attempt=state.attempts, note=f"after {state.attempts} recovery attempts")
    attempt = state.attempts + 1
    step = choose_step(diagnosis, attempt, policy, replicas=replicas, can_restart=can_restart)
    pods = target_pods(diagnosis, step)
    if step != Step.RESTART and not pods:
        return NOTHING
    return Decision("act", step=step, attempt=attempt, pods=pods)


def event_row(
    *,
    deployment: Any,
    outcome: Outcome,
    status: ScalingEventStatus,
    reason: str,
    now: float,
    attempt: int,
    diagnosis: Diagnosis | None,
    step: Step | None = None,
    pods: Iterable[str] = (),
    job_id: uuid.UUID | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``scaling_events`` row (as a dict for one bulk INSERT) recording a recovery step."""
    inputs: dict[str, Any] = {
        "recovery_outcome": outcome.value,
        "attempt": attempt,
        "at": now,
        "step": step.value if step else None,
        "pods": sorted(pods),
        "diagnosis": None
        if diagnosis is None
        else {
            "status": diagnosis.status,
            "reason": diagnosis.reason.value if diagnosis.reason else None,
            "message": diagnosis.message,
            "ready_replicas": diagnosis.ready_replicas,
        },
    }
    inputs.update(extra or {})
    return {
        "id": uuid.uuid4(),
        "deployment_id": deployment.id,
        "tenant_id": deployment.tenant_id,
        "model_id": deployment.model_id,
        "trigger": ScalingTrigger.RECOVERY,
        "reason": reason,
        "replicas_before": deployment.replicas_desired,
        "replicas_after": deployment.replicas_desired,
        "status": status,
        "inputs": inputs,
        "actor": RECOVERY_ACTOR,
        "job_id": job_id,
    }


# ----------------------------------------------------------------------------------------------- steps
def delete_pods(clients: Any, pods: Iterable[PodView], *, force: bool = False) -> list[str]:
    """Delete pods so their ReplicaSet replaces them; a pod already gone counts as deleted.

    ``force`` (grace period 0) is for pods on a NotReady node: no kubelet will ever confirm a graceful
    stop there, so the pod would otherwise sit in Terminating and its replacement would never start.
    """
    deleted = []
    for pod in pods:
        try:
            call(
                clients.core.delete_namespaced_pod,
                pod.name,
                pod.namespace,
                grace_period_seconds=0 if force else None,
                **clients.timeout,
            )
        except ClusterError as error:
            if not is_status(error, 404):
                raise
        deleted.append(pod.name)
    return deleted


def reserve_moved_replicas(session: Session, deployment: Any, pods: Iterable[PodView]) -> dict[str, Any]:
    """Move the reservations of pods leaving NotReady nodes onto Ready nodes, or raise AdmissionError.

    The new room is admitted first (inside the caller's transaction and the admission lock, so nobody
    else can take it), then as many replicas are released on the dead nodes: the deployment's admitted
    GPUs and the tenant's total stay exactly the same, so the quota is not checked a second time.
    """
    moving = list(pods)
    placement = admission.admit_replicas(session, deployment, replicas=len(moving), check_quota=False)
    to_release: dict[str, int] = {}
    for pod in moving:
        if pod.node:
            to_release[pod.node] = to_release.get(pod.node, 0) + 1
    rows = session.execute(
        select(GpuReservation)
        .where(
            GpuReservation.deployment_id == deployment.id,
            GpuReservation.released_at.is_(None),
            GpuReservation.node_name.in_(sorted(to_release)),
        )
        .with_for_update()
    ).scalars()
    for row in rows:
        take = min(row.replicas, to_release.get(row.node_name, 0))
        if take <= 0:
            continue
        to_release[row.node_name] -= take
        if take == row.replicas:
            row.released_at = func.now()
        else:
            row.replicas -= take
            row.gpus = row.replicas * deployment.gpus_per_replica
    session.flush()
    return {"placed_on": dict(placement.replicas_by_node)}
