"""Admin API resource: health."""

from web.admin.health.routes import blp
from web.extensions import Api


def register_blueprints(api: Api) -> None:
    api.register_blueprint(blp)
