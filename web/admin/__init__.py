"""The admin API (``/admin/v1``): GPU nodes, utilization, manual scaling, drains, scaling events, tenants' quotas,
health.

Every route needs the ``admin`` scope; admins act across tenants, so these blueprints are not
tenant-scoped (no ``X-Tenant-ID`` resolution).
"""

from __future__ import annotations

from web.extensions import Api


def register_blueprints(api: Api) -> None:
    from web.admin import health, jobs, models, nodes, scaling, tenants, utilization

    for resource in (nodes, jobs, utilization, models, scaling, tenants, health):
        resource.register_blueprints(api)
