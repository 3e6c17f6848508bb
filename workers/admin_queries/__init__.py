"""Reads behind the admin API: the GPU node view, scaling events and the infrastructure health report.

All of it comes from Postgres (kept true to the cluster by the sweeps), so the admin pages answer even
when the Kubernetes API is slow or down; only the health report also asks Celery and Redis, each with a
short timeout, because worker liveness and queue depth live nowhere else.

One module per view: ``nodes``, ``scaling_events``, ``utilization`` (with ``dcgm`` and ``resource_usage``
as its metric sources), ``health_report`` (with ``celery_liveness``), ``manual_scaling`` and ``tenants``; ``cursors``
and ``live_pods`` are what the views share.
"""

from workers.admin_queries.celery_liveness import queue_depths, worker_liveness
from workers.admin_queries.health_report import infrastructure_health, verdict
from workers.admin_queries.manual_scaling import deployment_for_model, record_blocked_scale
from workers.admin_queries.nodes import list_nodes, node_detail
from workers.admin_queries.resource_usage import resource_metrics
from workers.admin_queries.scaling_events import list_scaling_events
from workers.admin_queries.tenants import set_tenant_quota, tenant_quota
from workers.admin_queries.utilization import gpu_utilization

__all__ = [
    "deployment_for_model",
    "gpu_utilization",
    "infrastructure_health",
    "list_nodes",
    "list_scaling_events",
    "node_detail",
    "queue_depths",
    "record_blocked_scale",
    "resource_metrics",
    "set_tenant_quota",
    "tenant_quota",
    "verdict",
    "worker_liveness",
]
