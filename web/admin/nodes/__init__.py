"""Admin API resource: nodes."""

from web.admin.nodes.routes import blp
from web.extensions import Api


def register_blueprints(api: Api) -> None:
    api.register_blueprint(blp)
