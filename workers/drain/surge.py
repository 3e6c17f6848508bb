"""Make before break: scale each planned deployment up by its pods on the node, then wait for Ready."""

from __future__ import annotations

from typing import Any

from models import ScalingEventStatus
from workers.diagnosis import is_pod_ready
from workers.drain.pods import list_node_pods
from workers.drain.progress import DrainStep
from workers.drain.replicas import current_replicas, scale


def surge(step: DrainStep) -> None:
    for item in step.plan["deployments"]:
        if not item["surge"] or item["surged"]:
            continue
        scale(item["namespace"], item["k8s_name"], item["desired"] + item["k"])
        event = step.scaling_event(
            item, item["desired"], item["desired"] + item["k"], ScalingEventStatus.SUCCEEDED,
            f"drain of {step.node}: surge {item['k']} replacement(s) before evicting (make-before-break)",
            replacement_nodes=item.get("replacement_nodes", {}),
        )
        item["surged"] = True
        item["surge_event_id"] = str(event.id)
    step.refresh_counts()
    step.save()


def replacements_ready(step: DrainStep) -> bool:
    """Whether every surged deployment can lose its pods on the node and still have as many Ready replicas as it
    had before the drain (make-before-break). A healthy deployment waits for all its replacements; one whose pods
    on the node were not Ready (crash-looping, still loading) loses no serving capacity when they go, so it does
    not wait for replacements that may never be Ready (a drain of a crash-looping deployment waited out its whole
    timeout, holding the deployment from its tenant)."""
    waiting = []
    node_pods: dict[tuple[str, str], dict[str, Any]] | None = None
    for item in step.plan["deployments"]:
        if not item["surged"] or item["returned"]:
            continue
        _, ready = current_replicas(item["namespace"], item["k8s_name"])
        item["replacements_ready"] = max(0, min(ready - item["desired"], item["k"]))
        if node_pods is None:
            node_pods = {(pod["metadata"]["namespace"], pod["metadata"]["name"]): pod
                         for pod in list_node_pods(step.node)}
        ready_here = sum(1 for name in item["pods"] if is_pod_ready(node_pods.get((item["namespace"], name))))
        needed = min(item["ready_before"], item["desired"]) + ready_here
        if ready < needed:
            waiting.append(f"{item['name']} Ready {ready}/{needed}")
    step.refresh_counts()
    step.progress["waiting_on"] = ("replacements becoming Ready: " + ", ".join(waiting)) if waiting else None
    step.save()
    return not waiting
