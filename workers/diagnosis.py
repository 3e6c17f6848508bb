"""Why a deployment is not healthy, read from its pods, its Kubernetes Deployment and the nodes.

Pure functions over the raw JSON objects the list calls return (dicts, not client models: turning ten
thousand pods into ``V1Pod`` objects would cost more than the whole sweep). The health monitor feeds
them one deployment at a time; the result names one machine-readable reason, a human message that
quotes the cluster (the scheduler's own words for an unschedulable pod), and the pods to act on.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models import FINISHED_POD_PHASES
from workers.manifests import GPU_RESOURCE


class Reason(enum.StrEnum):
    WAITING_FOR_GPUS = "waiting_for_gpus"
    IMAGE_PULL_FAILURE = "image_pull_failure"
    CRASH_LOOP = "crash_loop"
    OOM_KILLED = "oom_killed"
    MODEL_LOAD_TIMEOUT = "model_load_timeout"
    PROGRESS_DEADLINE_EXCEEDED = "progress_deadline_exceeded"
    NODE_NOT_READY = "node_not_ready"
    CONFIG_ERROR = "config_error"
    NOT_IN_CLUSTER = "missing_in_cluster"  # the name workers.observe uses too


# When several pods are sick for different reasons, the deployment shows the most telling one: a dead
# node explains crashing or unready pods on it, an OOM is more specific than "crash loop", and waiting
# for GPUs is the least alarming (it resolves itself when capacity frees up).
REASON_PRIORITY: tuple[Reason, ...] = (
    Reason.NOT_IN_CLUSTER,
    Reason.NODE_NOT_READY,
    Reason.OOM_KILLED,
    Reason.CRASH_LOOP,
    Reason.IMAGE_PULL_FAILURE,
    Reason.CONFIG_ERROR,
    Reason.MODEL_LOAD_TIMEOUT,
    Reason.PROGRESS_DEADLINE_EXCEEDED,
    Reason.WAITING_FOR_GPUS,
)

# Reasons a recovery step (deleting or moving pods, a restart) can plausibly fix. Waiting for GPUs is
# not one: deleting a Pending pod frees nothing, and creating more would exceed the admitted GPUs.
RECOVERABLE_REASONS = frozenset({
    Reason.CRASH_LOOP,
    Reason.OOM_KILLED,
    Reason.IMAGE_PULL_FAILURE,
    Reason.CONFIG_ERROR,
    Reason.MODEL_LOAD_TIMEOUT,
    Reason.PROGRESS_DEADLINE_EXCEEDED,
    Reason.NODE_NOT_READY,
})

_IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
_CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


def parse_time(text: str | None) -> float | None:
    """An RFC 3339 timestamp from the API as epoch seconds (None when absent or malformed)."""
    if not text:
        return None
    try:
        # fromisoformat reads the API's "Z" itself; timestamp() of an aware time needs no conversion to UTC first.
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def pod_gpus(pod: Mapping[str, Any]) -> int:
    """GPUs the pod holds: the sum of its containers' ``nvidia.com/gpu`` limits (requests equal limits)."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        value = (resources.get("limits") or {}).get(GPU_RESOURCE) or (resources.get("requests") or {}).get(
            GPU_RESOURCE
        )
        if value is not None:
            try:
                total += int(str(value))
            except ValueError:
                continue
    return total


@dataclass(frozen=True)
class PodView:
    """The handful of pod facts the sweeps use, extracted once per pod."""

    uid: str
    name: str
    namespace: str
    labels: Mapping[str, str]
    node: str | None
    phase: str
    ready: bool
    restarts: int
    gpus: int
    deleting: bool
    created_at: float | None
    started_at: float | None  # when the serving container last started running
    waiting_reason: str | None
    waiting_message: str | None
    terminated_reason: str | None  # current or last termination
    terminated_message: str | None
    unschedulable_message: str | None

    @property
    def reason(self) -> str | None:
        """The pod's most specific reason, as kubectl's STATUS column would show it."""
        if self.deleting:
            return "Terminating"
        if self.unschedulable_message is not None:
            return "Unschedulable"
        return self.waiting_reason or (self.terminated_reason if self.phase == "Failed" else None)

    @property
    def message(self) -> str | None:
        return self.unschedulable_message or self.waiting_message or self.terminated_message

    @property
    def live(self) -> bool:
        return self.phase not in FINISHED_POD_PHASES


