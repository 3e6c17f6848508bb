"""Read and set a Kubernetes Deployment's replica count (absolute counts, so a repeated step is harmless)."""

from __future__ import annotations

from workers import cluster_errors
from workers.k8s import get_clients


def current_replicas(namespace: str, name: str) -> tuple[int, int]:
    """(spec.replicas, status.readyReplicas) of the Kubernetes Deployment."""
    clients = get_clients()
    with cluster_errors.translate():
        obj = clients.apps.read_namespaced_deployment(name, namespace, **clients.timeout)
    return int(obj.spec.replicas or 0), int((obj.status.ready_replicas if obj.status else 0) or 0)


def scale(namespace: str, name: str, replicas: int) -> None:
    clients = get_clients()
    with cluster_errors.translate():
        clients.apps.patch_namespaced_deployment_scale(
            name, namespace, {"spec": {"replicas": replicas}}, **clients.timeout
        )
