"""Shared builders for the API-server tests: a stand-in Simulation and a running server.

The API layer only needs the Simulation's store, clock and a few switches, so these tests drive the
server over loopback with a Store populated directly (no controllers), which keeps every response
deterministic. The stand-in records admin calls so the /_sim/ routes can be checked end to end.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import kubernetes

from kubesim.clock import VirtualClock, rfc3339
from kubesim.server import KubeSimServer, make_server
from kubesim.store import Store

START = 1_800_000_000.0


@dataclass(eq=False)
class StandInSim:
    store: Store
    clock: VirtualClock
    seed: int = 0
    loads: dict[tuple[str, str], dict] = field(default_factory=dict)
    metrics_available: bool = True
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    behaviors: dict[str, dict] = field(default_factory=dict)

    def advance(self, seconds: float) -> None:
        self.calls.append(("advance", seconds))
        self.clock.advance_to(self.clock.now() + seconds)

    def settle(self, timeout: float = 10.0) -> None:
        self.calls.append(("settle", timeout))

    def add_nodes(self, spec: str) -> list[str]:
        if "x" not in spec:
            raise ValueError(f"bad node spec {spec!r}")
        count, rest = spec.split("x", 1)
        names = []
        for index in range(int(count)):
            name = f"{rest.split(':')[0].removeprefix('nvidia-')}-{index}"
            add_node(self.store, name)
            names.append(name)
        return names

    def remove_node(self, name: str) -> None:
        self.calls.append(("remove_node", name))
        self.store.delete("nodes", "", name)

    def fail_node(self, name: str, mode: str = "NotReady") -> None:
        self.calls.append(("fail_node", name, mode))

    def recover_node(self, name: str) -> None:
        self.calls.append(("recover_node", name))

    def set_node_gpus(self, name: str, allocatable: int) -> None:
        self.calls.append(("set_node_gpus", name, allocatable))

    def set_load(self, namespace: str, deployment: str, load: dict) -> None:
        if not isinstance(load.get("requests_per_second", 0), int | float):
            raise ValueError("requests_per_second must be a number")
        self.loads[(namespace, deployment)] = load

    def add_pod_behavior(self, behavior: dict) -> str:
        behavior_id = f"pb-{len(self.behaviors) + 1}"
        self.behaviors[behavior_id] = {**behavior, "id": behavior_id}
        return behavior_id

    def remove_pod_behavior(self, behavior_id: str) -> None:
        del self.behaviors[behavior_id]

    def pod_behaviors(self) -> list[dict]:
        return list(self.behaviors.values())

    def snapshot(self) -> dict:
        return self.store.snapshot()

    def restore(self, data: dict) -> None:
        self.store.restore(data)

    def reset(self) -> None:
        self.calls.append(("reset",))


def add_node(store: Store, name: str, ready: bool = True, unschedulable: bool = False, gpus: int = 8) -> dict:
    return store.create("nodes", {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                              "node-role.kubernetes.io/gpu-worker": "",
                                              "nvidia.com/gpu.product": "nvidia-l40s"}},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {
            "capacity": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": str(gpus)},
            "allocatable": {"cpu": "63", "memory": "500Gi", "pods": "110", "nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b", "kernelVersion": "6.8.0",
                         "osImage": "Ubuntu 24.04 LTS", "containerRuntimeVersion": "containerd://1.7.20",
                         "kubeletVersion": "v1.34.1", "kubeProxyVersion": "v1.34.1", "operatingSystem": "linux",
                         "architecture": "amd64"},
        },
    })


def pod_body(name: str, labels: dict[str, str] | None = None, node: str | None = None, gpus: int = 0) -> dict:
    container: dict[str, Any] = {"name": "vllm", "image": "vllm/vllm-openai:v0.6.3"}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    spec: dict[str, Any] = {"containers": [container]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def run_pod(store: Store, namespace: str, name: str, ready: bool = True) -> dict:
    """Mark a pod Running (and Ready) the way the kubelet stand-in would."""
    now = rfc3339(store.clock.now())

    def change(pod: dict) -> None:
        pod["status"] = {
            "phase": "Running", "podIP": "10.244.0.9", "podIPs": [{"ip": "10.244.0.9"}], "startTime": now,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "vllm", "image": "vllm/vllm-openai:v0.6.3", "imageID": "sha256:1",
                                   "ready": ready, "restartCount": 0, "started": True,
                                   "state": {"running": {"startedAt": now}}}],
        }

    return store.mutate("pods", namespace, name, change)


def deployment_body(name: str, replicas: int = 2, labels: dict[str, str] | None = None) -> dict:
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.6.3"}]}}},
    }


@dataclass
class Running:
    sim: StandInSim
    server: KubeSimServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def store(self) -> Store:
        return self.sim.store

    def api_client(self) -> kubernetes.client.ApiClient:
        configuration = kubernetes.client.Configuration(host=self.url)
        return kubernetes.client.ApiClient(configuration)

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                headers: dict[str, str] | None = None, raw: bytes | None = None,
                timeout: float = 10) -> tuple[int, Any, dict[str, str]]:
        """Raw HTTP; returns (status, decoded JSON or text, headers)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": content_type, **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, payload, response_headers = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            status, payload, response_headers = exc.code, exc.read(), dict(exc.headers)
        try:
            return status, json.loads(payload), response_headers
        except ValueError:
            return status, payload.decode(), response_headers


@contextmanager
def running_server(namespaces: tuple[str, ...] = ("default", "kube-system", "team-a")) -> Iterator[Running]:
    clock = VirtualClock(start=START)
    store = Store(clock, seed=5)
    sim = StandInSim(store, clock)
    server = make_server(sim)
    for namespace in namespaces:
        store.create("namespaces", {"metadata": {"name": namespace}})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Running(sim, server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

