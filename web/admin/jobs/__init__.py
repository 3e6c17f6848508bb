"""Admin API resource: jobs."""

from web.admin.jobs.routes import blp
from web.extensions import Api


def register_blueprints(api: Api) -> None:
    api.register_blueprint(blp)
