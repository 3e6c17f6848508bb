"""What the health-monitor tests share: one config, one way to run a sweep on the cluster's clock, its events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kubesim.cluster import SimCluster
from models import ScalingEvent, ScalingTrigger
from tests.workers.sweeps_support import sim_now
from workers.health_monitor import HealthMonitorConfig, run_health_monitor
from workers.recovery import RecoveryPolicy
from workers.sweep_metrics import SweepReport

CONFIG = HealthMonitorConfig(
    create_deadline_seconds=1800,
    model_load_deadline_seconds=600,
    recovery_policy=RecoveryPolicy(max_attempts=3, base_backoff_seconds=60, max_backoff_seconds=600),
    namespace="model-serving",
)


def sweep(session: Session, sim: SimCluster, redis_client: tuple[Any, str], **overrides: Any) -> SweepReport:
    """One health-monitor run at the simulated cluster's time; jobs it would enqueue are dropped."""
    client, prefix = redis_client
    return run_health_monitor(
        session, now=sim_now(sim), config=overrides.pop("config", CONFIG), redis_client=client, key_prefix=prefix,
        enqueue=overrides.pop("enqueue", lambda job: None), **overrides,
    )


def recovery_events(session: Session, deployment_id: Any) -> list[ScalingEvent]:
    """The deployment's recovery steps, oldest first, read fresh from the database."""
    session.expire_all()
    return list(session.scalars(
        select(ScalingEvent)
        .where(ScalingEvent.deployment_id == deployment_id, ScalingEvent.trigger == ScalingTrigger.RECOVERY)
        .order_by(ScalingEvent.inputs["at"].as_float())
    ))
