"""A tenant's GPU quota."""

from __future__ import annotations

import marshmallow as ma

from web.extensions import Schema, StrictInteger

# Well above any cluster's GPU count: a typo (an extra digit) is refused rather than taken as "unlimited".
MAX_GPU_QUOTA = 100_000


class TenantQuotaSchema(Schema):
    tenant_id = ma.fields.String()
    gpu_quota = ma.fields.Integer(metadata={"description": "GPUs the tenant may hold (its own quota or the default)"})
    explicit = ma.fields.Boolean(metadata={"description": "whether gpu_quota is the tenant's own (else the default)"})
    used = ma.fields.Integer(metadata={"description": "GPUs the tenant's deployments hold or have reserved"})


class TenantQuotaRequestSchema(Schema):
    gpu_quota = StrictInteger(
        required=True,
        allow_none=True,
        validate=ma.validate.Range(min=0, max=MAX_GPU_QUOTA),
        metadata={"description": "GPUs the tenant may hold; null returns it to DEFAULT_TENANT_GPU_QUOTA"},
    )
