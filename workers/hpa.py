"""The Kubernetes HorizontalPodAutoscaler's arithmetic, as pure functions.

No I/O here: the autoscaler sweep gathers the per-replica metric values and the recommendation history,
and this module answers "how many replicas". It follows the HPA controller
(``pkg/controller/podautoscaler``): a usage ratio per metric with a tolerance band, pods without metrics
counted against the direction of the change, the largest recommendation across metrics, min/max bounds,
a per-step cap, and stabilization windows (scale-up takes the smallest recommendation of its window,
scale-down the largest of its own), so a metric that oscillates does not make the replica count flap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The HPA's default tolerance: a ratio within 10 % of 1.0 means "leave it alone".
DEFAULT_TOLERANCE = 0.1


@dataclass(frozen=True)
class HpaPolicy:
    """Bounds and damping for one deployment (defaults mirror the HPA's ``behavior`` defaults)."""

    min_replicas: int
    max_replicas: int
    tolerance: float = DEFAULT_TOLERANCE
    scale_up_stabilization_seconds: float = 0.0
    scale_down_stabilization_seconds: float = 300.0
    # Per-step cap, as the HPA's default policies: up by at most max(100 %, 4 pods), down by at most 100 %.
    scale_up_max_percent: float = 100.0
    scale_up_max_pods: int = 4
    scale_down_max_percent: float = 100.0

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < self.min_replicas:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas, got {self.min_replicas}..{self.max_replicas}")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance}")


@dataclass(frozen=True)
class MetricSample:
    """One target metric of one deployment: its target per replica and what each replica reports.

    ``values`` holds one figure per replica that has the metric (ready pods); ``unready_replicas``
    counts replicas that exist but report nothing yet (starting up, or their metric is missing).
    """

    name: str
    target: float
    values: Sequence[float]
    unready_replicas: int = 0


@dataclass(frozen=True)
class MetricRecommendation:
    name: str
    target: float
    average: float | None
    ratio: float | None
    replicas: int | None  # None when the metric has no data: it cannot vote

    def as_dict(self) -> dict[str, float | int | str | None]:
        return {
            "metric": self.name,
            "target": self.target,
            "average": None if self.average is None else round(self.average, 4),
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "replicas": self.replicas,
        }


@dataclass(frozen=True)
class Recommendation:
    """What the autoscaler should do and why; ``inputs`` is stored on the scaling event."""

    current_replicas: int
    raw_replicas: int  # the largest per-metric recommendation, before bounds, caps and windows
    desired_replicas: int
    metrics: list[MetricRecommendation]
    limited_by: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return self.desired_replicas != self.current_replicas

    def inputs(self) -> dict[str, object]:
        return {
            "current_replicas": self.current_replicas,
            "raw_replicas": self.raw_replicas,
            "desired_replicas": self.desired_replicas,
            "metrics": [metric.as_dict() for metric in self.metrics],
            "limited_by": list(self.limited_by),
        }


def replicas_for_metric(sample: MetricSample, current_replicas: int, tolerance: float) -> MetricRecommendation:
    """The HPA's per-metric rule: ``ceil(ready * average / target)`` unless within the tolerance.

    Like the HPA, replicas without data are assumed to sit at 0 when the ready ones ask to scale up and
    at the target when they ask to scale down, so missing data can only damp a change, never cause one.
    """
    if sample.target <= 0:
        raise ValueError(f"target of {sample.name} must be positive, got {sample.target}")
    values = list(sample.values)
    if not values:
        return MetricRecommendation(sample.name, sample.target, None, None, None)
    ready = len(values)
    average = sum(values) / ready
    ratio = average / sample.target
    if sample.unready_replicas:
        scaling_up = ratio > 1.0
        filler = 0.0 if scaling_up else sample.target
        padded = values + [filler] * sample.unready_replicas
        padded_ratio = (sum(padded) / len(padded)) / sample.target
        # The padding may flip the direction or land inside the tolerance: then hold still.
        if abs(padded_ratio - 1.0) <= tolerance or (padded_ratio > 1.0) != scaling_up:
            return MetricRecommendation(sample.name, sample.target, average, padded_ratio, current_replicas)
        return MetricRecommendation(
            sample.name, sample.target, average, padded_ratio, math.ceil(padded_ratio * len(padded))
        )
    if abs(ratio - 1.0) <= tolerance:
        return MetricRecommendation(sample.name, sample.target, average, ratio, current_replicas)
    return MetricRecommendation(sample.name, sample.target, average, ratio, math.ceil(ratio * ready))


