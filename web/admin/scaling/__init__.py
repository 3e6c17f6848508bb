"""Admin API resource: scaling."""

from web.admin.scaling.routes import blp
from web.extensions import Api


def register_blueprints(api: Api) -> None:
    api.register_blueprint(blp)
