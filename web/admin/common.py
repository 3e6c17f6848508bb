"""Pieces shared by the admin resources: the blueprint factory and the job answer."""

from __future__ import annotations

from typing import Any

from flask import url_for

from models import Job, JobState
from web.auth import ADMIN_SCOPE
from web.extensions import area_blueprint_factory
from web.submission import accepted, commit_and_enqueue
from workers.node_ops import NodeJobSubmitted
from workers.requests import Submitted

# Blueprints under /admin/v1 that need the ``admin`` scope and act across tenants.
admin_blueprint = area_blueprint_factory("/admin/v1", ADMIN_SCOPE, tenant_scoped=False)


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
    """Commit and send the job as every other request does (:func:`web.submission.commit_and_enqueue`: counted,
    a replay sent again only if the broker lost it, 503 if the broker is down), answer 202."""
    commit_and_enqueue(submitted)
    return accepted_job(submitted.job, replayed=submitted.replayed, **extra)
