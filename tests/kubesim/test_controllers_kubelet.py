"""The kubelet stand-in: stages with delays, the image cache, failure modes and graceful termination."""

from __future__ import annotations

import pytest

from kubesim import stages
from tests.kubesim.test_controllers_support import (
    bare_pod,
    condition,
    container,
    events,
    is_ready,
)


def _pod(sim, name):
    return sim.store.get("pods", "default", name)


def _create(sim, name, annotations=None, labels=None, image=None, **extra):
    body = bare_pod(name, gpus=1, labels=labels or {}, **({"image": image} if image else {}), **extra)
    if annotations:
        body["metadata"]["annotations"] = annotations
    sim.store.create("pods", body)
    sim.settle()
    return _pod(sim, name)


def _reasons(sim, name):
    return [e["reason"] for e in sim.store.list("events", "default")[0] if e["involvedObject"]["name"] == name]


def test_pod_goes_container_creating_then_running_not_ready_then_ready(sim):
    pod = _create(sim, "stages")
    assert pod["status"]["phase"] == "Pending"
    assert container(pod)["state"]["waiting"]["reason"] == "ContainerCreating"
    assert pod["status"]["podIP"].startswith("10.244.")
    assert pod["status"]["hostIP"].startswith("10.0.")
    sim.advance(stages.STAGES["image-pull-first"].delay * 1.25)
    pod = _pod(sim, "stages")
    assert pod["status"]["phase"] == "Running"
    assert container(pod)["started"] is True
    assert container(pod)["ready"] is False
    assert not is_ready(pod)
    sim.advance(stages.STAGES["model-load"].delay * 1.2)
    pod = _pod(sim, "stages")
    assert is_ready(pod)
    status = container(pod)
    assert status["containerID"].startswith("containerd://")
    assert status["imageID"].startswith("docker.io/vllm/vllm-openai@sha256:")
    assert status["restartCount"] == 0
    assert "startedAt" in status["state"]["running"]
    assert {c["type"] for c in pod["status"]["conditions"]} >= {
        "PodScheduled", "Initialized", "ContainersReady", "Ready"}
    assert _reasons(sim, "stages") == ["Scheduled", "Pulling", "Pulled", "Created", "Started"]


def test_second_pull_on_the_same_node_is_fast(sim):
    first = _create(sim, "first", nodeName="l40s-0")
    assert first["spec"]["nodeName"] == "l40s-0"
    sim.advance(80)
    _create(sim, "second", nodeName="l40s-0")
    sim.advance(stages.STAGES["image-pull-cached"].delay * 1.25)
    assert _pod(sim, "second")["status"]["phase"] == "Running"
    pulled = [e for e in events(sim, "Pulled") if e["involvedObject"]["name"] == "second"]
    assert "already present on machine" in pulled[0]["message"]


def test_behavior_overrides_stage_durations(sim):
    sim.add_pod_behavior({"selector": {"labels": {"app": "quick"}}, "image_pull_seconds": 1,
                          "model_load_seconds": 2})
    _create(sim, "quick", labels={"app": "quick"})
    sim.advance(4)
    assert is_ready(_pod(sim, "quick"))


def test_missing_image_goes_err_image_pull_then_image_pull_backoff(sim):
    _create(sim, "missing", image="registry.example.com/does-not-exist:1")
    sim.advance(2.5)
    assert container(_pod(sim, "missing"))["state"]["waiting"]["reason"] == "ErrImagePull"
    sim.advance(1)
    waiting = container(_pod(sim, "missing"))["state"]["waiting"]
    assert waiting == {"reason": "ImagePullBackOff",
                       "message": 'Back-off pulling image "registry.example.com/does-not-exist:1"'}
    assert any(e["message"] == 'Back-off pulling image "registry.example.com/does-not-exist:1"'
               for e in events(sim, "BackOff"))
    assert _pod(sim, "missing")["status"]["phase"] == "Pending"


def test_crash_loop_backoff_grows_and_counts_restarts(sim):
    _create(sim, "crash", annotations={"kubesim.io/failure": "CrashLoopBackOff", "kubesim.io/image-pull-seconds": "1"})
    restarts_seen = []
    backoffs = []
    for _ in range(300):
        sim.advance(1)
        status = container(_pod(sim, "crash"))
        waiting = status["state"].get("waiting") or {}
        if waiting.get("reason") == "CrashLoopBackOff" and status["restartCount"] not in restarts_seen:
            restarts_seen.append(status["restartCount"])
            backoffs.append(waiting["message"].split()[1])
    assert restarts_seen[:4] == [1, 2, 3, 4]
    assert backoffs[:4] == ["10s", "20s", "40s", "80s"]
    terminated = container(_pod(sim, "crash"))["lastState"]["terminated"]
    assert terminated["exitCode"] == 1
    assert terminated["reason"] == "Error"
    backoff_event = next(e for e in events(sim, "BackOff") if e["involvedObject"]["name"] == "crash")
    assert backoff_event["count"] >= 4
    assert backoff_event["message"].startswith(
        "Back-off restarting failed container vllm in pod crash_default(")
    assert stages.backoff(10) == 300


