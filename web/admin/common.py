"""Pieces shared by the admin resources: the blueprint factory, the requester, the job answer."""

from __future__ import annotations

from typing import Any

from flask import g, url_for

from models import Job, JobState
from web.extensions import Blueprint

ADMIN_SCOPE = "admin"
ADMIN_PREFIX = "/admin/v1"


def admin_blueprint(name: str, import_name: str, url_prefix: str, description: str) -> Blueprint:
    """A blueprint under /admin/v1 that needs the ``admin`` scope and acts across tenants."""
    return Blueprint(
        name,
        import_name,
        url_prefix=ADMIN_PREFIX + url_prefix,
        description=description,
        required_scope=ADMIN_SCOPE,
        tenant_scoped=False,
    )


def requested_by() -> str:
    return g.principal.subject


def accepted_job(job: Job, *, replayed: bool, **extra: Any) -> tuple[dict[str, Any], int, dict[str, str]]:
    """202 with the job to poll (``Location`` is the admin job URL)."""
    job_url = url_for("AdminJobs.AdminJobById", job_id=job.id)
    body = {
        "job_id": job.id,
        "type": str(job.type),
        "state": JobState(job.state).value,
        "target": {"kind": str(job.target_kind), "id": job.target_id},
        "job_url": job_url,
        "replayed": replayed,
        **extra,
    }
    headers = {"Location": job_url}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return body, 202, headers
