"""Jobs: the asynchronous operations behind every change, polled by clients."""

from web.extensions import Api
from web.internal.jobs.routes import blp


def register_blueprints(api: Api) -> None:
    api.register_blueprint(blp)
