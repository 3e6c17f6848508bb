"""Admin API resource: models."""

from web.admin.models.routes import blp
from web.extensions import Api


def register_blueprints(api: Api) -> None:
    api.register_blueprint(blp)
