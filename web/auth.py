"""Bearer JWT authentication and scope checks.

Tokens are verified with PyJWT against exactly the algorithm configured (``JWT_ALGORITHM``): HS256 with
``JWT_SECRET`` for the embedded run, RS256/ES256 with ``JWT_PUBLIC_KEY`` or a JWKS endpoint
(``JWKS_URL``) in production. Accepting only the configured algorithm is what stops the classic
attacks: ``alg=none`` and an RS256 public key replayed as an HS256 secret. ``exp``, ``aud`` and ``iss``
are required, not merely checked when present.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt
from flask import Blueprint, Flask, current_app, g, request

from settings import Settings
from web.errors import ApiError

SYMMETRIC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"})
REQUIRED_CLAIMS = ["exp", "aud", "iss", "sub"]
# A signed token is trusted, but a malformed or huge one is refused before any parsing work.
# The scopes the API's areas require: INTERNAL_SCOPE for /internal, ADMIN_SCOPE for /admin/v1.
INTERNAL_SCOPE = "internal"
ADMIN_SCOPE = "admin"
KNOWN_SCOPES = (INTERNAL_SCOPE, ADMIN_SCOPE)
MAX_TOKEN_LENGTH = 8192
# RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
MIN_HMAC_SECRET_BYTES = 32
# Verified tokens are remembered (see VerifiedTokenCache): clients send the same token on every request,
# and a signature check plus claim validation costs more than the rest of a cached-tenant status read.
VERIFIED_TOKEN_CACHE_SIZE = 1024
# Even a long-lived token is re-verified this often, so a key removed from the JWKS stops working soon.
VERIFIED_TOKEN_CACHE_MAX_SECONDS = 300

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    """Who is calling, as stated by a verified token."""

    subject: str
    scopes: frozenset[str]
    tenant_id: str | None
    # Tenants this caller may act for via X-Tenant-ID; "*" means any.
    allowed_tenants: frozenset[str]
    claims: dict[str, Any]

    def may_act_for(self, tenant_id: str) -> bool:
        return tenant_id == self.tenant_id or "*" in self.allowed_tenants or tenant_id in self.allowed_tenants


def _unauthorized(code: str, message: str) -> ApiError:
    # RFC 6750: tell the client which scheme to use and why the token failed.
    challenge = f'Bearer error="invalid_token", error_description="{message}"'
    return ApiError(401, code, message, headers={"WWW-Authenticate": challenge})


class VerifiedTokenCache:
    """Bounded LRU of token string -> Principal, each entry valid until the token's ``exp`` (and at most
    ``max_seconds``). Only tokens that passed full verification are stored, so a cache hit can never accept a
    token that verification would refuse, except one whose ``exp`` passed: that is checked on every hit."""

    def __init__(self, size: int = VERIFIED_TOKEN_CACHE_SIZE, max_seconds: float = VERIFIED_TOKEN_CACHE_MAX_SECONDS):
        self.size = size
        self.max_seconds = max_seconds
        self._entries: OrderedDict[str, tuple[float, float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> Principal | None:
        """The principal of a cached token, or ``None``; a cached token whose ``exp`` has passed is a 401."""
        now_wall, now = time.time(), time.monotonic()
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            expires_wall, refresh_at, principal = entry
            if now_wall >= expires_wall:
                del self._entries[token]
                raise _unauthorized("token_expired", "Token has expired.")
            if now >= refresh_at:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return principal

    def put(self, token: str, principal: Principal) -> None:
        exp = principal.claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return
        with self._lock:
            self._entries[token] = (float(exp), time.monotonic() + self.max_seconds, principal)
            self._entries.move_to_end(token)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class TokenVerifier:
    """Verifies bearer tokens against the key material named in settings (verified ones are cached)."""

    def __init__(self, settings: Settings) -> None:
        algorithm = settings.jwt_algorithm.upper()
        if algorithm not in SYMMETRIC_ALGORITHMS | ASYMMETRIC_ALGORITHMS:
            raise ValueError(f"JWT_ALGORITHM {settings.jwt_algorithm!r} is not a supported signing algorithm")
        self.algorithm = algorithm
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self._key: Any = None
        self._verified = VerifiedTokenCache()
        self._jwks_client: jwt.PyJWKClient | None = None
        if algorithm in SYMMETRIC_ALGORITHMS:
            if not settings.jwt_secret:
                raise ValueError(f"JWT_ALGORITHM={algorithm} needs JWT_SECRET")
            if len(settings.jwt_secret.encode()) < MIN_HMAC_SECRET_BYTES:
                # Not fatal (a dev setup may use a short one), but a short HMAC secret can be brute-forced.
                logger.warning("JWT_SECRET is shorter than %d bytes; use a longer random secret", MIN_HMAC_SECRET_BYTES)
            self._key = settings.jwt_secret
        elif settings.jwt_public_key:
            self._key = settings.jwt_public_key.replace("\\n", "\n")
        elif settings.jwks_url:
            # PyJWKClient caches the key set and refetches when it meets an unknown ``kid`` (key rotation).
            self._jwks_client = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, timeout=5)
        else:
            raise ValueError(f"JWT_ALGORITHM={algorithm} needs JWT_PUBLIC_KEY or JWKS_URL")

    def _signing_key(self, token: str) -> Any:
        if self._jwks_client is None:
            return self._key
        try:
            return self._jwks_client.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientConnectionError as error:
            raise ApiError(503, "auth_keys_unavailable", f"Could not fetch signing keys: {error}") from error
        except jwt.PyJWKClientError as error:
            raise _unauthorized("invalid_token", f"No signing key for this token: {error}") from error

    def verify(self, token: str) -> Principal:
        """Return the principal of a valid token; raise a 401 ``ApiError`` naming what is wrong."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise _unauthorized("invalid_token", "Token is too long.")
        cached = self._verified.get(token)
        if cached is not None:
            return cached
        principal = self._verify_uncached(token)
        self._verified.put(token, principal)
        return principal

    def _verify_uncached(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as error:
            raise _unauthorized("invalid_token", f"Malformed token: {error}") from error
        if header.get("alg") != self.algorithm:
            raise _unauthorized("invalid_token", f"Token algorithm {header.get('alg')!r} is not accepted.")
        try:
            claims = jwt.decode(
                token,
                self._signing_key(token),
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as error:
            raise _unauthorized("token_expired", "Token has expired.") from error
        except jwt.InvalidTokenError as error:
            raise _unauthorized("invalid_token", f"Invalid token: {error}") from error
        return principal_from_claims(claims)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    scope = claims.get("scope", "")
    if isinstance(scope, str):
        scopes = frozenset(scope.split())
    elif isinstance(scope, list) and all(isinstance(item, str) for item in scope):
        scopes = frozenset(scope)
    else:
        raise _unauthorized("invalid_token", "Claim 'scope' must be a space-separated string.")
    tenants = claims.get("tenants", [])
    if not isinstance(tenants, list) or not all(isinstance(item, str) for item in tenants):
        raise _unauthorized("invalid_token", "Claim 'tenants' must be a list of tenant ids.")
    tenant_id = claims.get("tenant_id")
    if tenant_id is not None and not isinstance(tenant_id, str):
        raise _unauthorized("invalid_token", "Claim 'tenant_id' must be a string.")
    return Principal(
        subject=str(claims["sub"]),
        scopes=scopes,
        tenant_id=tenant_id,
        allowed_tenants=frozenset(tenants),
        claims=claims,
    )


def init_auth(app: Flask, settings: Settings) -> None:
    app.extensions["token_verifier"] = TokenVerifier(settings)


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise _unauthorized("missing_token", "An 'Authorization: Bearer <token>' header is required.")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("invalid_token", "The Authorization header must be 'Bearer <token>'.")
    return token.strip()


def authenticate(scope: str) -> Principal:
    """Verify the request's token and that it carries ``scope``; store the principal on ``g``."""
    principal = current_app.extensions["token_verifier"].verify(bearer_token())
    if scope not in principal.scopes:
        raise ApiError(
            403,
            "insufficient_scope",
            f"This endpoint needs the '{scope}' scope.",
            details={"required_scope": scope, "token_scopes": sorted(principal.scopes)},
        )
    g.principal = principal
    return principal


def requested_by() -> str:
    """Who a change is attributed to: the subject of the request's verified token."""
    return g.principal.subject


def require_scope(blueprint: Blueprint, scope: str, *, tenant_scoped: bool = True) -> None:
    """Guard every route of ``blueprint``: a valid token with ``scope``, then (if ``tenant_scoped``)
    the tenant the request acts for.

    Registered per blueprint (``/internal`` needs ``internal``, ``/admin/v1`` needs ``admin`` and is not
    tenant-scoped), so a route can never be added to a blueprint without the check.
    """
    from web.tenancy import resolve_request_tenant

    def check() -> None:
        if request.method == "OPTIONS":
            return
        principal = authenticate(scope)
        if tenant_scoped:
            resolve_request_tenant(principal)

    blueprint.before_request(check)
