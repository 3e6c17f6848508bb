"""Admin API resource: utilization."""

from web.admin.utilization.routes import blp
from web.extensions import Api


def register_blueprints(api: Api) -> None:
    api.register_blueprint(blp)
