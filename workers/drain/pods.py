"""The node's pods: listed page by page and sorted into classes the way ``kubectl drain`` filters them."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import FINISHED_POD_PHASES, Deployment
from workers import cluster_errors
from workers.drain.options import DrainOptions
from workers.k8s import get_clients
from workers.manifests import DEPLOYMENT_ID_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE

LIST_PAGE_SIZE = 100
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"


def controller_of(pod: dict[str, Any]) -> dict[str, Any] | None:
    for ref in pod["metadata"].get("owner_references") or []:
        if ref.get("controller"):
            return ref
    return None


def _pod_ref(pod: dict[str, Any]) -> dict[str, str]:
    return {"namespace": pod["metadata"]["namespace"], "name": pod["metadata"]["name"]}


def list_node_pods(node_name: str) -> list[dict[str, Any]]:
    """Every pod bound to the node, listed page by page (limit/continue), as wire-form dicts."""
    clients = get_clients()
    pods: list[dict[str, Any]] = []
    continue_token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"field_selector": f"spec.nodeName={node_name}", "limit": LIST_PAGE_SIZE}
        if continue_token:
            kwargs["_continue"] = continue_token
        with cluster_errors.translate():
            page = clients.core.list_pod_for_all_namespaces(**kwargs, **clients.timeout)
        for item in page.items:
            pod = clients.api_client.sanitize_for_serialization(item)
            metadata = pod.setdefault("metadata", {})
            metadata["owner_references"] = metadata.get("ownerReferences") or []
            metadata.setdefault("labels", {})
            metadata.setdefault("annotations", {})
            pods.append(pod)
        continue_token = page.metadata._continue if page.metadata else None
        if not continue_token:
            return pods


def _is_finished(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in FINISHED_POD_PHASES


def _has_emptydir(pod: dict[str, Any]) -> bool:
    return any("emptyDir" in volume for volume in (pod.get("spec") or {}).get("volumes") or [])


def classify_pods(
    session: Session, pods: list[dict[str, Any]], options: DrainOptions
) -> dict[str, Any]:
    """Sort the node's pods as kubectl drain's filters do, plus our own pods grouped by deployment.

    Returns ``{"ours": {deployment_id: [pod refs]}, "foreign": [...], "skipped": [...], "blocked": [...],
    "terminating": [...]}``. ``blocked`` pods make kubectl refuse the whole drain, and so do we.
    """
    ours: dict[str, list[dict[str, str]]] = {}
    foreign: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    blocked: list[dict[str, str]] = []
    terminating: list[dict[str, str]] = []
    deployment_ids = {
        pod["metadata"]["labels"].get(DEPLOYMENT_ID_LABEL)
        for pod in pods
        if pod["metadata"]["labels"].get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE
    }
    known = _known_deployments(session, deployment_ids)
    for pod in pods:
        ref = _pod_ref(pod)
        metadata = pod["metadata"]
        owner = controller_of(pod)
        if metadata.get("deletionTimestamp"):
            terminating.append(ref)
            continue
        if MIRROR_POD_ANNOTATION in metadata["annotations"]:
            skipped.append({**ref, "reason": "mirror pod (static, managed by the kubelet)"})
            continue
        if owner is not None and owner.get("kind") == "DaemonSet":
            skipped.append({**ref, "reason": "DaemonSet-managed pod (ignored, as --ignore-daemonsets)"})
            continue
        deployment_id = metadata["labels"].get(DEPLOYMENT_ID_LABEL)
        if (
            metadata["labels"].get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE
            and deployment_id in known
            and not _is_finished(pod)
        ):
            ours.setdefault(deployment_id, []).append(ref)
            continue
        if _is_finished(pod):
            foreign.append(ref)  # kubectl deletes completed pods whatever their owner
            continue
        if owner is None and not options.force:
            blocked.append({**ref, "reason": "declares no controller (use force)"})
            continue
        if _has_emptydir(pod) and not options.delete_emptydir_data:
            blocked.append({**ref, "reason": "uses emptyDir local storage (use delete_emptydir_data)"})
            continue
        foreign.append(ref)
    return {"ours": ours, "foreign": foreign, "skipped": skipped, "blocked": blocked, "terminating": terminating,
            "deployments": known}


def _known_deployments(session: Session, ids: set[str | None]) -> dict[str, Deployment]:
    valid = []
    for value in ids:
        try:
            valid.append(uuid.UUID(str(value)))
        except ValueError:
            continue
    if not valid:
        return {}
    rows = session.scalars(
        select(Deployment).where(Deployment.id.in_(valid), Deployment.deleted_at.is_(None))
    )
    return {str(row.id): row for row in rows}
