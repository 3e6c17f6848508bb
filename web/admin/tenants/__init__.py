"""Admin API resource: tenants (their GPU quota)."""

from web.admin.tenants.routes import blp
from web.extensions import Api


def register_blueprints(api: Api) -> None:
    api.register_blueprint(blp)
