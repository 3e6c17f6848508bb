"""The step machine: advance a drain through its phases as far as it can go without waiting."""

from __future__ import annotations

from datetime import timedelta

from models import JobState
from workers import node_ops
from workers.drain.endings import finish_aborted, finish_succeeded, wait_or_timeout
from workers.drain.evict import evict_all, node_empty
from workers.drain.options import MAX_BACKOFF_SECONDS, POLL_SECONDS
from workers.drain.plan import make_plan
from workers.drain.progress import (
    PHASE_CORDON,
    PHASE_EVICT,
    PHASE_PLAN,
    PHASE_SURGE,
    PHASE_WAIT_EMPTY,
    PHASE_WAIT_READY,
    DrainStep,
    now,
)
from workers.drain.surge import replacements_ready, surge


def advance(step: DrainStep) -> tuple[str, float | None]:
    """Advance as far as possible now; returns (phase reached, countdown or None when finished)."""
    if "deadline" not in step.progress:
        step.progress["deadline"] = (now() + timedelta(seconds=step.options.timeout_seconds)).isoformat()
        step.progress["started_at"] = now().isoformat()
    if step.job.cancel_requested:
        finish_aborted(step, JobState.CANCELLED, "cancelled", "the drain was cancelled; the node stays cordoned")
    phase = step.progress.get("phase", PHASE_CORDON)
    if phase == PHASE_CORDON:
        node_ops.cordon(step.session, step.node, by=f"drain:{step.job.requested_by}",
                        reason=step.options.reason or f"drain job {step.job.id}")
        phase = step.enter(PHASE_PLAN)
    if phase == PHASE_PLAN:
        countdown = make_plan(step)
        if countdown is not None:
            return PHASE_PLAN, countdown
        phase = step.enter(PHASE_SURGE)
    if phase == PHASE_SURGE:
        surge(step)
        phase = step.enter(PHASE_WAIT_READY)
    if phase == PHASE_WAIT_READY:
        if not replacements_ready(step):
            return wait_or_timeout(step, PHASE_WAIT_READY, POLL_SECONDS, "replacements_not_ready")
        phase = step.enter(PHASE_EVICT)
    if phase == PHASE_EVICT:
        if not evict_all(step):
            return wait_or_timeout(step, PHASE_EVICT, _eviction_backoff(step), "eviction_blocked")
        phase = step.enter(PHASE_WAIT_EMPTY)
    if phase == PHASE_WAIT_EMPTY:
        if not node_empty(step):
            return wait_or_timeout(step, PHASE_WAIT_EMPTY, POLL_SECONDS, "pods_still_terminating")
        finish_succeeded(step)
    raise AssertionError(f"unknown drain phase {phase!r}")


def _eviction_backoff(step: DrainStep) -> float:
    attempts = int(step.progress.get("eviction_attempts", 0))
    return min(1.0 * 2 ** min(attempts, 6), MAX_BACKOFF_SECONDS)