def is_pod_ready(pod: Mapping[str, Any] | None) -> bool:
    """Whether the pod (None: gone) reports the Ready condition True."""
    conditions = ((pod or {}).get("status") or {}).get("conditions") or ()
    return any(condition.get("type") == "Ready" and condition.get("status") == "True" for condition in conditions)


def pod_view(pod: Mapping[str, Any]) -> PodView:
    """Extract a :class:`PodView` from a raw pod object."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    # The two conditions read, picked out in one pass (this runs for every pod of every sweep).
    ready = False
    unschedulable_message = None
    for condition in status.get("conditions") or ():
        kind = condition.get("type")
        if kind == "Ready":
            ready = condition.get("status") == "True"
        elif kind == "PodScheduled":
            unschedulable = condition.get("status") == "False" and condition.get("reason") == "Unschedulable"
            unschedulable_message = (condition.get("message") or "0 nodes are available") if unschedulable else None
    restarts = 0
    started_at = None
    waiting_reason = waiting_message = terminated_reason = terminated_message = None
    for container_status in status.get("containerStatuses") or []:
        restarts += int(container_status.get("restartCount") or 0)
        state = container_status.get("state") or {}
        last_state = container_status.get("lastState") or {}
        if "waiting" in state and waiting_reason is None:
            waiting_reason = state["waiting"].get("reason")
            waiting_message = state["waiting"].get("message")
        if "running" in state:
            started_at = parse_time(state["running"].get("startedAt")) or started_at
        terminated = state.get("terminated") or last_state.get("terminated")
        if terminated and terminated_reason is None:
            terminated_reason = terminated.get("reason")
            terminated_message = terminated.get("message")
    return PodView(
        uid=str(metadata.get("uid") or ""),
        name=str(metadata.get("name") or ""),
        namespace=str(metadata.get("namespace") or ""),
        labels=metadata.get("labels") or {},
        node=spec.get("nodeName"),
        phase=str(status.get("phase") or "Pending"),
        ready=ready,
        restarts=restarts,
        gpus=pod_gpus(pod),
        deleting=bool(metadata.get("deletionTimestamp")),
        created_at=parse_time(metadata.get("creationTimestamp")),
        started_at=started_at,
        waiting_reason=waiting_reason,
        waiting_message=waiting_message,
        terminated_reason=terminated_reason,
        terminated_message=terminated_message,
        unschedulable_message=unschedulable_message,
    )


@dataclass(frozen=True)
class PodProblem:
    pod: PodView
    reason: Reason
    message: str


def diagnose_pod(
    pod: PodView, node_ready: Mapping[str, str], now: float, model_load_deadline_seconds: float
) -> PodProblem | None:
    """What is wrong with one pod, or None if it is fine (or simply still starting within its deadline)."""
    if pod.deleting or pod.phase == "Succeeded":
        return None
    if pod.node and node_ready.get(pod.node, "Ready") != "Ready":
        state = node_ready.get(pod.node)
        return PodProblem(pod, Reason.NODE_NOT_READY, f"pod {pod.name} is on node {pod.node}, which is {state}")
    if pod.unschedulable_message is not None:
        return PodProblem(pod, Reason.WAITING_FOR_GPUS, pod.unschedulable_message)
    waiting = pod.waiting_reason or ""
    if waiting in _IMAGE_PULL_REASONS:
        return PodProblem(pod, Reason.IMAGE_PULL_FAILURE, f"{waiting}: {pod.waiting_message or 'image pull failed'}")
    if waiting in _CONFIG_REASONS:
        return PodProblem(pod, Reason.CONFIG_ERROR, f"{waiting}: {pod.waiting_message or 'container config error'}")
    if pod.terminated_reason == "OOMKilled" and (waiting == "CrashLoopBackOff" or pod.phase == "Failed"):
        return PodProblem(pod, Reason.OOM_KILLED, f"pod {pod.name} was OOMKilled ({pod.restarts} restarts)")
    if waiting == "CrashLoopBackOff" or pod.phase == "Failed":
        detail = pod.terminated_message or pod.waiting_message or pod.terminated_reason or "container exits"
        message = f"pod {pod.name} is crash-looping ({pod.restarts} restarts): {detail}"
        return PodProblem(pod, Reason.CRASH_LOOP, message)
    if pod.phase == "Running" and not pod.ready:
        since = pod.started_at or pod.created_at
        if since is not None and now - since > model_load_deadline_seconds:
            waited = int(now - since)
            return PodProblem(
                pod,
                Reason.MODEL_LOAD_TIMEOUT,
                f"pod {pod.name} has not become ready {waited}s after starting "
                f"(deadline {int(model_load_deadline_seconds)}s)",
            )
    return None


def progress_deadline_exceeded(k8s_deployment: Mapping[str, Any] | None) -> str | None:
    """The Deployment controller's message when ``Progressing=False/ProgressDeadlineExceeded``."""
    if not k8s_deployment:
        return None
    for condition in (k8s_deployment.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("status") == "False"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return condition.get("message") or "ProgressDeadlineExceeded"
    return None


@dataclass(frozen=True)
class Diagnosis:
    """The observed state of one deployment."""

    status: str  # a DeploymentStatus value
    ready_replicas: int
    reason: Reason | None
    message: str | None
    problems: list[PodProblem] = field(default_factory=list)

    @property
    def recoverable(self) -> bool:
        return self.reason in RECOVERABLE_REASONS

    def pods_with(self, reason: Reason) -> list[PodView]:
        return [problem.pod for problem in self.problems if problem.reason == reason]


def diagnose_deployment(
    *,
    current_status: str,
    desired_replicas: int,
    k8s_deployment: Mapping[str, Any] | None,
    pods: Sequence[PodView],
    node_ready: Mapping[str, str],
    now: float,
    model_load_deadline_seconds: float,
) -> Diagnosis:
    """Status, ready count and the reason for one deployment, from the cluster's view of it.

    ``current_status`` matters only for the not-yet-ready case: a deployment that never served stays
    CREATING, one that served before becomes DEGRADED. Readiness counts ready pods that are not being
    deleted, so a replica on a dead node stops counting as soon as Kubernetes marks it unready.
    """
    ready = sum(1 for pod in pods if pod.ready and not pod.deleting)
    problems = [
        problem
        for pod in pods
        if (problem := diagnose_pod(pod, node_ready, now, model_load_deadline_seconds)) is not None
    ]
    reason: Reason | None = None
    message: str | None = None
    if k8s_deployment is None:
        reason, message = Reason.NOT_IN_CLUSTER, "the Kubernetes Deployment does not exist"
    else:
        for candidate in REASON_PRIORITY:
            matching = [problem for problem in problems if problem.reason == candidate]
            if matching:
                reason = candidate
                extra = f" (and {len(matching) - 1} more pods)" if len(matching) > 1 else ""
                message = matching[0].message + extra
                break
        if reason is None:
            deadline_message = progress_deadline_exceeded(k8s_deployment)
            if deadline_message is not None and ready < desired_replicas:
                reason, message = Reason.PROGRESS_DEADLINE_EXCEEDED, deadline_message
    if ready >= desired_replicas and k8s_deployment is not None:
        # Fully serving: a sick surplus pod (e.g. a rolling update's new one) is not a deployment problem. At zero
        # replicas that is a deployment stopped on purpose, which serves nothing.
        settled = "STOPPED" if desired_replicas == 0 else "RUNNING"
        return Diagnosis(settled, ready, None, None, problems)
    if reason is None:
        missing = desired_replicas - ready
        message = f"{ready}/{desired_replicas} replicas ready; {missing} starting"
    if current_status in ("CREATING", "PENDING"):
        # Until it has served once, a deployment is still being created, however far along it is.
        return Diagnosis("CREATING", ready, reason, message, problems)
    if current_status in ("SCALING", "RESTARTING") and reason is None:
        # The operation's new replicas are still starting: that is the operation, not a degradation.
        return Diagnosis(current_status, ready, None, message, problems)
    if current_status == "FAILED":
        # Given up on: only a fully healthy cluster state brings it back (see above), not a partial one.
        return Diagnosis("FAILED", ready, reason, message, problems)
    return Diagnosis("DEGRADED", ready, reason, message, problems)