def test_oom_killed_exits_137(sim):
    sim.add_pod_behavior({"selector": {"labels": {"app": "oom"}}, "failure": "OOMKilled"})
    _create(sim, "oom", labels={"app": "oom"})
    assert sim.run_until(lambda: container(_pod(sim, "oom"))["restartCount"] >= 1, timeout=300)
    terminated = container(_pod(sim, "oom"))["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled")


def test_create_container_config_error(sim):
    _create(sim, "cfg", labels={"kubesim.io/failure": "CreateContainerConfigError"})
    sim.advance(100)
    waiting = container(_pod(sim, "cfg"))["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"
    assert waiting["message"] == 'secret "hf-token" not found'


def test_kwok_running_failed_switch_fails_the_pod(sim):
    _create(sim, "kwok", annotations={"pod-container-running-failed.stage.kwok.x-k8s.io": "true"})
    assert sim.run_until(lambda: _pod(sim, "kwok")["status"]["phase"] == "Failed", timeout=300)
    assert container(_pod(sim, "kwok"))["state"]["terminated"]["exitCode"] == 1
    assert condition(_pod(sim, "kwok"), "Ready")["reason"] == "PodFailed"


def test_never_ready_reports_unhealthy(sim):
    _create(sim, "never", annotations={"kubesim.io/failure": "NeverReady"})
    sim.advance(600)
    pod = _pod(sim, "never")
    assert pod["status"]["phase"] == "Running"
    assert not is_ready(pod)
    unhealthy = [e for e in events(sim, "Unhealthy") if e["involvedObject"]["name"] == "never"]
    assert unhealthy[0]["count"] > 5
    assert unhealthy[0]["message"].startswith("Readiness probe failed:")


def test_readiness_flaps(sim):
    _create(sim, "flap", annotations={"kubesim.io/failure": "ReadinessFlap"})
    assert sim.run_until(lambda: is_ready(_pod(sim, "flap")), timeout=400)
    assert sim.run_until(lambda: not is_ready(_pod(sim, "flap")), timeout=100)
    assert sim.run_until(lambda: is_ready(_pod(sim, "flap")), timeout=100)


def test_graceful_termination_removes_pod_after_a_fraction_of_grace(sim):
    _create(sim, "bye")
    sim.advance(200)
    sim.store.delete("pods", "default", "bye")
    sim.settle()
    pod = _pod(sim, "bye")
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 30
    sim.advance(30 * stages.TERMINATION_GRACE_FRACTION + 0.5)
    assert sim.store.try_get("pods", "default", "bye") is None
    assert "Killing" in [e["reason"] for e in sim.store.list("events", "default")[0]]


@pytest.mark.parametrize("bad", [
    {"failure": "Explode"}, {"selector": {"labels": {"a": 1}}}, {"image_pull_seconds": -1}, {"other": 1}, [],
])
def test_bad_pod_behaviors_are_rejected(sim, bad):
    with pytest.raises(ValueError, match=r"."):
        sim.add_pod_behavior(bad)


def test_pod_behaviors_list_and_remove(sim):
    behavior_id = sim.add_pod_behavior({"selector": {"namespace": "default"}, "failure": "NeverReady"})
    assert sim.pod_behaviors()[0]["id"] == behavior_id
    sim.remove_pod_behavior(behavior_id)
    assert sim.pod_behaviors() == []
    with pytest.raises(KeyError):
        sim.remove_pod_behavior(behavior_id)


def test_kubelet_rejects_a_hand_bound_pod_that_does_not_fit(sim):
    _create(sim, "fits", nodeName="l40s-0")
    body = bare_pod("too-big", gpus=8, nodeName="l40s-0")
    sim.store.create("pods", body)
    sim.settle()
    pod = _pod(sim, "too-big")
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["reason"] == "OutOfnvidia.com/gpu"
    assert pod["status"]["message"] == ("Pod was rejected: Node didn't have enough resource: nvidia.com/gpu, "
                                        "requested: 8, used: 1, capacity: 8")
    assert _pod(sim, "fits")["status"]["phase"] == "Pending"  # the first one is pulling its image
