"""GPU node representations and the bodies of node operations."""

from __future__ import annotations

import marshmallow as ma

from models import NODE_READY_STATUSES
from web.admin.schemas import AdminPageArgsSchema, AdminPageSchema
from web.extensions import Schema, StrictBoolean, StrictInteger
from workers.drain import DEFAULT_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS


class NodeQueryArgsSchema(AdminPageArgsSchema):
    gpu_type = ma.fields.String(metadata={"description": "GPU product label, e.g. nvidia-l40s"})
    status = ma.fields.String(
        validate=ma.validate.OneOf(NODE_READY_STATUSES),
        metadata={"description": "Ready state: Ready, NotReady or Unknown"},
    )
    schedulable = ma.fields.Boolean(metadata={"description": "false: only cordoned nodes"})


class NodeGpuSchema(Schema):
    product = ma.fields.String(allow_none=True)
    memory_mb = ma.fields.Integer(allow_none=True)
    capacity = ma.fields.Integer()
    allocatable = ma.fields.Integer()
    allocated = ma.fields.Integer(
        metadata={"description": "GPUs the node's live pods hold, as last observed (the pods listed with it)"}
    )
    free = ma.fields.Integer(metadata={"description": "allocatable minus allocated"})


class NodeCordonSchema(Schema):
    cordoned = ma.fields.Boolean()
    by = ma.fields.String(allow_none=True)
    reason = ma.fields.String(allow_none=True)


class NodeDeploymentSchema(Schema):
    deployment_id = ma.fields.String()
    name = ma.fields.String()
    tenant_id = ma.fields.String()
    model_id = ma.fields.String()
    pods = ma.fields.Integer()
    gpus = ma.fields.Integer()


class NodePodSchema(Schema):
    namespace = ma.fields.String()
    name = ma.fields.String()
    deployment_id = ma.fields.String(allow_none=True)
    tenant_id = ma.fields.String(allow_none=True)
    gpus = ma.fields.Integer()
    phase = ma.fields.String()
    ready = ma.fields.Boolean()
    restarts = ma.fields.Integer()
    reason = ma.fields.String(allow_none=True)


class NodeSchema(Schema):
    name = ma.fields.String()
    internal_ip = ma.fields.String(allow_none=True)
    gpu = ma.fields.Nested(NodeGpuSchema)
    cpu = ma.fields.Dict(metadata={"description": "capacity_millicores, allocatable_millicores"})
    memory = ma.fields.Dict(metadata={"description": "capacity_bytes, allocatable_bytes"})
    ready_status = ma.fields.String()
    schedulable = ma.fields.Boolean()
    cordon = ma.fields.Nested(NodeCordonSchema)
    taints = ma.fields.List(ma.fields.Dict())
    labels = ma.fields.Dict()
    conditions = ma.fields.List(ma.fields.Dict())
    deployments = ma.fields.List(ma.fields.Nested(NodeDeploymentSchema))
    pods = ma.fields.List(ma.fields.Nested(NodePodSchema))
    present = ma.fields.Boolean()
    first_seen_at = ma.fields.AwareDateTime()
    last_observed_at = ma.fields.AwareDateTime()
    active_drain_job_id = ma.fields.String(allow_none=True)


class NodePageSchema(AdminPageSchema):
    items = ma.fields.List(ma.fields.Nested(NodeSchema))


class DrainRequestSchema(Schema):
    force = StrictBoolean(load_default=False, metadata={"description": "also evict pods without a controller"})
    delete_emptydir_data = StrictBoolean(
        load_default=False, metadata={"description": "also evict foreign pods using emptyDir (their data is lost)"}
    )
    allow_capacity_loss = StrictBoolean(
        load_default=False,
        metadata={"description": "drain even when replacements do not fit elsewhere (those replicas are lost)"},
    )
    timeout_seconds = StrictInteger(
        load_default=DEFAULT_TIMEOUT_SECONDS,
        validate=ma.validate.Range(min=1, max=MAX_TIMEOUT_SECONDS),
        metadata={"description": "give up (FAILED, surges withdrawn, node cordoned) after this long"},
    )
    grace_period_seconds = StrictInteger(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Range(min=0, max=3600),
        metadata={"description": "override the pods' termination grace period"},
    )
    dry_run = StrictBoolean(load_default=False, metadata={"description": "report the impact, change nothing"})
    reason = ma.fields.String(load_default=None, allow_none=True, validate=ma.validate.Length(max=1000))


class CordonRequestSchema(Schema):
    reason = ma.fields.String(load_default=None, allow_none=True, validate=ma.validate.Length(max=1000))


class DrainImpactSchema(Schema):
    """The dry run's answer: who loses what, whether room exists elsewhere, which pods block the drain."""

    node = ma.fields.String()
    dry_run = ma.fields.Boolean()
    would_succeed = ma.fields.Boolean()
    deployments = ma.fields.List(ma.fields.Dict())
    foreign_pods = ma.fields.List(ma.fields.Dict())
    skipped_pods = ma.fields.List(ma.fields.Dict())
    blocked_pods = ma.fields.List(ma.fields.Dict())
    terminating_pods = ma.fields.List(ma.fields.Dict())
    pods_total = ma.fields.Integer()
    options = ma.fields.Dict()
