"""Infrastructure health: nodes, GPUs, deployments, workers, beat, queues, sweeps, and a verdict."""

from __future__ import annotations

import redis
from flask import current_app
from flask.views import MethodView

from models import SweepName
from web.admin.common import admin_blueprint
from web.admin.health.schemas import InfrastructureHealthSchema
from web.database import request_session
from workers import admin_queries
from workers.queues import Queues

blp = admin_blueprint("AdminHealth", __name__, "/infrastructure", "Infrastructure health")

PING_TIMEOUT_SECONDS = 1.0
REDIS_TIMEOUT_SECONDS = 1.0


@blp.route("/health")
class AdminInfrastructureHealth(MethodView):
    @blp.response(200, InfrastructureHealthSchema)
    def get(self):
        """Nodes and GPUs by state, stuck deployments, worker and beat liveness, queue depth, sweep ages, verdict"""
        from workers.celery_app import app as celery_app

        settings = current_app.extensions["orchestration_settings"]
        key_prefix = (celery_app.conf.broker_transport_options or {}).get("global_keyprefix", "") or ""
        redis_client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        try:
            queues = admin_queries.queue_depths(redis_client, list(Queues.all()), key_prefix=key_prefix)
        finally:
            redis_client.close()
        return admin_queries.infrastructure_health(
            request_session(),
            workers=admin_queries.worker_liveness(celery_app, timeout=PING_TIMEOUT_SECONDS),
            queues=queues,
            sweep_intervals={
                SweepName.HEALTH_MONITOR.value: settings.health_monitor_interval_seconds,
                SweepName.RESOURCE_TRACKER.value: settings.resource_tracker_interval_seconds,
                SweepName.AUTOSCALER.value: settings.autoscaler_interval_seconds,
            },
        )
