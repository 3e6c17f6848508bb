"""``python -m web.tokens`` mints a token the API accepts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt

from tests.web.conftest import JWT_SECRET

REPO_ROOT = Path(__file__).resolve().parents[2]


def _mint(*args: str, secret: str | None = JWT_SECRET) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "JWT_SECRET"}
    if secret is not None:
        env["JWT_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "web.tokens", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )


def test_minted_token_is_accepted_by_the_api(client):
    result = _mint("--tenant", "acme", "--scope", "internal", "--ttl", "600", "--sub", "ci")

    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "ci"
    assert claims["tenant_id"] == "acme"
    assert claims["exp"] - claims["iat"] == 600
    assert client.get("/internal/deployments", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_minting_without_a_secret_fails_with_a_message():
    result = _mint("--tenant", "acme", secret=None)

    assert result.returncode != 0
    assert "JWT_SECRET" in result.stderr


def test_tenants_may_be_listed_with_commas_as_the_readme_shows(client):
    result = _mint("--tenants", "acme,globex", "--tenants", "initech", "--sub", "gateway")

    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert jwt.decode(token, options={"verify_signature": False})["tenants"] == ["acme", "globex", "initech"]
    as_globex = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "globex"}
    assert client.get("/internal/deployments", headers=as_globex).status_code == 200


def test_unknown_scopes_and_malformed_tenants_are_refused_before_minting():
    unknown_scope = _mint("--tenant", "acme", "--scope", "bogus")
    bad_tenant = _mint("--tenant", "Bad Tenant!")

    assert unknown_scope.returncode != 0
    assert "invalid choice: 'bogus'" in unknown_scope.stderr
    assert bad_tenant.returncode != 0
    assert "is not a tenant id" in bad_tenant.stderr
