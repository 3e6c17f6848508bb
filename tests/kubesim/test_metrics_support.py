"""Builders shared by the metrics and Prometheus unit tests: a Store populated directly, no controllers.

The load model and the metric endpoints are pure functions over the store, so these tests create the
objects the controllers would (nodes, a Deployment, its ReplicaSet, pods with ownerReferences and
statuses) and a minimal stand-in for the Simulation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from kubesim.clock import VirtualClock, rfc3339
from kubesim.store import Store

START = 1_800_000_000.0  # a fixed instant, aligned to a 15 s scrape bucket


@dataclass(eq=False)  # identity hashing: the Prometheus GPU allocator is keyed weakly by the sim
class StandInSim:
    store: Store
    clock: VirtualClock
    loads: dict[tuple[str, str], dict] = field(default_factory=dict)
    metrics_available: bool = True
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def advance(self, seconds: float) -> None:
        self.clock.advance_to(self.clock.now() + seconds)


def make_sim(namespaces: tuple[str, ...] = ("default", "team-a")) -> StandInSim:
    clock = VirtualClock(start=START)
    store = Store(clock, seed=3)
    for namespace in namespaces:
        store.create("namespaces", {"metadata": {"name": namespace}})
    return StandInSim(store, clock)


def add_node(
    sim: StandInSim, name: str, gpus: int = 8, product: str = "nvidia-h100-80gb", memory_mib: int = 81559,
    ready: str = "True", cores: int = 192,
) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name, "pool": product}
    capacity = {"cpu": str(cores), "memory": f"{cores * 10 * 1024 * 1024}Ki", "pods": "110"}
    if gpus:
        labels.update({"nvidia.com/gpu.product": product, "nvidia.com/gpu.memory": str(memory_mib),
                       "nvidia.com/gpu.count": str(gpus)})
        capacity["nvidia.com/gpu"] = str(gpus)
    return sim.store.create("nodes", {
        "metadata": {"name": name, "labels": labels},
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [{"type": "Ready", "status": ready}],
            "addresses": [{"type": "InternalIP", "address": f"10.0.0.{len(name)}"}],
        },
    })


def add_deployment(sim: StandInSim, name: str, namespace: str = "default") -> dict[str, Any]:
    """A Deployment and its current ReplicaSet `<name>-abc12`; returns the ReplicaSet."""
    deployment = sim.store.create("deployments", {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}}},
    })
    return sim.store.create("replicasets", {
        "metadata": {
            "name": f"{name}-abc12", "namespace": namespace, "labels": {"app": name},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                 "uid": deployment["metadata"]["uid"], "controller": True}],
        },
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}},
    })


def add_pod(
    sim: StandInSim,
    name: str,
    node: str | None = "h100-0",
    owner: dict[str, Any] | None = None,
    namespace: str = "default",
    state: str = "ready",  # pending | creating | loading | ready
    started_ago: float = 120.0,
    gpus: int = 1,
    cpu: str = "8",
    memory: str = "64Gi",
    args: list[str] | None = None,
    annotations: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    image: str = "vllm/vllm-openai:v0.6.3",
) -> dict[str, Any]:
    """A pod in the given lifecycle state, as the kubelet stand-in would leave it."""
    now = sim.clock.now()
    resources: dict[str, Any] = {"requests": {"cpu": cpu, "memory": memory}}
    if gpus:
        resources["requests"]["nvidia.com/gpu"] = str(gpus)
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    main = {"name": "vllm", "image": image, "resources": resources,
            "args": args if args is not None else ["--model", "meta-llama/Llama-3.1-8B-Instruct"],
            "ports": [{"containerPort": 8000}]}
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {"app": name.split("-", maxsplit=1)[0]},
                                "annotations": annotations or {}}
    if owner is not None:
        metadata["labels"] = dict(owner["metadata"]["labels"])
        metadata["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                                        "controller": True}]
    spec: dict[str, Any] = {"containers": containers or [main]}
    if node and state != "pending":
        spec["nodeName"] = node
    status: dict[str, Any] = {"phase": "Pending", "conditions": []}
    if state in ("loading", "ready"):
        started = rfc3339(now - started_ago)
        status = {
            "phase": "Running",
            "podIP": f"10.244.0.{len(name)}",
            "startTime": started,
            "conditions": [{"type": "Ready", "status": "True" if state == "ready" else "False"}],
            "containerStatuses": [{"name": c["name"], "ready": state == "ready", "restartCount": 0,
                                   "image": c["image"], "imageID": "", "state": {"running": {"startedAt": started}}}
                                  for c in spec["containers"]],
        }
    return sim.store.create("pods", {"metadata": metadata, "spec": spec, "status": status})
