"""Deployments: vLLM models served on the GPU cluster."""

from web.extensions import Api
from web.internal.deployments.routes import blp


def register_blueprints(api: Api) -> None:
    api.register_blueprint(blp)
