"""Evict the old pods through the Eviction API (PodDisruptionBudgets answer 429), then wait for the node to empty."""

from __future__ import annotations

import json
import uuid
from typing import Any

from kubernetes.client import V1DeleteOptions, V1Eviction, V1ObjectMeta
from sqlalchemy import func, update

from models import PodAllocation, ScalingEventStatus
from workers import admission, cluster_errors
from workers.drain.pods import MIRROR_POD_ANNOTATION, controller_of, list_node_pods
from workers.drain.progress import DrainStep
from workers.drain.replicas import scale
from workers.k8s import get_clients


def evict_all(step: DrainStep) -> bool:
    """One pass of evictions; True when every planned pod is gone or going."""
    present = {(pod["metadata"]["namespace"], pod["metadata"]["name"]): pod for pod in list_node_pods(step.node)}
    blocked: list[dict[str, str]] = []
    for item in step.plan["deployments"]:
        for pod_name in item["pods"]:
            if pod_name in item["evicted"]:
                continue
            outcome = evict_one(step, present, item["namespace"], pod_name)
            if outcome is not None:
                blocked.append(outcome)
                break  # the budget counts this deployment's pods together: retry it on the next pass
            item["evicted"].append(pod_name)
            if item["surged"]:
                # Scale down by one at once: the ReplicaSet removes the replacement it is about to create
                # for the evicted pod (not Ready), and the PDB recomputes against the lower count.
                remaining = item["k"] - len(item["evicted"])
                scale(item["namespace"], item["k8s_name"], item["desired"] + remaining)
            step.refresh_counts()
            step.save()
        if len(item["evicted"]) == item["k"] and not item["returned"]:
            return_deployment(step, item)
    for pod in step.plan["foreign"]:
        if pod.get("evicted"):
            continue
        outcome = evict_one(step, present, pod["namespace"], pod["name"])
        if outcome is not None:
            blocked.append(outcome)
            continue
        pod["evicted"] = True
    step.refresh_counts()
    if blocked:
        step.progress["eviction_attempts"] = int(step.progress.get("eviction_attempts", 0)) + 1
        step.progress["blocked"] = blocked
        step.progress["waiting_on"] = "evictions blocked by PodDisruptionBudget: " + "; ".join(
            f"{b['namespace']}/{b['name']}: {b['message']}" for b in blocked
        )
    else:
        step.progress["blocked"] = None
        step.progress["waiting_on"] = None
    step.save()
    return not blocked


def evict_one(
    step: DrainStep, present: dict[tuple[str, str], dict[str, Any]], namespace: str, name: str
) -> dict | None:
    """Evict one pod; None when it is gone or going, else the blocking budget's message."""
    pod = present.get((namespace, name))
    if pod is None or pod["metadata"].get("deletionTimestamp"):
        return None
    clients = get_clients()
    grace = step.options.grace_period_seconds
    body = V1Eviction(
        api_version="policy/v1",
        kind="Eviction",
        metadata=V1ObjectMeta(name=name, namespace=namespace),
        delete_options=V1DeleteOptions(grace_period_seconds=grace) if grace is not None else None,
    )
    try:
        with cluster_errors.translate():
            clients.core.create_namespaced_pod_eviction(name, namespace, body, **clients.timeout)
    except cluster_errors.ClusterError as error:
        if error.status == 404:
            return None
        if error.status == 429:
            return {"namespace": namespace, "name": name, "message": _budget_message(error)}
        raise
    return None


def return_deployment(step: DrainStep, item: dict[str, Any]) -> None:
    """All old pods of the deployment are evicted: settle it at its desired count and move its reservations."""
    if item["surged"]:
        scale(item["namespace"], item["k8s_name"], item["desired"])
        step.scaling_event(
            item, item["desired"] + item["k"], item["desired"], ScalingEventStatus.SUCCEEDED,
            f"drain of {step.node}: old replicas evicted, back to {item['desired']}",
        )
    if item["surge"]:
        # The replicas now run where the surge reserved room: the surge rows stay (they now describe the
        # moved replicas) and the reservations that pointed at the drained node are given back.
        admission.release_replicas(step.session, uuid.UUID(item["deployment_id"]), item["k"], node_name=step.node)
    # Without a surge (no room elsewhere, drained with allow_capacity_loss) the evicted replicas are still wanted
    # and wait for GPUs: their reservations stay (counted against the tenant's quota, on the cordoned node, which
    # admission does not offer), and the resource tracker moves them to the node the pods start on. Until its next
    # sweep that node's GPUs still look free to admission: the scheduler, not the ledger, keeps them apart.
    item["returned"] = True


def node_empty(step: DrainStep) -> bool:
    remaining = []
    pods = list_node_pods(step.node)
    for pod in pods:
        metadata = pod["metadata"]
        owner = controller_of(pod)
        if MIRROR_POD_ANNOTATION in metadata["annotations"]:
            continue
        if owner is not None and owner.get("kind") == "DaemonSet":
            continue
        remaining.append(f"{metadata['namespace']}/{metadata['name']}")
    step.progress["waiting_on"] = ("pods leaving the node: " + ", ".join(remaining[:10])) if remaining else None
    if not remaining:
        _close_departed_pod_rows(step, pods)
    step.save()
    return not remaining


def _close_departed_pod_rows(step: DrainStep, pods: list[dict[str, Any]]) -> None:
    """Close the node's pod rows of pods that left it, so the node views show the node empty when the drain
    ends rather than at the next resource-tracker sweep (which adds the replacements' rows elsewhere)."""
    present = [f"{pod['metadata']['namespace']}/{pod['metadata']['name']}" for pod in pods]
    step.session.execute(
        update(PodAllocation)
        .where(
            PodAllocation.node_name == step.node,
            PodAllocation.terminated_at.is_(None),
            func.concat(PodAllocation.namespace, "/", PodAllocation.pod_name).not_in(present or [""]),
        )
        .values(terminated_at=func.now(), ready=False)
    )


def _budget_message(error: cluster_errors.ClusterError) -> str:
    """The DisruptionBudget cause ("The disruption budget X needs N healthy pods ...") if the body has one."""
    cause = error.__cause__
    body = getattr(cause, "body", None)
    if body:
        try:
            payload = json.loads(body)
        except (TypeError, ValueError):
            payload = {}
        for item in (payload.get("details") or {}).get("causes") or []:
            if item.get("reason") == "DisruptionBudget" and item.get("message"):
                return f"{payload.get('message', error.message)} {item['message']}"
    return error.message
