"""Manual scaling by model: find the one deployment serving a model, and audit a refused scale-up."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Deployment, DeploymentStatus, ScalingEvent, ScalingEventStatus, ScalingTrigger
from workers.domain import ConflictError, NotFoundError


def deployment_for_model(session: Session, model_id: str, deployment_id: uuid.UUID | None) -> Deployment:
    """The live deployment serving ``model_id`` (any tenant); 404 if none, 409 listing them if ambiguous."""
    query = select(Deployment).where(
        Deployment.model_id == model_id,
        Deployment.deleted_at.is_(None),
        Deployment.status.not_in((DeploymentStatus.DELETED, DeploymentStatus.DELETING)),
    )
    candidates = list(session.scalars(query.order_by(Deployment.tenant_id, Deployment.name)))
    if deployment_id is not None:
        for deployment in candidates:
            if deployment.id == deployment_id:
                return deployment
        named = session.get(Deployment, deployment_id)
        if named is not None and named.model_id == model_id:
            why = f"deployment {deployment_id} is {named.status} and serves model {model_id!r} no more"
        elif named is not None:
            why = f"deployment {deployment_id} serves model {named.model_id!r}, not {model_id!r}"
        else:
            why = f"no deployment {deployment_id}"
        raise NotFoundError("deployment_not_found", why, {"model_id": model_id, "deployment_id": str(deployment_id)})
    if not candidates:
        raise NotFoundError("model_not_found", f"no live deployment serves model {model_id!r}", {"model_id": model_id})
    if len(candidates) > 1:
        raise ConflictError(
            "ambiguous_model",
            f"{len(candidates)} deployments serve model {model_id!r}; name one with deployment_id",
            {
                "model_id": model_id,
                "deployments": [
                    {"deployment_id": str(row.id), "tenant_id": row.tenant_id, "name": row.name,
                     "replicas_desired": row.replicas_desired, "status": str(row.status)}
                    for row in candidates
                ],
            },
        )
    return candidates[0]


def record_blocked_scale(
    session: Session, deployment_id: uuid.UUID, *, replicas: int, reason: str, actor: str, error: Any
) -> ScalingEvent:
    """A ``blocked`` manual scaling event for a scale-up that admission refused (the 409's audit record)."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        raise ValueError(f"deployment {deployment_id} vanished")
    event = ScalingEvent(
        deployment_id=deployment.id,
        tenant_id=deployment.tenant_id,
        model_id=deployment.model_id,
        trigger=ScalingTrigger.MANUAL,
        reason=reason,
        replicas_before=deployment.replicas_desired,
        replicas_after=replicas,
        status=ScalingEventStatus.BLOCKED,
        inputs={"source": "admin_api", "refused": {"code": error.code, "message": error.message,
                                                   "details": error.details}},
        actor=actor,
    )
    session.add(event)
    session.flush()
    return event
