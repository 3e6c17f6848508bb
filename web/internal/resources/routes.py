"""Resource availability endpoint."""

from __future__ import annotations

from flask.views import MethodView

from web.database import request_session
from web.internal.common import internal_blueprint
from web.internal.resources.schemas import AvailableResourcesSchema
from web.tenancy import current_tenant_id
from workers import queries

blp = internal_blueprint("Resources", __name__, "/resources", "Free GPU capacity and the caller's quota")


@blp.route("/available")
class AvailableResources(MethodView):
    @blp.response(200, AvailableResourcesSchema)
    def get(self):
        """Free GPUs per type and node, largest single-node block, reservations in flight, quota and use"""
        return queries.available_resources(request_session(), current_tenant_id())
