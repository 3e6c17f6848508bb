"""Admin API fixtures: an admin token (no tenant: admins act across tenants)."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def admin(headers_for: Callable[..., dict[str, str]]) -> dict[str, str]:
    return headers_for(None, scopes=("admin",), subject="ops-alice")
