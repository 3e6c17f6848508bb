"""Make before break: scale each planned deployment up by its pods on the node, then wait for Ready."""

from __future__ import annotations

from models import ScalingEventStatus
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
    waiting = []
    for item in step.plan["deployments"]:
        if not item["surged"] or item["returned"]:
            continue
        _, ready = current_replicas(item["namespace"], item["k8s_name"])
        item["replacements_ready"] = max(0, min(ready - item["desired"], item["k"]))
        if ready < item["desired"] + item["k"]:
            waiting.append(f"{item['name']} Ready {ready}/{item['desired'] + item['k']}")
    step.refresh_counts()
    step.progress["waiting_on"] = ("replacements becoming Ready: " + ", ".join(waiting)) if waiting else None
    step.save()
    return not waiting
