"""The internal API (``/internal``) used by other platform services; every route needs the ``internal`` scope."""

from __future__ import annotations

from web.extensions import Api
from web.internal import deployments, jobs, resources


def register_blueprints(api: Api) -> None:
    deployments.register_blueprints(api)
    jobs.register_blueprints(api)
    resources.register_blueprints(api)
