"""GPU utilization view: per GPU, node, deployment and cluster, with allocated-vs-used."""

from __future__ import annotations

import marshmallow as ma

from web.extensions import Schema


class UtilizationQueryArgsSchema(Schema):
    gpu_type = ma.fields.String(metadata={"description": "only nodes with this GPU product"})
    node = ma.fields.String(metadata={"description": "only this node"})


class UtilizationSchema(Schema):
    metrics_available = ma.fields.Boolean(
        metadata={"description": "false when DCGM (Prometheus) or metrics.k8s.io could not be read; see reason"}
    )
    gpu_metrics_available = ma.fields.Boolean()
    resource_metrics_available = ma.fields.Boolean()
    reason = ma.fields.String(allow_none=True)
    idle_threshold_percent = ma.fields.Float()
    cluster = ma.fields.Dict(metadata={"description": "GPU counts, mean utilization, allocated busy/idle GPUs"})
    nodes = ma.fields.List(ma.fields.Dict())
    deployments = ma.fields.List(ma.fields.Dict())
    gpus = ma.fields.List(ma.fields.Dict(), metadata={"description": "one entry per GPU reported by DCGM"})
