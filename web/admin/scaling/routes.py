"""Scaling events: the audit trail of manual, automatic, recovery and drain scaling."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from web.admin.common import admin_blueprint
from web.admin.scaling.schemas import ScalingEventPageSchema, ScalingEventQueryArgsSchema
from web.database import request_session
from web.errors import ApiError
from workers import admin_queries

blp = admin_blueprint("AdminScaling", __name__, "/scaling", "Scaling events of every tenant")


@blp.route("/events")
class AdminScalingEvents(MethodView):
    @blp.arguments(ScalingEventQueryArgsSchema, location="query")
    @blp.response(200, ScalingEventPageSchema)
    def get(self, args: dict[str, Any]):
        """List scaling events, newest first: before/after replicas, reason, inputs, status"""
        if args.get("since") and args.get("until") and args["since"] >= args["until"]:
            raise ApiError(
                422, "invalid_time_range", "since must be before until", {"fields": {"since": ["must be before until"]}}
            )
        items, next_cursor = admin_queries.list_scaling_events(request_session(), **args)
        return {"items": items, "next_cursor": next_cursor}
