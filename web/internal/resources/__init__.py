"""Resources: free GPU capacity and the caller's quota."""

from web.extensions import Api
from web.internal.resources.routes import blp


def register_blueprints(api: Api) -> None:
    api.register_blueprint(blp)
