"""Builders and readers shared by the controller tests (no tests here)."""

from __future__ import annotations

from typing import Any

from kubesim.admission import StoreAdmission
from kubesim.sim import Simulation

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
IMAGE = "vllm/vllm-openai:v0.6.3"


def pod_spec(gpus: int = 8, image: str = IMAGE, cpu: str = "4", memory: str = "32Gi", **extra: Any) -> dict:
    resources: dict = {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}}
    if gpus:
        resources["limits"]["nvidia.com/gpu"] = str(gpus)
        resources["requests"]["nvidia.com/gpu"] = str(gpus)
    spec = {
        "tolerations": [dict(GPU_TOLERATION)],
        "containers": [{"name": "vllm", "image": image, "resources": resources}],
    }
    spec.update(extra)
    return spec


def deployment(name: str, replicas: int = 1, gpus: int = 8, strategy: dict | None = None,
               labels: dict | None = None, annotations: dict | None = None, **spec_extra: Any) -> dict:
    labels = labels or {"app": name}
    body: dict = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels), "annotations": annotations or {}},
                         "spec": pod_spec(gpus)},
        },
    }
    if strategy is not None:
        body["spec"]["strategy"] = strategy
    body["spec"].update(spec_extra)
    return body


def bare_pod(name: str, gpus: int = 0, labels: dict | None = None, **spec_extra: Any) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": pod_spec(gpus, **spec_extra)}


def pods(sim: Simulation, namespace: str = "default", app: str | None = None) -> list[dict]:
    items = sim.store.list("pods", namespace)[0]
    if app is not None:
        items = [p for p in items if (p["metadata"].get("labels") or {}).get("app") == app]
    return items


def condition(obj: dict, kind: str) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def is_ready(pod: dict) -> bool:
    ready = condition(pod, "Ready")
    return ready is not None and ready["status"] == "True"


def events(sim: Simulation, reason: str, namespace: str = "default") -> list[dict]:
    return [e for e in sim.store.list("events", namespace)[0] if e["reason"] == reason]


def container(pod: dict) -> dict:
    return pod["status"]["containerStatuses"][0]


def deployment_ready(sim: Simulation, name: str, namespace: str = "default") -> bool:
    obj = sim.store.get("deployments", namespace, name)
    status = obj.get("status") or {}
    wanted = obj["spec"]["replicas"]
    return (status.get("observedGeneration") == obj["metadata"]["generation"]
            and status.get("updatedReplicas", 0) == wanted and status.get("availableReplicas", 0) == wanted
            and status.get("replicas", 0) == wanted)


def start_sim(spec: str = "2xnvidia-l40s:8,1xnvidia-h100-80gb:8", seed: int = 7) -> Simulation:
    """A started Simulation (no HTTP) with the apiserver's admission installed, as the server does."""
    sim = Simulation(nodes=spec, seed=seed)
    sim.store.admission = StoreAdmission(sim.store)
    sim.start()
    sim.settle()
    return sim
