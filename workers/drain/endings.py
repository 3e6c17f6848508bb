"""How a drain job ends: succeeded, cancelled, or failed (a refusal, an error or the deadline).

Every ending raises :class:`Finished` so the step stops wherever it is; an aborted drain first withdraws
its surges, and the node stays cordoned either way.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import update

from models import Job, JobState, ScalingEventStatus
from workers import admission, jobs
from workers.drain.progress import DrainStep, now
from workers.drain.replicas import scale


class Finished(Exception):  # noqa: N818 - control flow, not an error
    """Raised inside a step when the job reached a terminal state."""

    def __init__(self, state: str) -> None:
        self.state = state
        super().__init__(state)


def wait_or_timeout(step: DrainStep, phase: str, countdown: float, timeout_code: str) -> tuple[str, float]:
    if step.past_deadline():
        waiting = step.progress.get("waiting_on") or phase
        finish_aborted(
            step,
            JobState.FAILED,
            timeout_code,
            f"drain timed out after {step.options.timeout_seconds}s waiting on: {waiting}",
            details={"blocked": step.progress.get("blocked"), "waiting_on": waiting},
        )
    step.save()
    return phase, countdown


def undo_surges(step: DrainStep) -> list[str]:
    """Scale every surged, not yet returned deployment back and drop its unused surge reservations."""
    undone = []
    for item in step.plan.get("deployments", []):
        if item.get("returned"):
            continue
        moved = len(item.get("evicted", []))
        if item.get("surged"):
            with_moved = item["desired"]
            scale(item["namespace"], item["k8s_name"], with_moved)
            step.scaling_event(
                item, item["desired"] + item["k"] - moved, with_moved, ScalingEventStatus.SUCCEEDED,
                f"drain of {step.node} stopped: surge withdrawn",
            )
            undone.append(item["name"])
        if item.get("surge"):
            # The evicted replicas now run on surge rows; the surge rows nobody moved to are given back. Without
            # a surge the evicted replicas wait for GPUs and keep their reservations (see return_deployment).
            deployment_id = uuid.UUID(item["deployment_id"])
            admission.release_replicas(step.session, deployment_id, moved, node_name=step.node)
            admission.release_replicas(step.session, deployment_id, item["k"] - moved, job_id=step.job.id)
        item["returned"] = True
    return undone


def finish_aborted(
    step: DrainStep, state: JobState, code: str, message: str, details: dict[str, Any] | None = None
) -> None:
    undone = undo_surges(step)
    step.progress["phase"] = "cancelled" if state == JobState.CANCELLED else "failed"
    step.progress["waiting_on"] = None
    step.refresh_counts()
    step.save()
    error = {"code": code, "message": message, "retryable": False, "details": {**(details or {}),
                                                                             "surges_withdrawn": undone}}
    if state == JobState.CANCELLED:
        jobs.cancel(step.session, step.job.id, message)
        step.session.execute(update(Job).where(Job.id == step.job.id).values(error=error))
    else:
        jobs.fail(step.session, step.job.id, error)
    raise Finished(str(state))


def finish_succeeded(step: DrainStep) -> None:
    step.progress["phase"] = "done"
    step.progress["waiting_on"] = None
    step.refresh_counts()
    step.save()
    plan = step.plan
    summary = {
        "node": step.node,
        "cordoned": True,
        "deployments": [
            {"deployment_id": item["deployment_id"], "name": item["name"], "replicas_moved": len(item["evicted"]),
             "make_before_break": item["surge"], "replicas_desired": item["desired"]}
            for item in plan["deployments"]
        ],
        "foreign_pods_evicted": [f"{p['namespace']}/{p['name']}" for p in plan["foreign"]],
        "skipped_pods": plan["skipped"],
        "pods": step.progress.get("pods"),
        "duration_seconds": round(
            (now() - datetime.fromisoformat(step.progress["started_at"])).total_seconds(), 1
        ),
    }
    jobs.succeed(step.session, step.job.id, summary)
    raise Finished(str(JobState.SUCCEEDED))
