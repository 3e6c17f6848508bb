"""Kubelet stand-in stage timings, as data (kwok's "stages" model).

Each entry is a stage of a pod's life on a node: how long it takes in simulated seconds and how much
seeded jitter to add (a fraction of the delay, uniform ±). The kubelet controller moves a pod through
these in order; failure modes pick the alternative branches. Per-pod overrides come from pod behaviours
(`Simulation.add_pod_behavior`) or the pod's annotations (`kubesim.io/image-pull-seconds`,
`kubesim.io/model-load-seconds`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    delay: float  # simulated seconds
    jitter: float  # ± fraction of delay
    why: str

    def duration(self, rng: random.Random, override: float | None = None) -> float:
        base = self.delay if override is None else override
        if base <= 0:
            return 0.0
        return max(0.0, base * (1 + self.jitter * (2 * rng.random() - 1)))


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("image-pull-first", 60.0, 0.2, "vLLM images are ~10 GB: the first pull on a node takes a minute"),
    Stage("image-pull-cached", 5.0, 0.2, "image already on the node: only container creation remains"),
    Stage("image-pull-error", 2.0, 0.0, "a pull of a missing image fails fast"),
    Stage("err-image-pull", 1.0, 0.0, "ErrImagePull shows briefly before the back-off starts"),
    Stage("model-load", 90.0, 0.15, "Running but not Ready while the model loads onto the GPUs"),
    Stage("crash-after", 20.0, 0.1, "a bad model argument or CUDA OOM kills the server while loading"),
    Stage("oom-after", 30.0, 0.1, "the container exceeds its memory limit while loading weights"),
    Stage("fail-after", 10.0, 0.1, "the container exits for good (pod-container-running-failed)"),
    Stage("readiness-flap", 30.0, 0.2, "readiness probe alternates between passing and failing"),
    Stage("unhealthy-report", 30.0, 0.0, "how often a never-ready pod reports a failed readiness probe"),
)}

BACKOFF_BASE_SECONDS = 10.0  # kubelet's container and image back-off: 10 s doubling …
BACKOFF_MAX_SECONDS = 300.0  # … to five minutes
TERMINATION_GRACE_FRACTION = 0.2  # vLLM drains and exits well before SIGKILL
MIN_TERMINATION_SECONDS = 1.0


def backoff(attempt: int) -> float:
    """Back-off before retry number `attempt` (1-based): 10, 20, 40, … capped at 300 seconds."""
    return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempt - 1))
