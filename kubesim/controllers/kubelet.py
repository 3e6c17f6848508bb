"""The kubelet stand-in: moves pods bound to nodes through image pull, start, model load and Ready.

Each pod on a node has a `PodRun`: the state the kubelet would keep (container state, restarts, IPs)
plus the next due transition. Reconcile performs a due transition, then renders the pod status from
the run and writes it only if it differs, so re-running a reconcile is harmless. Failure modes come
from pod behaviours, pod annotations/labels (kwok vocabulary where it exists) or image names.

A kubelet whose node is NotReady still stops pods being deleted but starts nothing new; one whose
node is Unknown (heartbeats stopped) does nothing at all, so deleted pods stay Terminating there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from kubesim import stages
from kubesim.admission import qos_class
from kubesim.clock import rfc3339
from kubesim.controllers.common import (
    Controller,
    Obj,
    ObjKey,
    is_deleting,
    is_terminal,
    key_of,
    pod_requests,
    set_condition,
    write_fields,
)
from kubesim.store import WatchEvent

FAILURE_ANNOTATION = "kubesim.io/failure"
PULL_ANNOTATION = "kubesim.io/image-pull-seconds"
LOAD_ANNOTATION = "kubesim.io/model-load-seconds"
# kwok's chaos switches (stage.kwok.x-k8s.io), honoured as labels or annotations.
KWOK_FAILURES = {
    "pod-container-running-failed.stage.kwok.x-k8s.io": "Failed",
    "pod-container-crash-loop.stage.kwok.x-k8s.io": "CrashLoopBackOff",
    "pod-image-pull-failed.stage.kwok.x-k8s.io": "ImagePullBackOff",
}
MISSING_IMAGE_MARKER = "does-not-exist"
MISSING_SECRET = "hf-token"  # noqa: S105 (the name of a Secret, not a credential)


@dataclass
class PodRun:
    uid: str
    key: ObjKey
    stage: str = "new"
    due: float | None = None
    phase: str = "Pending"
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    restarts: int = 0
    pull_attempts: int = 0
    image_pulled: bool = False
    container_id: str = ""
    pod_ip: str = ""
    start_time: str = ""
    started_at: str = ""


class Kubelet(Controller):
    name = "kubelet"
    ignores_own_writes = True

    def reset(self) -> None:
        self._runs: dict[ObjKey, PodRun] = {}
        self._images: dict[str, set[str]] = {}
        self._ip_counter: dict[str, int] = {}
        self._node_state: dict[str, str] = {}

    # ----------------------------------------------------------------- queueing

    def keys_for(self, event: WatchEvent) -> Iterable[Hashable]:
        if event.plural == "pods":
            if event.type == "DELETED":
                self._runs.pop((event.namespace, event.obj["metadata"]["name"]), None)
                return ()
            if (event.obj.get("spec") or {}).get("nodeName"):
                return (key_of(event.obj),)
            return ()
        if event.plural == "nodes":
            name = event.obj["metadata"]["name"]
            state = "Gone" if event.type == "DELETED" else self.sim.node_lifecycle.kubelet_state(name)
            if self._node_state.get(name) != state:
                self._node_state[name] = state
                if event.type != "DELETED":
                    return [key_of(p) for p in self.store.pods_on_node(name)]
        return ()

    def resync_keys(self) -> Iterable[Hashable]:
        return [key_of(p) for p in self.store.list("pods")[0] if (p.get("spec") or {}).get("nodeName")]

    # ----------------------------------------------------------------- reconcile

    def reconcile(self, key: Hashable) -> None:
        namespace, name = key  # type: ignore[misc]
        with self.store.lock:
            pod = self.store.try_get("pods", namespace, name)
            if pod is None:
                self._runs.pop(key, None)  # type: ignore[arg-type]
                return
            node_name = pod["spec"].get("nodeName")
            node = self.store.try_get("nodes", "", node_name) if node_name else None
            if node is None:
                return
            state = self.sim.node_lifecycle.kubelet_state(node_name)
            if state == "Unknown":
                return  # no kubelet is talking to the apiserver
            if is_deleting(pod):
                self._terminate(pod)
                return
            if is_terminal(pod) and key not in self._runs:
                return
            if state != "Ready":
                return
            run = self._runs.get(key)  # type: ignore[arg-type]
            if run is None or run.uid != pod["metadata"]["uid"]:
                run = self._adopt(pod)
                self._runs[key] = run  # type: ignore[index]
            now = self.sim.clock.now()
            while run.due is not None and run.due <= now:
                self._transition(pod, node, run, now)
            if run.stage != "rejected":
                self._write_status(pod, node, run)

    def _adopt(self, pod: Obj) -> PodRun:
        """Start tracking a pod: new pods start at image pull; restored running pods resume model load."""
        run = PodRun(uid=pod["metadata"]["uid"], key=key_of(pod), due=self.sim.clock.now())
        status = pod.get("status") or {}
        statuses = status.get("containerStatuses") or []
        if status.get("phase") == "Running" and statuses:
            run.stage, run.phase = "restored", "Running"
            run.state = statuses[0].get("state") or {}
            run.ready = all(c.get("ready") for c in statuses)
            run.started, run.image_pulled = True, True
            run.restarts = statuses[0].get("restartCount", 0)
            run.last_state = statuses[0].get("lastState") or {}
            run.container_id = statuses[0].get("containerID", "")
            run.pod_ip = status.get("podIP", "")
            run.start_time = status.get("startTime", "")
            run.started_at = (run.state.get("running") or {}).get("startedAt", "")
            run.due = None if run.ready else self.sim.clock.now()
        return run

    # ----------------------------------------------------------------- behaviour

    def _failure(self, pod: Obj) -> str | None:
        meta = pod["metadata"]
        marks = {**(meta.get("labels") or {}), **(meta.get("annotations") or {})}
        behavior = self.sim.behavior_for(pod)
        if behavior.get("failure"):
            return behavior["failure"]
        if marks.get(FAILURE_ANNOTATION):
            return marks[FAILURE_ANNOTATION]
        for switch, failure in KWOK_FAILURES.items():
            if str(marks.get(switch, "")).lower() == "true":
                return failure
        if any(MISSING_IMAGE_MARKER in c.get("image", "") for c in pod["spec"].get("containers") or []):
            return "ImagePullBackOff"
        return None

    def _override(self, pod: Obj, behavior_field: str, annotation: str) -> float | None:
        behavior = self.sim.behavior_for(pod)
        if behavior_field in behavior:
            return float(behavior[behavior_field])
        value = (pod["metadata"].get("annotations") or {}).get(annotation)
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    def _duration(self, stage: str, override: float | None = None) -> float:
        return stages.STAGES[stage].duration(self.sim.rng, override)

    # ----------------------------------------------------------------- transitions

    def _transition(self, pod: Obj, node: Obj, run: PodRun, now: float) -> None:
        handler = getattr(self, f"_stage_{run.stage.replace('-', '_')}")
        run.due = None
        handler(pod, node, run, now)

    def _after(self, run: PodRun, stage: str, seconds: float, now: float) -> None:
        run.stage, run.due = stage, now + seconds
        self.sim.schedule_at(run.due, self.name, run.key)

    def _stage_new(self, pod: Obj, node: Obj, run: PodRun, now: float) -> None:
        node_name = node["metadata"]["name"]
        run.start_time = rfc3339(now)
        shortage = self._admission_shortage(pod, node)
        if shortage is not None:
            self._reject(pod, node_name, run, shortage)
            return
        run.pod_ip = self._allocate_ip(node)
        self._begin_pull(pod, node_name, run, now)

    def _admission_shortage(self, pod: Obj, node: Obj) -> tuple[str, float, float, float] | None:
        """kubelet admission: a pod bound past the scheduler (spec.nodeName set by hand) may not fit.

        Uses the scheduler's per-node totals, which already include this pod, so the check is O(1).
        """
        usage = self.sim.controllers["scheduler"].node_usage(node["metadata"]["name"])
        if usage is None:
            return None
        requested_total, pod_count, allocatable = usage
        wanted = pod_requests(pod)
        if pod_count > allocatable.get("pods", 110):
            return "pods", 1, pod_count - 1, allocatable.get("pods", 110)
        for resource, amount in sorted(wanted.items()):
            total = requested_total.get(resource, 0.0)
            if amount > 0 and total > allocatable.get(resource, 0.0):
                return resource, amount, total - amount, allocatable.get(resource, 0.0)
        return None

    def _reject(self, pod: Obj, node_name: str, run: PodRun, shortage: tuple[str, float, float, float]) -> None:
        resource, requested, used, capacity = shortage
        detail = (f"Node didn't have enough resource: {resource}, requested: {_amount(resource, requested)}, "
                  f"used: {_amount(resource, used)}, capacity: {_amount(resource, capacity)}")
        run.stage, run.due, run.phase = "rejected", None, "Failed"
        self._event(pod, f"OutOf{resource}", detail, node_name, "Warning")
        status = {"phase": "Failed", "reason": f"OutOf{resource}", "message": f"Pod was rejected: {detail}",
                  "startTime": run.start_time}
        write_fields(self.store, "pods", pod, status=status)

    def _begin_pull(self, pod: Obj, node_name: str, run: PodRun, now: float) -> None:
        image = self._image(pod)
        run.phase = "Pending"
        run.pull_attempts += 1
        failure = self._failure(pod)
        cached = image in self._images.get(node_name, set())
        if failure == "ImagePullBackOff":
            self._event(pod, "Pulling", f'Pulling image "{image}"', node_name)
            self._after(run, "pull-failed", self._duration("image-pull-error"), now)
            return
        override = self._override(pod, "image_pull_seconds", PULL_ANNOTATION)
        if cached:
            delay = self._duration("image-pull-cached", override)
        else:
            self._event(pod, "Pulling", f'Pulling image "{image}"', node_name)
            delay = self._duration("image-pull-first", override)
        run.state = {"waiting": {"reason": "ContainerCreating"}}
        self._after(run, "pulled", delay, now)

    def _stage_pull_failed(self, pod: Obj, node: Obj, run: PodRun, now: float) -> None:
        image = self._image(pod)
        node_name = node["metadata"]["name"]
        reference = image if "/" in image else f"docker.io/library/{image}"
        detail = (
            f'rpc error: code = NotFound desc = failed to pull and unpack image "{reference}": '
            f'failed to resolve reference "{reference}": {reference}: not found'
        )
        run.state = {"waiting": {"reason": "ErrImagePull", "message": detail}}
        self._event(pod, "Failed", f'Failed to pull image "{image}": {detail}', node_name, "Warning")
        self._event(pod, "Failed", "Error: ErrImagePull", node_name, "Warning")
        self._after(run, "pull-backoff", self._duration("err-image-pull"), now)

    def _stage_pull_backoff(self, pod: Obj, node: Obj, run: PodRun, now: float) -> None:
        image = self._image(pod)
        node_name = node["metadata"]["name"]
        run.state = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}}
        self._event(pod, "BackOff", f'Back-off pulling image "{image}"', node_name)
        self._event(pod, "Failed", "Error: ImagePullBackOff", node_name, "Warning")
        self._after(run, "retry-pull", stages.backoff(run.pull_attempts), now)

    def _stage_retry_pull(self, pod: Obj, node: Obj, run: PodRun, now: float) -> None:
        self._begin_pull(pod, node["metadata"]["name"], run, now)

    def _stage_pulled(self, pod: Obj, node: Obj, run: PodRun, now: float) -> None:
        image = self._image(pod)
        node_name = node["metadata"]["name"]
        cache = self._images.setdefault(node_name, set())
        if image in cache:
            self._event(pod, "Pulled", f'Container image "{image}" already present on machine', node_name)
        else:
            cache.add(image)
            self._event(pod, "Pulled", f'Successfully pulled image "{image}". Image size: 10737418240 bytes.',
                        node_name)
        run.image_pulled = True
        if self._failure(pod) == "CreateContainerConfigError":
            run.state = {"waiting": {"reason": "CreateContainerConfigError",
                                     "message": f'secret "{MISSING_SECRET}" not found'}}
            self._event(pod, "Failed", f'Error: secret "{MISSING_SECRET}" not found', node_name, "Warning")
            run.stage = "config-error"
            return
        self._start_container(pod, node_name, run, now)

    def _start_container(self, pod: Obj, node_name: str, run: PodRun, now: float) -> None:
        container = self._container_name(pod)
        run.phase = "Running"
        run.started_at = rfc3339(now)
        run.state = {"running": {"startedAt": run.started_at}}
        run.started, run.ready = True, False
        run.container_id = f"containerd://{self.sim.rng.getrandbits(256):064x}"
        self._event(pod, "Created", f"Created container: {container}", node_name)
        self._event(pod, "Started", f"Started container {container}", node_name)
        failure = self._failure(pod)
        if failure == "CrashLoopBackOff":
            self._after(run, "crash", self._duration("crash-after"), now)
        elif failure == "OOMKilled":
            self._after(run, "crash", self._duration("oom-after"), now)
        elif failure == "Failed":
            self._after(run, "fail", self._duration("fail-after"), now)
        elif failure == "NeverReady":
            self._after(run, "never-ready", self._duration("unhealthy-report"), now)
        else:
            override = self._override(pod, "model_load_seconds", LOAD_ANNOTATION)
            self._after(run, "loaded", self._duration("model-load", override), now)

    def _stage_loaded(self, pod: Obj, _node: Obj, run: PodRun, now: float) -> None:
        run.ready = True
        run.stage = "ready"
        if self._failure(pod) == "ReadinessFlap":
            self._after(run, "flap", self._duration("readiness-flap"), now)

    def _stage_restored(self, pod: Obj, _node: Obj, run: PodRun, now: float) -> None:
        override = self._override(pod, "model_load_seconds", LOAD_ANNOTATION)
        self._after(run, "loaded", self._duration("model-load", override), now)

    def _stage_flap(self, pod: Obj, node: Obj, run: PodRun, now: float) -> None:
        run.ready = not run.ready
        if not run.ready:
            self._unhealthy(pod, node, run)
        self._after(run, "flap", self._duration("readiness-flap"), now)

    def _stage_never_ready(self, pod: Obj, node: Obj, run: PodRun, now: float) -> None:
        self._unhealthy(pod, node, run)
        self._after(run, "never-ready", self._duration("unhealthy-report"), now)

    def _unhealthy(self, pod: Obj, node: Obj, run: PodRun) -> None:
        self._event(
            pod, "Unhealthy",
            f'Readiness probe failed: Get "http://{run.pod_ip}:8000/health": dial tcp {run.pod_ip}:8000: '
            "connect: connection refused",
            node["metadata"]["name"], "Warning",
        )

    def _stage_crash(self, pod: Obj, node: Obj, run: PodRun, now: float) -> None:
        oom = self._failure(pod) == "OOMKilled"
        container = self._container_name(pod)
        run.restarts += 1
        run.ready = False
        run.started = False
        run.last_state = {"terminated": {
            "exitCode": 137 if oom else 1, "reason": "OOMKilled" if oom else "Error",
            "startedAt": run.started_at, "finishedAt": rfc3339(now), "containerID": run.container_id,
        }}
        delay = stages.backoff(run.restarts)
        run.state = {"waiting": {
            "reason": "CrashLoopBackOff",
            "message": f"back-off {int(delay)}s restarting failed container={container} "
                       f"pod={pod['metadata']['name']}_{pod['metadata']['namespace']}({pod['metadata']['uid']})",
        }}
        self._event(
            pod, "BackOff",
            f"Back-off restarting failed container {container} in pod "
            f"{pod['metadata']['name']}_{pod['metadata']['namespace']}({pod['metadata']['uid']})",
            node["metadata"]["name"], "Warning",
        )
        self._after(run, "restart", delay, now)

    def _stage_restart(self, pod: Obj, node: Obj, run: PodRun, now: float) -> None:
        node_name = node["metadata"]["name"]
        self._event(pod, "Pulled", f'Container image "{self._image(pod)}" already present on machine', node_name)
        self._start_container(pod, node_name, run, now)

    def _stage_fail(self, _pod: Obj, _node: Obj, run: PodRun, now: float) -> None:
        run.phase = "Failed"
        run.ready = False
        run.started = False
        run.state = {"terminated": {
            "exitCode": 1, "reason": "Error", "startedAt": run.started_at, "finishedAt": rfc3339(now),
            "containerID": run.container_id,
        }}
        run.stage = "failed"

    # ----------------------------------------------------------------- termination

    def _terminate(self, pod: Obj) -> None:
        key = key_of(pod)
        meta = pod["metadata"]
        grace = float(meta.get("deletionGracePeriodSeconds") or 0)
        run = self._runs.get(key)
        now = self.sim.clock.now()
        if run is None:
            run = PodRun(uid=meta["uid"], key=key, stage="new")
            self._runs[key] = run
        if run.stage != "terminating":
            if not is_terminal(pod):
                node_name = pod["spec"]["nodeName"]
                for container in pod["spec"].get("containers") or []:
                    self._event(pod, "Killing", f"Stopping container {container.get('name')}", node_name)
            run.stage = "terminating"
            run.due = now + max(stages.MIN_TERMINATION_SECONDS, grace * stages.TERMINATION_GRACE_FRACTION)
            if grace <= 0:
                run.due = now
            self.sim.schedule_at(run.due, self.name, key)
        if run.due is not None and run.due <= now:
            self._runs.pop(key, None)
            try:
                self.store.delete("pods", meta["namespace"], meta["name"], grace_period_seconds=0)
            except Exception:  # already gone
                return

    # ----------------------------------------------------------------- status

    def _write_status(self, pod: Obj, node: Obj, run: PodRun) -> None:
        old_status = pod.get("status") or {}
        status = {k: (list(v) if isinstance(v, list) else v) for k, v in old_status.items()}
        conditions = [dict(c) for c in old_status.get("conditions") or []]
        now = self.sim.clock.now()
        host_ip = next((a["address"] for a in node["status"].get("addresses", []) if a["type"] == "InternalIP"), "")
        status["phase"] = run.phase
        if run.start_time:
            status["startTime"] = run.start_time
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
        if run.pod_ip:
            status["podIP"] = run.pod_ip
            status["podIPs"] = [{"ip": run.pod_ip}]
        status.setdefault("qosClass", qos_class(pod.get("spec") or {}))
        failed = run.phase == "Failed"
        ready_reason = "PodFailed" if failed else "ContainersNotReady"
        not_ready_msg = f"containers with unready status: [{self._container_names(pod)}]"
        set_condition(conditions, "PodReadyToStartContainers", "False" if failed else "True", "", "", now)
        set_condition(conditions, "Initialized", "True", "", "", now)
        for kind in ("Ready", "ContainersReady"):
            if run.ready:
                set_condition(conditions, kind, "True", "", "", now)
            else:
                set_condition(conditions, kind, "False", ready_reason, not_ready_msg, now)
        for condition in conditions:
            condition.setdefault("lastProbeTime", None)
            if not condition.get("reason"):
                condition.pop("reason", None)
                condition.pop("message", None)
        order = {"PodReadyToStartContainers": 0, "Initialized": 1, "Ready": 2, "ContainersReady": 3, "PodScheduled": 4}
        status["conditions"] = sorted(conditions, key=lambda c: order.get(c["type"], 9))
        image_id = self._image_id(pod)
        status["containerStatuses"] = [
            {
                "name": container.get("name"),
                "image": container.get("image"),
                "imageID": image_id if run.image_pulled else "",
                **({"containerID": run.container_id} if run.container_id else {}),
                "ready": run.ready,
                "started": run.started,
                "restartCount": run.restarts,
                "state": run.state,
                "lastState": run.last_state,
            }
            for container in pod["spec"].get("containers") or []
        ]
        if status != old_status:
            write_fields(self.store, "pods", pod, status=status)

    # ----------------------------------------------------------------- helpers

    def _allocate_ip(self, node: Obj) -> str:
        name = node["metadata"]["name"]
        counter = self._ip_counter.get(name, 0) + 1
        self._ip_counter[name] = counter
        base = node["spec"].get("podCIDR", "10.244.0.0/24").split("/")[0].rsplit(".", 1)[0]
        return f"{base}.{(counter - 1) % 253 + 2}"

    def _event(self, pod: Obj, reason: str, message: str, node_name: str, event_type: str = "Normal") -> None:
        container = self._container_name(pod)
        self.sim.events.record(pod, reason, message, event_type, component="kubelet", host=node_name,
                               field_path=f"spec.containers{{{container}}}")

    @staticmethod
    def _image(pod: Obj) -> str:
        containers = pod["spec"].get("containers") or [{}]
        return containers[0].get("image", "")

    @staticmethod
    def _container_name(pod: Obj) -> str:
        containers = pod["spec"].get("containers") or [{}]
        return containers[0].get("name", "")

    @staticmethod
    def _container_names(pod: Obj) -> str:
        return " ".join(c.get("name", "") for c in pod["spec"].get("containers") or [])

    @staticmethod
    def _image_id(pod: Obj) -> str:
        image = Kubelet._image(pod)
        repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        if "/" not in repository:
            repository = f"docker.io/library/{repository}"
        elif "." not in repository.split("/", 1)[0]:
            repository = f"docker.io/{repository}"
        return f"{repository}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def _amount(resource: str, value: float) -> str:
    """How kubelet prints quantities in admission messages: millicores for cpu, plain integers otherwise."""
    if resource == "cpu":
        return f"{int(value)}m" if value % 1000 else str(int(value // 1000))
    return str(int(value))
