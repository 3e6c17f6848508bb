"""Which tenant a request acts for, and whether that tenant exists.

The tenant comes from the token's ``tenant_id`` claim. A platform service acting for many tenants sends
``X-Tenant-ID``; it is honoured only if the token's ``tenants`` claim lists that tenant (or ``"*"``).

Existence is checked against the Auth/Tenant service when ``TENANT_SERVICE_URL`` is set
(``GET {url}/tenants/{id}``: 200 known, 404 unknown -> 403 ``unknown_tenant``, anything else -> 503).
Without it, the signed token is the authority: the tenant's row in the ``tenants`` table is created on
first use with the default GPU quota (``workers.queries.ensure_tenant``), and a row marked inactive is
refused with 403 ``tenant_disabled``. Either way the row must exist, because deployments reference it.
Answers are cached per process for ``TENANT_CACHE_SECONDS`` so the check costs nothing on the hot path.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

import requests
from flask import Flask, current_app, g, request

from settings import Settings
from web.auth import Principal
from web.database import request_session
from web.errors import ApiError
from workers import queries

TENANT_HEADER = "X-Tenant-ID"
# Tenant ids become Kubernetes label values and name parts (see models.tenant).
TENANT_ID_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
TENANT_SERVICE_TIMEOUT_SECONDS = 3


@dataclass
class _CachedVerdict:
    known: bool
    active: bool
    expires_at: float


class TenantDirectory:
    """Answers "may requests act for tenant X?", with a per-process TTL cache."""

    def __init__(self, settings: Settings) -> None:
        self.service_url = settings.tenant_service_url.rstrip("/") if settings.tenant_service_url else None
        self.cache_seconds = settings.tenant_cache_seconds
        self._cache: dict[str, _CachedVerdict] = {}
        self._lock = threading.Lock()
        self._http = requests.Session()

    def _cached(self, tenant_id: str) -> _CachedVerdict | None:
        with self._lock:
            verdict = self._cache.get(tenant_id)
        if verdict is None or verdict.expires_at < time.monotonic():
            return None
        return verdict

    def _remember(self, tenant_id: str, *, known: bool, active: bool) -> None:
        with self._lock:
            self._cache[tenant_id] = _CachedVerdict(known, active, time.monotonic() + self.cache_seconds)

    def _ask_tenant_service(self, tenant_id: str) -> bool:
        try:
            response = self._http.get(
                f"{self.service_url}/tenants/{tenant_id}",
                timeout=TENANT_SERVICE_TIMEOUT_SECONDS,
                headers={"Accept": "application/json", "X-Request-ID": g.get("request_id", "")},
            )
        except requests.RequestException as error:
            raise ApiError(
                503, "tenant_service_unavailable", f"The tenant service could not be reached: {error}"
            ) from error
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise ApiError(
                503,
                "tenant_service_unavailable",
                f"The tenant service answered HTTP {response.status_code}.",
            )
        return True

    def check(self, tenant_id: str) -> None:
        """Raise 403/503 unless ``tenant_id`` is a known, active tenant; make sure its row exists."""
        verdict = self._cached(tenant_id)
        if verdict is None:
            known = True if self.service_url is None else self._ask_tenant_service(tenant_id)
            active = True
            if known:
                session = request_session()
                tenant = queries.ensure_tenant(session, tenant_id)
                session.commit()
                active = bool(tenant.active)
            self._remember(tenant_id, known=known, active=active)
            verdict = self._cached(tenant_id) or _CachedVerdict(known, active, 0)
        if not verdict.known:
            raise ApiError(403, "unknown_tenant", f"Tenant '{tenant_id}' does not exist.", {"tenant_id": tenant_id})
        if not verdict.active:
            raise ApiError(403, "tenant_disabled", f"Tenant '{tenant_id}' is disabled.", {"tenant_id": tenant_id})


def init_tenancy(app: Flask, settings: Settings) -> None:
    app.extensions["tenant_directory"] = TenantDirectory(settings)


def resolve_request_tenant(principal: Principal) -> str:
    """Decide the acting tenant, check it, and store it as ``g.tenant_id``."""
    requested = request.headers.get(TENANT_HEADER)
    if requested is not None:
        requested = requested.strip()
        if not TENANT_ID_PATTERN.match(requested):
            raise ApiError(
                400,
                "invalid_tenant_id",
                f"{TENANT_HEADER} must be a lowercase DNS label (a-z, 0-9, '-'; at most 63 characters).",
            )
        if not principal.may_act_for(requested):
            raise ApiError(
                403,
                "tenant_not_allowed",
                f"This token may not act for tenant '{requested}'.",
                {"tenant_id": requested},
            )
        tenant_id = requested
    elif principal.tenant_id:
        tenant_id = principal.tenant_id
        if not TENANT_ID_PATTERN.match(tenant_id):
            raise ApiError(403, "invalid_tenant_id", "The token's tenant_id is not a valid tenant id.")
    else:
        raise ApiError(
            403, "tenant_required", f"The token names no tenant_id; send {TENANT_HEADER} with a tenant it allows."
        )
    current_app.extensions["tenant_directory"].check(tenant_id)
    g.tenant_id = tenant_id
    return tenant_id


def current_tenant_id() -> str:
    return g.tenant_id
