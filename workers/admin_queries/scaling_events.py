"""The scaling event log: every replica change and refusal, newest first."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from models import ScalingEvent
from workers.admin_queries.cursors import MAX_PAGE_SIZE, decode_cursor, encode_cursor
from workers.domain import InvalidRequestError


def scaling_event_view(event: ScalingEvent) -> dict[str, Any]:
    return {
        "id": str(event.id),
        "deployment_id": str(event.deployment_id) if event.deployment_id else None,
        "tenant_id": event.tenant_id,
        "model_id": event.model_id,
        "trigger": str(event.trigger),
        "status": str(event.status),
        "reason": event.reason,
        "replicas_before": event.replicas_before,
        "replicas_after": event.replicas_after,
        "inputs": dict(event.inputs or {}),
        "actor": event.actor,
        "job_id": str(event.job_id) if event.job_id else None,
        "created_at": event.created_at,
    }


def list_scaling_events(
    session: Session,
    *,
    deployment_id: uuid.UUID | None = None,
    model_id: str | None = None,
    tenant_id: str | None = None,
    trigger: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Scaling events, newest first, filtered; keyset pagination on (created_at, id)."""
    query = select(ScalingEvent).order_by(ScalingEvent.created_at.desc(), ScalingEvent.id.desc())
    if deployment_id is not None:
        query = query.where(ScalingEvent.deployment_id == deployment_id)
    if model_id:
        query = query.where(ScalingEvent.model_id == model_id)
    if tenant_id:
        query = query.where(ScalingEvent.tenant_id == tenant_id)
    if trigger:
        query = query.where(ScalingEvent.trigger == trigger)
    if status:
        query = query.where(ScalingEvent.status == status)
    if since is not None:
        query = query.where(ScalingEvent.created_at >= since)
    if until is not None:
        query = query.where(ScalingEvent.created_at < until)
    if cursor:
        created_text, event_id_text = decode_cursor(cursor, 2)
        try:
            created_at = datetime.fromisoformat(str(created_text))
            event_id = uuid.UUID(str(event_id_text))
        except ValueError:
            raise InvalidRequestError("invalid_cursor", "cursor is not one this API returned",
                                      {"field": "cursor"}) from None
        query = query.where(
            or_(
                ScalingEvent.created_at < created_at,
                and_(ScalingEvent.created_at == created_at, ScalingEvent.id < event_id),
            )
        )
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    events = list(session.scalars(query.limit(limit + 1)))
    next_cursor = None
    if len(events) > limit:
        last = events[limit - 1]
        next_cursor = encode_cursor([last.created_at.isoformat(), str(last.id)])
    return [scaling_event_view(event) for event in events[:limit]], next_cursor
