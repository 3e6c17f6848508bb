"""Tenants: read and set a tenant's GPU quota (admission refuses GPUs beyond it with 409 quota_exceeded)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from web.admin.common import admin_blueprint
from web.admin.tenants.schemas import TenantQuotaRequestSchema, TenantQuotaSchema
from web.database import request_session
from web.errors import ApiError
from web.tenancy import TENANT_ID_PATTERN
from workers import admin_queries

blp = admin_blueprint("AdminTenants", __name__, "/tenants", "Tenants' GPU quotas")


def _checked(tenant_id: str) -> str:
    if not TENANT_ID_PATTERN.match(tenant_id):
        raise ApiError(404, "tenant_not_found", f"no tenant is called {tenant_id!r}: a tenant id is a DNS label")
    return tenant_id


@blp.route("/<tenant_id>/quota")
class AdminTenantQuota(MethodView):
    @blp.response(200, TenantQuotaSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, tenant_id: str):
        """A tenant's GPU quota and the GPUs it holds"""
        return admin_queries.tenant_quota(request_session(), _checked(tenant_id))

    @blp.arguments(TenantQuotaRequestSchema)
    @blp.response(200, TenantQuotaSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def put(self, body: dict[str, Any], tenant_id: str):
        """Set a tenant's GPU quota (null: back to the default); a quota below its use refuses new GPUs only"""
        session = request_session()
        view = admin_queries.set_tenant_quota(session, _checked(tenant_id), body["gpu_quota"])
        session.commit()
        return view
