"""Tenancy: the tenant comes from the token, X-Tenant-ID only where the token allows it, and a tenant
never sees another tenant's deployments or jobs (404, exactly as if they did not exist)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy.orm import Session

from models import Tenant
from tests.web.helpers import create_body, error_code

CREATE = "/internal/deployments/create"


@pytest.fixture
def acme_deployment(client, acme, seed_nodes):
    seed_nodes({"nvidia-l40s": [8]})
    response = client.post(CREATE, json=create_body(name="private"), headers=acme)
    assert response.status_code == 202
    return response.get_json()


def test_other_tenant_gets_404_everywhere(client, headers_for, acme_deployment):
    globex = headers_for("globex")
    base = f"/internal/deployments/{acme_deployment['deployment_id']}"

    responses = {
        "detail": client.get(base, headers=globex),
        "status": client.get(f"{base}/status", headers=globex),
        "restart": client.post(f"{base}/restart", headers=globex),
        "delete": client.delete(base, headers=globex),
        "job": client.get(acme_deployment["job_url"], headers=globex),
    }
    listing = client.get("/internal/deployments", headers=globex).get_json()

    assert {name: response.status_code for name, response in responses.items()} == dict.fromkeys(responses, 404)
    assert listing["items"] == []


def test_x_tenant_id_allowed_by_tenants_claim(client, headers_for, acme_deployment):
    platform = headers_for("platform", tenants=["acme", "initech"])

    as_acme = client.get(acme_deployment["status_url"], headers={**platform, "X-Tenant-ID": "acme"})
    as_initech = client.get(acme_deployment["status_url"], headers={**platform, "X-Tenant-ID": "initech"})

    assert as_acme.status_code == 200
    assert as_initech.status_code == 404


def test_x_tenant_id_wildcard(client, headers_for, acme_deployment):
    platform = headers_for(None, tenants=["*"])

    response = client.get(acme_deployment["status_url"], headers={**platform, "X-Tenant-ID": "acme"})

    assert response.status_code == 200


def test_x_tenant_id_refused_without_permission(client, headers_for, acme_deployment):
    globex = headers_for("globex")

    response = client.get(acme_deployment["status_url"], headers={**globex, "X-Tenant-ID": "acme"})

    assert response.status_code == 403
    assert error_code(response) == "tenant_not_allowed"


def test_malformed_x_tenant_id_is_400(client, headers_for):
    platform = headers_for(None, tenants=["*"])

    response = client.get("/internal/deployments", headers={**platform, "X-Tenant-ID": "Not A Tenant"})

    assert response.status_code == 400
    assert error_code(response) == "invalid_tenant_id"


def test_tenant_row_is_created_on_first_use_and_disabled_tenants_are_refused(client, headers_for, clean_tables):
    with Session(clean_tables) as session:
        session.add(Tenant(id="dormant", name="Dormant", active=False))
        session.commit()

    first_use = client.get("/internal/deployments", headers=headers_for("newcomer"))
    disabled = client.get("/internal/deployments", headers=headers_for("dormant"))

    assert first_use.status_code == 200
    with Session(clean_tables) as session:
        assert session.get(Tenant, "newcomer") is not None
    assert disabled.status_code == 403
    assert error_code(disabled) == "tenant_disabled"


class _TenantService:
    """A stand-in Auth/Tenant service on loopback: knows "acme", 404 for others, counts calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.status_override: int | None = None
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                service.calls.append(self.path)
                if service.status_override is not None:
                    status = service.status_override
                else:
                    status = 200 if self.path == "/tenants/acme" else 404
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                """Keep request lines out of the test output."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tenant_service():
    service = _TenantService()
    yield service
    service.close()


def test_tenant_service_validates_and_is_cached(make_app, headers_for, tenant_service):
    client = make_app(tenant_service_url=tenant_service.url, tenant_cache_seconds=300).test_client()

    known = [client.get("/internal/deployments", headers=headers_for("acme")).status_code for _ in range(3)]
    unknown = client.get("/internal/deployments", headers=headers_for("ghost"))

    assert known == [200, 200, 200]
    assert unknown.status_code == 403
    assert error_code(unknown) == "unknown_tenant"
    assert tenant_service.calls == ["/tenants/acme", "/tenants/ghost"]


def test_tenant_service_failure_is_503(make_app, headers_for, tenant_service):
    tenant_service.status_override = 500
    client = make_app(tenant_service_url=tenant_service.url).test_client()

    response = client.get("/internal/deployments", headers=headers_for("acme"))

    assert response.status_code == 503
    assert error_code(response) == "tenant_service_unavailable"


def test_tenant_service_unreachable_is_503(make_app, headers_for):
    client = make_app(tenant_service_url="http://127.0.0.1:9").test_client()

    response = client.get("/internal/deployments", headers=headers_for("acme"))

    assert response.status_code == 503
