"""Idempotency-Key look-ups shared by every job submission (deployment operations and node jobs).

A key belongs to a scope: the tenant for a tenant's requests, the requester for requests acting for no tenant
(an admin's scale, cordon or drain), so one admin reusing a key across any two operations gets 409
``idempotency_key_reused`` instead of a second job. The key is locked for the rest of the transaction before it
is looked up, so two concurrent requests with one key are decided one after the other: the second finds the
first's job (a replay) instead of both inserting one.
"""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from models import Job
from workers.domain import ConflictError


def scope_for(tenant_id: str | None, requested_by: str) -> str:
    return tenant_id or f"requester:{requested_by}"


def earlier_job(
    session: Session, scope: str, key: str | None, fingerprint: str | None, *, former_scope: str | None = None
) -> Job | None:
    """The job an earlier request with this key made (None without a key, or for a new one); ConflictError if
    that request was a different one (another fingerprint). ``former_scope``: where such a key was kept before
    (node jobs' keys were scoped ``admin:<requester>``), so a retry sent across an upgrade still finds its job."""
    if key is None:
        return None
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:scoped_key, 0))"), {"scoped_key": f"{scope}\x1f{key}"}
    )
    scopes = [scope] if former_scope is None else [scope, former_scope]
    job = session.execute(
        select(Job)
        .where(Job.idempotency_scope.in_(scopes), Job.idempotency_key == key)
        .order_by(Job.created_at)
        .limit(1)
    ).scalar_one_or_none()
    if job is not None and job.request_fingerprint != fingerprint:
        raise ConflictError(
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request",
            {"job_id": str(job.id)},
        )
    return job
