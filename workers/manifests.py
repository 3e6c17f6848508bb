"""Kubernetes manifests (plain dicts) for a vLLM deployment: Deployment, Service, PodDisruptionBudget.

Dicts rather than client model objects: they are what ``create_namespaced_*`` and patches accept,
they compare and serialise trivially in tests, and the shape is visible in one place.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from settings import Settings

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "orchestration"
NAME_LABEL = "app.kubernetes.io/name"
NAME_VALUE = "vllm"
INSTANCE_LABEL = "app.kubernetes.io/instance"
DEPLOYMENT_ID_LABEL = "orchestration.ai/deployment-id"
TENANT_LABEL = "orchestration.ai/tenant"
RESTARTED_AT_ANNOTATION = "orchestration.ai/restartedAt"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
CONTAINER_NAME = "vllm"
VLLM_PORT = 8000
HEALTH_PATH = "/health"
STARTUP_PERIOD_SECONDS = 10
# Host resources per GPU: vLLM's tokenizer, scheduler and detokenizer threads, plus pinned host memory
# for KV-cache swap and weight loading, grow with the number of GPUs a replica drives.
CPU_PER_GPU = 4
MEMORY_GIB_PER_GPU = 24
SHM_GIB_PER_GPU = 8


class DeploymentLike(Protocol):
    """What the builders read from a deployment: a ``models.Deployment`` row or the claim's ``DeploymentRow``
    (a Protocol keeps them testable without a DB). Read-only members, so a frozen dataclass qualifies."""

    @property
    def id(self) -> Any: ...

    @property
    def tenant_id(self) -> str: ...

    @property
    def model_id(self) -> str: ...

    @property
    def image(self) -> str: ...

    @property
    def gpu_type(self) -> str: ...

    @property
    def gpus_per_replica(self) -> int: ...

    @property
    def replicas_desired(self) -> int: ...

    @property
    def max_model_len(self) -> int | None: ...

    @property
    def dtype(self) -> str | None: ...

    @property
    def vllm_args(self) -> list[Any]: ...

    @property
    def k8s_namespace(self) -> str: ...

    @property
    def k8s_name(self) -> str: ...


def selector_labels(deployment: DeploymentLike) -> dict[str, str]:
    """The immutable Deployment/PDB selector and Service selector: ours, vLLM, this instance."""
    return _selector_labels(deployment.k8s_name)


def _selector_labels(k8s_name: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, NAME_LABEL: NAME_VALUE, INSTANCE_LABEL: k8s_name}


def common_labels(deployment: DeploymentLike) -> dict[str, str]:
    return {
        **selector_labels(deployment),
        DEPLOYMENT_ID_LABEL: str(deployment.id),
        TENANT_LABEL: deployment.tenant_id,
    }


def label_selector(k8s_name: str) -> str:
    """``selector_labels`` of the deployment named ``k8s_name`` as a list-call ``labelSelector`` string."""
    return ",".join(f"{key}={value}" for key, value in sorted(_selector_labels(k8s_name).items()))


def endpoint_url(deployment: DeploymentLike) -> str:
    return f"http://{deployment.k8s_name}.{deployment.k8s_namespace}.svc.cluster.local:{VLLM_PORT}"


def _metadata(deployment: DeploymentLike) -> dict[str, Any]:
    return {"name": deployment.k8s_name, "namespace": deployment.k8s_namespace, "labels": common_labels(deployment)}


def vllm_container_args(deployment: DeploymentLike) -> list[str]:
    """The vLLM server arguments, exec form (never a shell string)."""
    args = [
        f"--model={deployment.model_id}",
        f"--tensor-parallel-size={deployment.gpus_per_replica}",
        f"--port={VLLM_PORT}",
        "--host=0.0.0.0",  # the pod IP must be reachable from the Service
    ]
    if deployment.max_model_len:
        args.append(f"--max-model-len={deployment.max_model_len}")
    if deployment.dtype:
        args.append(f"--dtype={deployment.dtype}")
    args.extend(str(arg) for arg in deployment.vllm_args or [])
    return args


def startup_failure_threshold(settings: Settings) -> int:
    """Probe failures tolerated while the model downloads and loads: CREATE_DEADLINE_SECONDS worth."""
    return max(math.ceil(settings.create_deadline_seconds / STARTUP_PERIOD_SECONDS), 1)


def build_deployment(deployment: DeploymentLike, settings: Settings) -> dict[str, Any]:
    """The apps/v1 Deployment for ``deployment``."""
    gpus = deployment.gpus_per_replica
    pod_labels = common_labels(deployment)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(deployment),
        "spec": {
            "replicas": deployment.replicas_desired,
            "selector": {"matchLabels": selector_labels(deployment)},
            # maxSurge 0: on a GPU-full cluster a surge pod can never schedule, and with the default 25 %
            # surge the rollout would wait forever for it. Replacing one pod at a time needs no spare GPU.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            # Model download + load can take most of the create deadline; reporting ProgressDeadlineExceeded
            # earlier would fail healthy but slow rollouts.
            "progressDeadlineSeconds": settings.create_deadline_seconds + 120,
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "runtimeClassName": settings.vllm_runtime_class,
                    "nodeSelector": {GPU_PRODUCT_LABEL: deployment.gpu_type},
                    "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
                    "terminationGracePeriodSeconds": 60,
                    "containers": [
                        {
                            "name": CONTAINER_NAME,
                            "image": deployment.image,
                            "imagePullPolicy": "IfNotPresent",
                            "args": vllm_container_args(deployment),
                            "ports": [{"name": "http", "containerPort": VLLM_PORT, "protocol": "TCP"}],
                            "resources": {
                                "limits": {GPU_RESOURCE: str(gpus), "memory": f"{MEMORY_GIB_PER_GPU * gpus}Gi"},
                                "requests": {
                                    GPU_RESOURCE: str(gpus),
                                    "cpu": str(CPU_PER_GPU * gpus),
                                    "memory": f"{MEMORY_GIB_PER_GPU * gpus}Gi",
                                },
                            },
                            "startupProbe": {
                                "httpGet": {"path": HEALTH_PATH, "port": VLLM_PORT},
                                "periodSeconds": STARTUP_PERIOD_SECONDS,
                                "failureThreshold": startup_failure_threshold(settings),
                                "timeoutSeconds": 5,
                            },
                            "readinessProbe": {
                                "httpGet": {"path": HEALTH_PATH, "port": VLLM_PORT},
                                "periodSeconds": 5,
                                "failureThreshold": 3,
                                "timeoutSeconds": 5,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": HEALTH_PATH, "port": VLLM_PORT},
                                "periodSeconds": 15,
                                "failureThreshold": 4,
                                "timeoutSeconds": 10,
                            },
                            "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],  # noqa: S108 - a mount point, not a temp file
                        }
                    ],
                    # NCCL and PyTorch workers exchange tensors through /dev/shm; the container default (64 MiB)
                    # crashes tensor-parallel replicas.
                    "volumes": [
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{SHM_GIB_PER_GPU * gpus}Gi"}}
                    ],
                },
            },
        },
    }


def build_service(deployment: DeploymentLike) -> dict[str, Any]:
    """ClusterIP Service on port 8000; its DNS name is the deployment's endpoint."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(deployment),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(deployment),
            "ports": [{"name": "http", "port": VLLM_PORT, "targetPort": VLLM_PORT, "protocol": "TCP"}],
        },
    }


def build_pod_disruption_budget(deployment: DeploymentLike) -> dict[str, Any]:
    """PDB with maxUnavailable 1: a node drain evicts one replica at a time.

    maxUnavailable rather than minAvailable so a single-replica deployment can still be drained
    (minAvailable 1 would block eviction of its only pod forever).
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(deployment),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(deployment)}},
    }
