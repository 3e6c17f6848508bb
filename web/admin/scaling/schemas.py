"""Scaling events: every replica-count decision, with its inputs."""

from __future__ import annotations

import marshmallow as ma

from models import ScalingEventStatus, ScalingTrigger
from web.admin.schemas import AdminPageArgsSchema, AdminPageSchema
from web.extensions import Schema


class ScalingEventQueryArgsSchema(AdminPageArgsSchema):
    deployment_id = ma.fields.UUID()
    model_id = ma.fields.String()
    tenant_id = ma.fields.String()
    trigger = ma.fields.String(validate=ma.validate.OneOf([trigger.value for trigger in ScalingTrigger]))
    status = ma.fields.String(validate=ma.validate.OneOf([status.value for status in ScalingEventStatus]))
    since = ma.fields.AwareDateTime(metadata={"description": "events at or after this time (ISO 8601 with zone)"})
    until = ma.fields.AwareDateTime(metadata={"description": "events before this time"})


class ScalingEventSchema(Schema):
    id = ma.fields.String()
    deployment_id = ma.fields.String(allow_none=True)
    tenant_id = ma.fields.String()
    model_id = ma.fields.String()
    trigger = ma.fields.String()
    status = ma.fields.String()
    reason = ma.fields.String()
    replicas_before = ma.fields.Integer()
    replicas_after = ma.fields.Integer()
    inputs = ma.fields.Dict()
    actor = ma.fields.String(allow_none=True)
    job_id = ma.fields.String(allow_none=True)
    created_at = ma.fields.AwareDateTime()


class ScalingEventPageSchema(AdminPageSchema):
    items = ma.fields.List(ma.fields.Nested(ScalingEventSchema))
