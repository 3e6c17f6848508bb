"""Pieces shared by the internal resources: the blueprint factory."""

from __future__ import annotations

from web.auth import INTERNAL_SCOPE
from web.extensions import area_blueprint_factory

# Blueprints under /internal that need the ``internal`` scope and act for one tenant.
internal_blueprint = area_blueprint_factory("/internal", INTERNAL_SCOPE)
