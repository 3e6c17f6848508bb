"""Pieces shared by the internal resources: the blueprint factory."""

from __future__ import annotations

from web.extensions import Blueprint

INTERNAL_SCOPE = "internal"
INTERNAL_PREFIX = "/internal"


def internal_blueprint(name: str, import_name: str, url_prefix: str, description: str) -> Blueprint:
    """A blueprint under /internal that needs the ``internal`` scope and acts for one tenant."""
    return Blueprint(
        name,
        import_name,
        url_prefix=INTERNAL_PREFIX + url_prefix,
        description=description,
        required_scope=INTERNAL_SCOPE,
    )
