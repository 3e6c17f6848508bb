"""Diagnosis of unhealthy deployments from raw pod / Deployment objects (no cluster needed)."""

from __future__ import annotations

from typing import Any

from workers.diagnosis import Reason, diagnose_deployment, diagnose_pod, pod_view

NOW = 1_800_000_000.0
T0 = "2027-01-15T08:00:00Z"  # 1_800_000_000 - 0


def pod(
    name: str = "m-abc",
    *,
    node: str | None = "l40s-0",
    phase: str = "Running",
    ready: bool = True,
    waiting: tuple[str, str] | None = None,
    last_terminated: str | None = None,
    restarts: int = 0,
    unschedulable: str | None = None,
    started: str | None = T0,
    deleting: bool = False,
    gpus: int = 1,
) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if unschedulable:
        conditions.append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}
        )
    state: dict[str, Any] = {}
    if waiting:
        state["waiting"] = {"reason": waiting[0], "message": waiting[1]}
    elif phase == "Running":
        state["running"] = {"startedAt": started}
    container_status = {"name": "vllm", "ready": ready, "restartCount": restarts, "state": state}
    if last_terminated:
        container_status["lastState"] = {"terminated": {"reason": last_terminated, "exitCode": 137}}
    metadata: dict[str, Any] = {"name": name, "namespace": "ms", "uid": f"uid-{name}", "creationTimestamp": T0,
                                "labels": {"orchestration.ai/deployment-id": "d1"}}
    if deleting:
        metadata["deletionTimestamp"] = T0
    return {
        "metadata": metadata,
        "spec": {
            "nodeName": node,
            "containers": [{"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        },
        "status": {
            "phase": phase,
            "conditions": conditions,
            "containerStatuses": [] if unschedulable else [container_status],
        },
    }


def diagnose(pods, *, desired=1, status="RUNNING", node_ready=None, k8s=None, deadline=600.0):
    return diagnose_deployment(
        current_status=status,
        desired_replicas=desired,
        k8s_deployment=k8s if k8s is not None else {"status": {}},
        pods=[pod_view(p) for p in pods],
        node_ready=node_ready or {"l40s-0": "Ready", "l40s-1": "Ready"},
        now=NOW,
        model_load_deadline_seconds=deadline,
    )


def test_pod_view_extracts_fields():
    view = pod_view(pod(restarts=2, gpus=4))
    facts = (view.name, view.node, view.phase, view.ready, view.restarts, view.gpus)
    assert facts == ("m-abc", "l40s-0", "Running", True, 2, 4)
    assert view.started_at == NOW


def test_healthy_is_running():
    result = diagnose([pod("a"), pod("b")], desired=2)
    assert (result.status, result.ready_replicas, result.reason) == ("RUNNING", 2, None)


def test_scaled_to_zero_is_stopped():
    result = diagnose([], desired=0, status="SCALING")
    assert (result.status, result.ready_replicas, result.reason) == ("STOPPED", 0, None)


def test_unschedulable_is_waiting_for_gpus_with_scheduler_message():
    message = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are available"
    result = diagnose([pod(node=None, phase="Pending", ready=False, unschedulable=message)], status="CREATING")
    assert result.status == "CREATING"
    assert result.reason == Reason.WAITING_FOR_GPUS
    assert result.message == message
    assert not result.recoverable


def test_image_pull_failure():
    p = pod(phase="Pending", ready=False, waiting=("ImagePullBackOff", 'Back-off pulling image "x"'))
    result = diagnose([p], status="CREATING")
    assert result.reason == Reason.IMAGE_PULL_FAILURE
    assert "Back-off pulling image" in result.message
    assert result.recoverable


def test_crash_loop_and_oom():
    crash = pod(ready=False, waiting=("CrashLoopBackOff", "back-off 40s"), last_terminated="Error", restarts=4)
    assert diagnose([crash]).reason == Reason.CRASH_LOOP
    oom = pod(ready=False, waiting=("CrashLoopBackOff", "back-off 40s"), last_terminated="OOMKilled", restarts=2)
    result = diagnose([oom])
    assert result.reason == Reason.OOM_KILLED
    assert result.status == "DEGRADED"


def test_config_error():
    p = pod(phase="Pending", ready=False, waiting=("CreateContainerConfigError", 'secret "hf" not found'))
    assert diagnose([p], status="CREATING").reason == Reason.CONFIG_ERROR


def test_model_load_timeout_only_after_deadline():
    started_long_ago = "2027-01-15T07:00:00Z"  # one hour before NOW
    slow = pod(ready=False, started=started_long_ago)
    assert diagnose([slow], status="CREATING", deadline=7200).reason is None
    result = diagnose([slow], status="CREATING", deadline=600)
    assert result.reason == Reason.MODEL_LOAD_TIMEOUT
    assert "3600s" in result.message


def test_node_not_ready_wins_over_other_reasons():
    on_dead = pod("a", node="l40s-1", ready=False)
    crashing = pod("b", ready=False, waiting=("CrashLoopBackOff", "x"))
    result = diagnose([on_dead, crashing], desired=2, node_ready={"l40s-0": "Ready", "l40s-1": "NotReady"})
    assert result.reason == Reason.NODE_NOT_READY
    assert [p.name for p in result.pods_with(Reason.NODE_NOT_READY)] == ["a"]
    assert "(and" not in result.message


def test_progress_deadline_exceeded():
    k8s = {"status": {"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                      "message": 'ReplicaSet "m-1" has timed out progressing.'}]}}
    result = diagnose([pod(ready=False)], k8s=k8s)
    assert result.reason == Reason.PROGRESS_DEADLINE_EXCEEDED
    assert "timed out" in result.message


def test_missing_k8s_deployment():
    result = diagnose_deployment(current_status="RUNNING", desired_replicas=1, k8s_deployment=None, pods=[],
                                 node_ready={}, now=NOW, model_load_deadline_seconds=60)
    assert (result.status, result.reason) == ("DEGRADED", Reason.NOT_IN_CLUSTER)


def test_failed_stays_failed_until_fully_healthy():
    crashing = pod(ready=False, waiting=("CrashLoopBackOff", "x"))
    assert diagnose([crashing], status="FAILED").status == "FAILED"
    assert diagnose([pod()], status="FAILED").status == "RUNNING"


def test_terminating_pods_do_not_count_as_ready_nor_problems():
    going = pod("a", deleting=True)
    result = diagnose([going, pod("b")], desired=2)
    assert result.ready_replicas == 1
    assert result.status == "DEGRADED"
    assert result.reason is None
    assert "1/2" in result.message
    assert diagnose_pod(pod_view(going), {}, NOW, 60) is None
