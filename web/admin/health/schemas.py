"""Infrastructure health report."""

from __future__ import annotations

import marshmallow as ma

from web.extensions import Schema


class InfrastructureHealthSchema(Schema):
    verdict = ma.fields.String(metadata={"description": "healthy, degraded or unhealthy"})
    problems = ma.fields.List(ma.fields.String())
    checked_at = ma.fields.AwareDateTime()
    nodes = ma.fields.Dict(metadata={"description": "total, ready, not_ready, unknown, cordoned, unhealthy_names"})
    gpus = ma.fields.Dict(metadata={"description": "total, allocatable, allocated, on_unhealthy_nodes, degraded"})
    deployments = ma.fields.Dict(metadata={"description": "by_status counts and the stuck ones with reasons"})
    workers = ma.fields.Dict(metadata={"description": "Celery workers answering a ping"})
    beat = ma.fields.Dict(metadata={"description": "beat liveness, judged from the sweeps it triggers"})
    queues = ma.fields.Dict(metadata={"description": "messages waiting per queue (Redis LLEN)"})
    sweeps = ma.fields.Dict(metadata={"description": "per sweep: last run, seconds since, stale"})
