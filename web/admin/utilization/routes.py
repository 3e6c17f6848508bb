"""GPU utilization: DCGM series from Prometheus plus CPU/memory from metrics.k8s.io, over the allocation view."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView

from web.admin.common import admin_blueprint
from web.admin.utilization.schemas import UtilizationQueryArgsSchema, UtilizationSchema
from web.database import request_session
from workers import admin_queries
from workers.prometheus_client import PrometheusUnavailableError, client_from_settings

blp = admin_blueprint("AdminUtilization", __name__, "/infrastructure", "GPU and CPU/memory utilization")

# The page must answer even when a metrics backend hangs: a few seconds per source at most.
METRICS_TIMEOUT_SECONDS = 3.0


def _metrics_reader():
    """Read metrics.k8s.io through the workers' cluster client, lazily (errors surface as 'unavailable')."""
    from kubernetes import client

    from workers.k8s import get_clients

    def read() -> dict[str, Any]:
        api = client.CustomObjectsApi(get_clients().api_client)
        return admin_queries.resource_metrics(api, timeout=METRICS_TIMEOUT_SECONDS)

    return read


@blp.route("/gpu-utilization")
class AdminGpuUtilization(MethodView):
    @blp.arguments(UtilizationQueryArgsSchema, location="query")
    @blp.response(200, UtilizationSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args: dict[str, Any]):
        """GPU utilization and memory per GPU, node, deployment and cluster; idle allocated GPUs; CPU/memory"""
        settings = current_app.extensions["orchestration_settings"]
        prometheus = None
        prometheus_error = None
        try:
            prometheus = client_from_settings(settings.prometheus_url, timeout=METRICS_TIMEOUT_SECONDS)
        except PrometheusUnavailableError as error:
            prometheus_error = error.reason
        return admin_queries.gpu_utilization(
            request_session(),
            prometheus=prometheus,
            prometheus_error=prometheus_error,
            metrics_reader=_metrics_reader(),
            gpu_type=args.get("gpu_type"),
            node_name=args.get("node"),
        )
