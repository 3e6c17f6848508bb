"""Pieces shared by the admin resources: the blueprint factory and the job answer."""

from __future__ import annotations

from typing import Any

from flask import url_for

from models import Job, JobState
from web.database import request_session
from web.extensions import Blueprint
from web.submission import accepted
from workers import dispatch
from workers.node_ops import NodeJobSubmitted
from workers.requests import Submitted

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
    return accepted(body, job_url, replayed=replayed)


def commit_and_accept(
    submitted: Submitted | NodeJobSubmitted, **extra: Any
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Commit the request's session, send the job (a replay only while it is still PENDING), answer 202."""
    request_session().commit()
    job = submitted.job
    if not submitted.replayed or job.state == "PENDING":
        dispatch.enqueue(job)
    return accepted_job(job, replayed=submitted.replayed, **extra)
