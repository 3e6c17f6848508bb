"""Manifest builders: the vLLM Deployment, Service and PDB for a deployment row."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from settings import Settings
from workers.manifests import (
    build_deployment,
    build_pod_disruption_budget,
    build_service,
    endpoint_url,
    label_selector,
    startup_failure_threshold,
)


@dataclass
class Row:
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    tenant_id: str = "acme"
    name: str = "llama"
    model_id: str = "meta-llama/Llama-3.1-8B-Instruct"
    image: str = "vllm/vllm-openai:v0.11.0"
    gpu_type: str = "nvidia-l40s"
    gpus_per_replica: int = 2
    replicas_desired: int = 3
    max_model_len: int | None = 8192
    dtype: str | None = "bfloat16"
    vllm_args: list = field(default_factory=lambda: ["--enable-prefix-caching"])
    k8s_namespace: str = "model-serving"
    k8s_name: str = "llama-acme"


SETTINGS = Settings(vllm_runtime_class="nvidia", create_deadline_seconds=1800)


def test_deployment_shape():
    row = Row()
    manifest = build_deployment(row, SETTINGS)
    labels = manifest["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "orchestration"
    assert labels["app.kubernetes.io/name"] == "vllm"
    assert labels["app.kubernetes.io/instance"] == "llama-acme"
    assert labels["orchestration.ai/deployment-id"] == str(row.id)
    assert labels["orchestration.ai/tenant"] == "acme"
    spec = manifest["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert spec["progressDeadlineSeconds"] >= SETTINGS.create_deadline_seconds
    pod = spec["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "nvidia-l40s"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    container = pod["containers"][0]
    assert container["image"] == row.image
    assert "command" not in container  # exec form args only, never a shell
    assert container["args"][:3] == [
        "--model=meta-llama/Llama-3.1-8B-Instruct",
        "--tensor-parallel-size=2",
        "--port=8000",
    ]
    assert "--max-model-len=8192" in container["args"]
    assert "--dtype=bfloat16" in container["args"]
    assert container["args"][-1] == "--enable-prefix-caching"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["cpu"] == "8"
    assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= SETTINGS.create_deadline_seconds
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    shm = next(volume for volume in pod["volumes"] if volume["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_optional_fields_are_omitted():
    args = build_deployment(Row(max_model_len=None, dtype=None, vllm_args=[]), SETTINGS)["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert not any(arg.startswith(("--max-model-len", "--dtype")) for arg in args)


def test_service_and_pdb():
    row = Row()
    service = build_service(row)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 8000
    assert service["spec"]["selector"]["app.kubernetes.io/instance"] == "llama-acme"
    assert endpoint_url(row) == "http://llama-acme.model-serving.svc.cluster.local:8000"
    pdb = build_pod_disruption_budget(row)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert label_selector(row.k8s_name) == (
        "app.kubernetes.io/instance=llama-acme,app.kubernetes.io/managed-by=orchestration,app.kubernetes.io/name=vllm"
    )


def test_startup_threshold_scales_with_the_deadline():
    assert startup_failure_threshold(Settings(create_deadline_seconds=600)) == 60
