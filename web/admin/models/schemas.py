"""Manual scaling of a model's deployment."""

from __future__ import annotations

import marshmallow as ma

from web.extensions import Schema, StrictInteger
from workers.requests import MAX_REPLICAS


class ModelScaleRequestSchema(Schema):
    replicas = StrictInteger(required=True, validate=ma.validate.Range(min=0, max=MAX_REPLICAS))
    deployment_id = ma.fields.UUID(
        load_default=None,
        allow_none=True,
        metadata={"description": "required when several deployments serve the model (else 409 lists them)"},
    )
    # The audit trail's why: required, and blank text is no answer.
    reason = ma.fields.String(
        required=True,
        validate=[
            ma.validate.Length(min=1, max=1000),
            ma.validate.Predicate("strip", error="Must not be blank."),
        ],
    )
