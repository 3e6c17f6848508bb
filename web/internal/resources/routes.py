"""Resource availability endpoint."""

from __future__ import annotations

from flask.views import MethodView

from web.database import request_session
from web.extensions import Blueprint
from web.internal.resources.schemas import AvailableResourcesSchema
from web.tenancy import current_tenant_id
from workers import queries

blp = Blueprint(
    "Resources",
    __name__,
    url_prefix="/internal/resources",
    description="Free GPU capacity and the caller's quota",
    required_scope="internal",
)


@blp.route("/available")
class AvailableResources(MethodView):
    @blp.response(200, AvailableResourcesSchema)
    def get(self):
        """Free GPUs per type and node, largest single-node block, reservations in flight, quota and use"""
        return queries.available_resources(request_session(), current_tenant_id())
