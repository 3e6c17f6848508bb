"""Job representations."""

from __future__ import annotations

import marshmallow as ma

from models import JobState, JobType, TargetKind
from web.extensions import Schema


class JobErrorSchema(Schema):
    code = ma.fields.String(dump_only=True)
    message = ma.fields.String(dump_only=True)
    retryable = ma.fields.Boolean(dump_only=True)


class JobSchema(Schema):
    """A job row as clients see it (the row, not Celery's result backend, is the source of truth)."""

    id = ma.fields.UUID(dump_only=True)
    type = ma.fields.Enum(JobType, by_value=True, dump_only=True)
    state = ma.fields.Enum(JobState, by_value=True, dump_only=True)
    target = ma.fields.Method("dump_target", dump_only=True, metadata={"type": "object"})
    tenant_id = ma.fields.String(dump_only=True, allow_none=True)
    requested_by = ma.fields.String(dump_only=True)
    attempts = ma.fields.Integer(dump_only=True)
    max_attempts = ma.fields.Integer(dump_only=True)
    progress = ma.fields.Dict(dump_only=True)
    result = ma.fields.Dict(dump_only=True, allow_none=True)
    error = ma.fields.Nested(JobErrorSchema, dump_only=True, allow_none=True)
    created_at = ma.fields.AwareDateTime(dump_only=True)
    started_at = ma.fields.AwareDateTime(dump_only=True, allow_none=True)
    updated_at = ma.fields.AwareDateTime(dump_only=True)
    finished_at = ma.fields.AwareDateTime(dump_only=True, allow_none=True)

    def dump_target(self, job) -> dict[str, str]:
        return {"kind": TargetKind(job.target_kind).value, "id": job.target_id}
