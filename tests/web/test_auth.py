"""The authentication matrix: every way a token can be wrong is a 401 (or 403 for scope), never a 500."""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.web.helpers import error_code
from web.tokens import mint_token

LIST = "/internal/deployments"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _claims(settings, **overrides):
    now = int(time.time())
    claims = {
        "sub": "svc",
        "scope": "internal",
        "tenant_id": "acme",
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _get(client, token):
    return client.get(LIST, headers={"Authorization": f"Bearer {token}"})


def test_valid_token_is_accepted(client, token_for):
    assert _get(client, token_for("acme")).status_code == 200


def test_missing_token_is_401_with_challenge(client):
    response = client.get(LIST)

    assert response.status_code == 401
    assert error_code(response) == "missing_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_non_bearer_scheme_is_401(client):
    response = client.get(LIST, headers={"Authorization": "Basic dXNlcjpwYXNz"})

    assert response.status_code == 401
    assert error_code(response) == "invalid_token"


def test_expired_token_is_401(client, token_for):
    response = _get(client, token_for("acme", ttl_seconds=-60))

    assert response.status_code == 401
    assert error_code(response) == "token_expired"


@pytest.mark.parametrize(
    ("case", "overrides"),
    [
        ("wrong audience", {"aud": "someone-else"}),
        ("wrong issuer", {"iss": "evil-issuer"}),
        ("no exp", {"exp": None}),
        ("no aud", {"aud": None}),
        ("no iss", {"iss": None}),
        ("no sub", {"sub": None}),
        ("scope not a string", {"scope": 5}),
        ("tenants not a list", {"tenants": "*"}),
    ],
)
def test_bad_claims_are_401(client, web_settings, case, overrides):
    token = jwt.encode(_claims(web_settings, **overrides), web_settings.jwt_secret, algorithm="HS256")

    response = _get(client, token)

    assert response.status_code == 401, case
    assert error_code(response) == "invalid_token"


def test_bad_signature_is_401(client, web_settings):
    token = jwt.encode(_claims(web_settings), "not-the-secret-but-long-enough-for-hs256", algorithm="HS256")

    assert error_code(_get(client, token)) == "invalid_token"


def test_alg_none_is_refused(client, web_settings):
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(web_settings))}."

    response = _get(client, unsigned)

    assert response.status_code == 401
    assert error_code(response) == "invalid_token"


def test_unconfigured_algorithm_is_refused(client, web_settings):
    token = jwt.encode(_claims(web_settings), web_settings.jwt_secret * 2, algorithm="HS512")

    assert _get(client, token).status_code == 401


@pytest.mark.parametrize("garbage", ["abc", "a.b.c", "x" * 9000, "eyJhbGciOiJIUzI1NiJ9..sig"])
def test_garbage_tokens_are_401(client, garbage):
    assert _get(client, garbage).status_code == 401


def test_missing_scope_is_403(client, token_for):
    response = _get(client, token_for("acme", scopes=("admin",)))

    assert response.status_code == 403
    assert error_code(response) == "insufficient_scope"
    assert response.get_json()["error"]["details"]["required_scope"] == "internal"


def test_token_without_tenant_and_no_header_is_403(client, token_for):
    response = _get(client, token_for(None))

    assert response.status_code == 403
    assert error_code(response) == "tenant_required"


def test_health_metrics_and_docs_need_no_token(client):
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


@pytest.fixture(scope="module")
def rsa_keys():
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_key, public_pem


def test_rs256_with_public_key(make_app, web_settings, rsa_keys):
    private_key, public_pem = rsa_keys
    client = make_app(jwt_algorithm="RS256", jwt_public_key=public_pem, jwt_secret=None).test_client()
    rs_settings = dataclasses.replace(web_settings, jwt_algorithm="RS256")
    good = mint_token(rs_settings, subject="svc", scopes=["internal"], tenant_id="acme", signing_key=private_key)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = mint_token(rs_settings, subject="svc", scopes=["internal"], tenant_id="acme", signing_key=other_key)
    # The classic confusion attack: the public key used as an HMAC secret.
    confused = jwt.encode(_claims(web_settings), public_pem.encode()[:64], algorithm="HS256")

    assert _get(client, good).status_code == 200
    assert error_code(_get(client, forged)) == "invalid_token"
    assert error_code(_get(client, confused)) == "invalid_token"


def test_rs256_with_jwks(make_app, web_settings, rsa_keys):
    private_key, _ = rsa_keys
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    jwk.update({"kid": "key-1", "use": "sig", "alg": "RS256"})
    payload = json.dumps({"keys": [jwk]}).encode()

    class JwksHandler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            """Keep request lines out of the test output."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
        client = make_app(jwt_algorithm="RS256", jwks_url=url, jwt_secret=None).test_client()
        rs_settings = dataclasses.replace(web_settings, jwt_algorithm="RS256")
        token = jwt.encode(_claims(rs_settings), private_key, algorithm="RS256", headers={"kid": "key-1"})
        unknown_kid = jwt.encode(_claims(rs_settings), private_key, algorithm="RS256", headers={"kid": "key-9"})

        assert _get(client, token).status_code == 200
        assert error_code(_get(client, unknown_kid)) == "invalid_token"
    finally:
        server.shutdown()
        server.server_close()
