"""Admin job representations: the internal job shape plus the error's details (drains explain themselves)."""

from __future__ import annotations

import marshmallow as ma

from web.extensions import Schema
from web.internal.jobs.schemas import JobErrorSchema, JobSchema


class AdminJobErrorSchema(JobErrorSchema):
    """The job error with its ``details`` (a drain lists the pods that blocked it)."""

    details = ma.fields.Dict(dump_only=True)


class AdminJobSchema(JobSchema):
    """A job of any tenant (or of none: node jobs), with ``cancel_requested``."""

    error = ma.fields.Nested(AdminJobErrorSchema, dump_only=True, allow_none=True)
    params = ma.fields.Dict(dump_only=True)
    cancel_requested = ma.fields.Boolean(dump_only=True)


class SubmittedAdminJobSchema(Schema):
    """The 202 answer of an admin change: the job to poll."""

    job_id = ma.fields.UUID(dump_only=True)
    type = ma.fields.String(dump_only=True)
    state = ma.fields.String(dump_only=True)
    target = ma.fields.Dict(dump_only=True)
    job_url = ma.fields.String(dump_only=True)
    replayed = ma.fields.Boolean(dump_only=True)
    deployment_id = ma.fields.UUID(dump_only=True)
