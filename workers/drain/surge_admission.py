"""Reserve GPU room elsewhere for a drain's extra replicas, through the same admission as any scale-up."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from models import Deployment
from workers import admission


def admit_surge(session: Session, deployment: Deployment, job_id: uuid.UUID | None, replicas: int) -> dict[str, int]:
    # A drain surge is platform-initiated and temporary (it ends as a move, not growth): no tenant quota.
    placement = admission.admit_replicas(session, deployment, replicas=replicas, job_id=job_id, check_quota=False)
    return dict(placement.replicas_by_node)
