"""Mint a bearer token for the API (HS256 with ``JWT_SECRET``; for the embedded run and for tests).

    python -m web.tokens --tenant acme --scope internal [--ttl 3600] [--sub svc] [--tenants "*"]

Audience and issuer come from ``JWT_AUDIENCE`` / ``JWT_ISSUER`` so the token matches what the API checks.
Production deployments using RS256/JWKS get their tokens from the platform's identity provider instead.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

import jwt

from settings import Settings, get_settings
from web.auth import KNOWN_SCOPES
from web.tenancy import TENANT_ID_PATTERN


def mint_token(
    settings: Settings,
    *,
    subject: str,
    scopes: list[str],
    tenant_id: str | None = None,
    tenants: list[str] | None = None,
    ttl_seconds: int = 3600,
    signing_key: Any = None,
    algorithm: str | None = None,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """A signed token with the claims the API expects. ``signing_key`` defaults to ``JWT_SECRET``."""
    key = signing_key if signing_key is not None else settings.jwt_secret
    if key is None:
        raise ValueError("JWT_SECRET is not set; cannot sign a token")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "scope": " ".join(scopes),
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "iat": now,
        "exp": now + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    if tenant_id is not None:
        claims["tenant_id"] = tenant_id
    if tenants:
        claims["tenants"] = tenants
    claims.update(extra_claims or {})
    return jwt.encode(claims, key, algorithm=algorithm or settings.jwt_algorithm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m web.tokens", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenant", help="tenant_id claim (the tenant the token acts for)")
    parser.add_argument(
        "--scope",
        action="append",
        default=None,
        choices=KNOWN_SCOPES,
        help="scope to grant: internal or admin (repeatable; default internal)",
    )
    parser.add_argument(
        "--tenants",
        action="append",
        help='extra tenants allowed via X-Tenant-ID, comma-separated or repeated, or "*"',
    )
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    parser.add_argument("--sub", default="cli", help="subject: who the requests are attributed to (default cli)")
    args = parser.parse_args(argv)
    if args.ttl <= 0:
        parser.error("--ttl must be positive")
    settings = get_settings()
    if not settings.jwt_secret:
        parser.error("JWT_SECRET must be set (tokens are signed with it)")
    if not settings.jwt_algorithm.upper().startswith("HS"):
        parser.error(f"JWT_ALGORITHM is {settings.jwt_algorithm}; this command only mints HS* tokens")
    tenants = [tenant for value in args.tenants or [] for tenant in value.split(",") if tenant] or None
    for tenant in ([args.tenant] if args.tenant else []) + [t for t in tenants or [] if t != "*"]:
        if not TENANT_ID_PATTERN.match(tenant):
            parser.error(f"{tenant!r} is not a tenant id: lowercase letters, digits and '-', at most 63")
    scopes = args.scope or ["internal"]
    if "internal" in scopes and not args.tenant and not tenants:
        parser.error("an internal-scope token needs --tenant (or --tenants)")
    token = mint_token(
        settings, subject=args.sub, scopes=scopes, tenant_id=args.tenant, tenants=tenants, ttl_seconds=args.ttl
    )
    sys.stdout.write(token + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
