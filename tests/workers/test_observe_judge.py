"""workers.observe.judge: status decisions from what the cluster reports (pure)."""

from __future__ import annotations

from models import DeploymentStatus
from workers.observe import judge, pod_view


def k8s_deployment(replicas=2, ready=2, updated=None, total=None, generation=2, observed=2, conditions=()):
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "readyReplicas": ready,
            "updatedReplicas": replicas if updated is None else updated,
            "replicas": replicas if total is None else total,
            "conditions": list(conditions),
        },
    }


def pod(name="p", ready=True, phase="Running", waiting=None, message=None, restarts=0, unschedulable=None,
        last_terminated=None):
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if unschedulable:
        conditions.append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}
        )
    state = {"waiting": {"reason": waiting, "message": message}} if waiting else {"running": {}}
    return pod_view(
        {
            "metadata": {"name": name, "namespace": "ns", "uid": name},
            "spec": {
                "nodeName": None if unschedulable else "l40s-0",
                "containers": [{"resources": {"limits": {"nvidia.com/gpu": "2"}}}],
            },
            "status": {
                "phase": phase,
                "conditions": conditions,
                "containerStatuses": [{
                    "restartCount": restarts, "state": state,
                    **({"lastState": {"terminated": {"reason": last_terminated}}} if last_terminated else {}),
                }],
            },
        }
    )


def test_complete_rollout_is_running():
    verdict = judge(DeploymentStatus.CREATING, 2, k8s_deployment(), [pod("a"), pod("b")])
    assert verdict.status == DeploymentStatus.RUNNING
    assert verdict.rollout_complete
    assert verdict.pods[0].gpus == 2


def test_stale_generation_is_not_complete():
    verdict = judge(DeploymentStatus.RESTARTING, 2, k8s_deployment(observed=1), [pod("a"), pod("b")])
    assert verdict.status == DeploymentStatus.RESTARTING


def test_extra_old_pods_mean_rollout_in_progress():
    verdict = judge(
        DeploymentStatus.RESTARTING,
        1,
        k8s_deployment(replicas=1, ready=1, total=2),
        [pod("old"), pod("new", ready=False)],
    )
    assert verdict.status == DeploymentStatus.RESTARTING
    assert verdict.reason == "model_loading"


def test_unschedulable_waits_for_gpus():
    message = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    verdict = judge(
        DeploymentStatus.CREATING,
        1,
        k8s_deployment(replicas=1, ready=0),
        [pod("a", ready=False, phase="Pending", unschedulable=message)],
    )
    assert verdict.status == DeploymentStatus.CREATING
    assert (verdict.reason, verdict.message) == ("waiting_for_gpus", message)


def test_missing_image_fails():
    detail = 'failed to pull and unpack image "docker.io/x/does-not-exist": not found'
    verdict = judge(
        DeploymentStatus.CREATING,
        1,
        k8s_deployment(replicas=1, ready=0),
        [pod("a", ready=False, phase="Pending", waiting="ErrImagePull", message=detail)],
    )
    assert verdict.status == DeploymentStatus.FAILED
    assert verdict.reason == "image_pull_failure"


def test_transient_pull_backoff_keeps_waiting():
    verdict = judge(
        DeploymentStatus.CREATING,
        1,
        k8s_deployment(replicas=1, ready=0),
        [pod("a", ready=False, phase="Pending", waiting="ImagePullBackOff", message='Back-off pulling image "vllm"')],
    )
    assert verdict.status == DeploymentStatus.CREATING


def test_crash_loop_fails_past_the_limit_and_degrades_when_some_ready():
    looping = pod("a", ready=False, waiting="CrashLoopBackOff", message="back-off", restarts=3)
    failed = judge(DeploymentStatus.CREATING, 1, k8s_deployment(replicas=1, ready=0), [looping])
    assert (failed.status, failed.reason) == (DeploymentStatus.FAILED, "crash_loop")
    early = judge(
        DeploymentStatus.CREATING,
        1,
        k8s_deployment(replicas=1, ready=0),
        [pod("a", ready=False, waiting="CrashLoopBackOff", restarts=1)],
    )
    assert early.status == DeploymentStatus.CREATING
    degraded = judge(DeploymentStatus.RUNNING, 2, k8s_deployment(ready=1), [pod("ok"), looping])
    assert (degraded.status, degraded.reason) == (DeploymentStatus.DEGRADED, "crash_loop")


def test_a_crash_loop_of_out_of_memory_kills_is_oom_killed():
    killed = pod("a", ready=False, waiting="CrashLoopBackOff", message="back-off", restarts=3,
                 last_terminated="OOMKilled")

    verdict = judge(DeploymentStatus.CREATING, 1, k8s_deployment(replicas=1, ready=0), [killed])

    assert (verdict.status, verdict.reason) == (DeploymentStatus.FAILED, "oom_killed")
    assert "OOMKilled" in verdict.message


def test_progress_deadline_fails():
    condition = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "x" has timed out progressing.',
    }
    verdict = judge(
        DeploymentStatus.CREATING,
        1,
        k8s_deployment(replicas=1, ready=0, conditions=[condition]),
        [pod("a", ready=False)],
    )
    assert (verdict.status, verdict.reason) == (DeploymentStatus.FAILED, "progress_deadline_exceeded")


def test_lost_replicas_degrade_and_recover():
    degraded = judge(DeploymentStatus.RUNNING, 2, k8s_deployment(ready=1), [pod("a"), pod("b", ready=False)])
    assert degraded.status == DeploymentStatus.DEGRADED
    recovered = judge(DeploymentStatus.DEGRADED, 2, k8s_deployment(), [pod("a"), pod("b")])
    assert recovered.status == DeploymentStatus.RUNNING


def test_missing_object_fails():
    assert judge(DeploymentStatus.RUNNING, 1, None, []).status == DeploymentStatus.FAILED


def test_a_starting_pod_gives_our_code_and_keeps_the_clusters_words_in_the_message():
    verdict = judge(
        DeploymentStatus.CREATING,
        1,
        k8s_deployment(replicas=1, ready=0),
        [pod("a", ready=False, phase="Pending", waiting="ContainerCreating")],
    )
    assert verdict.status == DeploymentStatus.CREATING
    assert (verdict.reason, verdict.message) == ("pod_starting", "pod a: ContainerCreating")


def test_zero_replicas_converged_is_stopped_not_running():
    scaled_down = judge(DeploymentStatus.SCALING, 0, k8s_deployment(replicas=0, ready=0), [])
    assert scaled_down.status == DeploymentStatus.STOPPED
    assert scaled_down.rollout_complete

    # Still terminating the last pod: not converged yet, so the scale is still in progress.
    draining = judge(DeploymentStatus.SCALING, 0, k8s_deployment(replicas=0, ready=0), [pod("a")])
    assert draining.status == DeploymentStatus.SCALING

    # Scaled up again: a stopped deployment whose replica is ready is running.
    started = judge(DeploymentStatus.SCALING, 1, k8s_deployment(replicas=1, ready=1), [pod("a")])
    assert started.status == DeploymentStatus.RUNNING