def stabilize(
    raw: int,
    current: int,
    history: Sequence[tuple[float, int]],
    now: float,
    policy: HpaPolicy,
) -> int:
    """Apply the stabilization windows to ``raw`` given earlier recommendations ``(time, replicas)``.

    Scale-down uses the largest recommendation of the last ``scale_down_stabilization_seconds`` (so a
    brief dip never removes replicas), scale-up the smallest of its window (0 s by default: react at once).
    """
    up_window = [r for t, r in history if now - t <= policy.scale_up_stabilization_seconds] + [raw]
    down_window = [r for t, r in history if now - t <= policy.scale_down_stabilization_seconds] + [raw]
    up_limit = min(up_window)
    down_limit = max(down_window)
    if raw > current:
        return max(current, up_limit)
    if raw < current:
        return min(current, down_limit)
    return current


def step_bounds(current: int, policy: HpaPolicy) -> tuple[int, int]:
    """The fewest and most replicas one decision may move to from ``current`` (the per-step cap)."""
    up = max(math.ceil(current * (1 + policy.scale_up_max_percent / 100.0)), current + policy.scale_up_max_pods)
    down = math.floor(current * (1 - policy.scale_down_max_percent / 100.0))
    return max(down, 0), up


def recommend(
    samples: Sequence[MetricSample],
    current_replicas: int,
    policy: HpaPolicy,
    history: Sequence[tuple[float, int]] = (),
    now: float = 0.0,
) -> Recommendation:
    """Desired replicas for one deployment: max over metrics, then windows, step cap and min/max.

    ``history`` is the earlier raw recommendations (after min/max), which the caller keeps and
    should extend with ``(now, result.raw_replicas)`` — the HPA stores exactly that.
    """
    per_metric = [replicas_for_metric(sample, current_replicas, policy.tolerance) for sample in samples]
    votes = [metric.replicas for metric in per_metric if metric.replicas is not None]
    limited_by: list[str] = []
    raw = max(votes) if votes else current_replicas
    if not votes:
        limited_by.append("no_metrics")
    bounded = min(max(raw, policy.min_replicas), policy.max_replicas)
    if bounded != raw:
        limited_by.append("max_replicas" if raw > policy.max_replicas else "min_replicas")
    stabilized = stabilize(bounded, current_replicas, history, now, policy)
    if stabilized != bounded:
        limited_by.append("scale_up_stabilization" if bounded > current_replicas else "scale_down_stabilization")
    low, high = step_bounds(current_replicas, policy)
    desired = min(max(stabilized, low), high)
    if desired != stabilized:
        limited_by.append("step_cap")
    # The window or cap must never carry a deployment outside its own bounds.
    desired = min(max(desired, policy.min_replicas), policy.max_replicas)
    return Recommendation(current_replicas, bounded, desired, per_metric, limited_by)


def prune_history(history: Sequence[tuple[float, int]], now: float, policy: HpaPolicy) -> list[tuple[float, int]]:
    """Drop recommendations older than the longest window: they can no longer influence a decision."""
    horizon = max(policy.scale_up_stabilization_seconds, policy.scale_down_stabilization_seconds)
    return [(t, r) for t, r in history if now - t <= horizon]


def policy_from_settings(
    min_replicas: int, max_replicas: int, overrides: Mapping[str, float] | None = None
) -> HpaPolicy:
    """An :class:`HpaPolicy` with the deployment's bounds and optional per-deployment window overrides."""
    overrides = dict(overrides or {})
    known = {
        "tolerance",
        "scale_up_stabilization_seconds",
        "scale_down_stabilization_seconds",
        "scale_up_max_percent",
        "scale_up_max_pods",
        "scale_down_max_percent",
    }
    kwargs: dict[str, Any] = {key: value for key, value in overrides.items() if key in known}
    if "scale_up_max_pods" in kwargs:
        kwargs["scale_up_max_pods"] = int(kwargs["scale_up_max_pods"])
    return HpaPolicy(min_replicas=min_replicas, max_replicas=max_replicas, **kwargs)
