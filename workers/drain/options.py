"""What a caller may ask of a drain, and the timings every drain step shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 1800
MAX_TIMEOUT_SECONDS = 24 * 3600
POLL_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 15.0


@dataclass(frozen=True)
class DrainOptions:
    force: bool = False
    delete_emptydir_data: bool = False
    allow_capacity_loss: bool = False
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    grace_period_seconds: int | None = None
    reason: str | None = None

    def to_params(self) -> dict[str, Any]:
        return {
            "force": self.force,
            "delete_emptydir_data": self.delete_emptydir_data,
            "allow_capacity_loss": self.allow_capacity_loss,
            "timeout_seconds": self.timeout_seconds,
            "grace_period_seconds": self.grace_period_seconds,
            "reason": self.reason,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> DrainOptions:
        return cls(
            force=bool(params.get("force", False)),
            delete_emptydir_data=bool(params.get("delete_emptydir_data", False)),
            allow_capacity_loss=bool(params.get("allow_capacity_loss", False)),
            timeout_seconds=int(params.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS),
            grace_period_seconds=params.get("grace_period_seconds"),
            reason=params.get("reason"),
        )
