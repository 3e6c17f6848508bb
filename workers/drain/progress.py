"""One drain step's view of its job: the phase, plan and counters kept in ``job.progress``.

``job.progress`` is the drain's only memory between steps (each step is a new task message), so every
change goes through :meth:`DrainStep.save` before the transaction commits.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from models import Job, ScalingEvent, ScalingEventStatus, ScalingTrigger
from workers.drain.options import DrainOptions

PHASE_CORDON = "cordon"
PHASE_PLAN = "plan"
PHASE_SURGE = "surge"
PHASE_WAIT_READY = "wait_ready"
PHASE_EVICT = "evict"
PHASE_WAIT_EMPTY = "wait_empty"


def now() -> datetime:
    return datetime.now(UTC)


class DrainStep:
    """One step of one drain job, inside one transaction that holds the job's row lock."""

    def __init__(self, session: Session, job: Job) -> None:
        self.session = session
        self.job = job
        self.options = DrainOptions.from_params(dict(job.params or {}))
        self.progress: dict[str, Any] = copy.deepcopy(dict(job.progress or {}))
        self.node = job.target_id

    def save(self) -> None:
        self.progress["updated_at"] = now().isoformat()
        self.job.progress = copy.deepcopy(self.progress)
        self.session.flush()

    @property
    def plan(self) -> dict[str, Any]:
        return self.progress.setdefault("plan", {"deployments": [], "foreign": [], "skipped": []})

    def deadline(self) -> datetime:
        return datetime.fromisoformat(self.progress["deadline"])

    def past_deadline(self) -> bool:
        return now() >= self.deadline()

    def enter(self, phase: str) -> str:
        self.progress["phase"] = phase
        self.progress["waiting_on"] = None
        self.progress["blocked"] = None
        self.progress["eviction_attempts"] = 0
        self.save()
        return phase

    def refresh_counts(self) -> None:
        plan = self.plan
        total = sum(len(item["pods"]) for item in plan["deployments"]) + len(plan["foreign"])
        evicted = sum(len(item["evicted"]) for item in plan["deployments"]) + sum(
            1 for pod in plan["foreign"] if pod.get("evicted")
        )
        self.progress["pods"] = {"total": total, "evicted": evicted, "remaining": total - evicted}
        surged = [item for item in plan["deployments"] if item["surge"]]
        self.progress["replacements"] = {
            "requested": sum(item["k"] for item in surged),
            "ready": sum(item.get("replacements_ready", 0) for item in surged),
        }

    def scaling_event(self, item: dict[str, Any], before: int, after: int, status: ScalingEventStatus,
                      reason: str, **inputs: Any) -> ScalingEvent:
        event = ScalingEvent(
            deployment_id=uuid.UUID(item["deployment_id"]),
            tenant_id=item["tenant_id"],
            model_id=item["model_id"],
            trigger=ScalingTrigger.DRAIN,
            reason=reason,
            replicas_before=before,
            replicas_after=after,
            status=status,
            inputs={"node": self.node, "pods_on_node": item["k"], **inputs},
            actor=self.job.requested_by,
            job_id=self.job.id,
        )
        self.session.add(event)
        self.session.flush()
        return event
