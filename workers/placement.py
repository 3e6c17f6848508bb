"""Best-fit placement of replicas onto GPU nodes (pure: no database, no cluster).

Each replica needs ``gpus_per_replica`` GPUs on ONE node (vLLM tensor parallelism does not span nodes).
Replicas go to the fullest node that still fits them, which keeps whole nodes free for the large
tensor-parallel models that need them; placing on the emptiest node would fragment every node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Shortfall:
    """Why a request does not fit: what was asked, what is free in total and in the largest block."""

    requested_per_replica: int
    replicas: int
    placed_replicas: int
    free_total: int
    largest_block: int


@dataclass(frozen=True)
class Placement:
    """Replicas per node when everything fit, else ``shortfall`` explains why not."""

    replicas_by_node: dict[str, int] = field(default_factory=dict)
    shortfall: Shortfall | None = None

    @property
    def fits(self) -> bool:
        return self.shortfall is None


def place_replicas(free_by_node: Mapping[str, int], replicas: int, gpus_per_replica: int) -> Placement:
    """Place ``replicas`` x ``gpus_per_replica`` GPUs best-fit onto ``free_by_node`` (free GPUs per node).

    Ties between equally full nodes break on the node name, so the same input always gives the same
    placement (tests and operators can predict it).
    """
    if gpus_per_replica <= 0:
        raise ValueError("gpus_per_replica must be positive")
    if replicas < 0:
        raise ValueError("replicas must not be negative")
    remaining = {node: max(int(free), 0) for node, free in free_by_node.items()}
    free_total = sum(remaining.values())
    largest_block = max(remaining.values(), default=0)
    placed: Counter[str] = Counter()
    for _ in range(replicas):
        candidates = [(free, node) for node, free in remaining.items() if free >= gpus_per_replica]
        if not candidates:
            return Placement(
                replicas_by_node=dict(placed),
                shortfall=Shortfall(
                    requested_per_replica=gpus_per_replica,
                    replicas=replicas,
                    placed_replicas=sum(placed.values()),
                    free_total=free_total,
                    largest_block=largest_block,
                ),
            )
        _, node = min(candidates)
        remaining[node] -= gpus_per_replica
        placed[node] += 1
    return Placement(replicas_by_node=dict(placed))
