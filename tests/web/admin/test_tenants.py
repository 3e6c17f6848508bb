"""GET/PUT /admin/v1/tenants/{tenant_id}/quota: the quota admission applies, set without SQL."""

from __future__ import annotations

import pytest

from tests.web.helpers import create_body, error_code

CREATE = "/internal/deployments/create"


def quota(client, admin, tenant="acme"):
    return client.get(f"/admin/v1/tenants/{tenant}/quota", headers=admin)


def set_quota(client, admin, value, tenant="acme"):
    return client.put(f"/admin/v1/tenants/{tenant}/quota", json={"gpu_quota": value}, headers=admin)


def test_a_quota_set_by_an_admin_is_what_admission_applies(client, admin, acme, seed_nodes, web_settings):
    seed_nodes({"nvidia-l40s": [8, 8]})
    assert quota(client, admin).get_json() == {
        "tenant_id": "acme", "gpu_quota": web_settings.default_tenant_gpu_quota, "explicit": False, "used": 0,
    }

    assert set_quota(client, admin, 3).get_json() == {"tenant_id": "acme", "gpu_quota": 3, "explicit": True, "used": 0}
    first = client.post(CREATE, json=create_body(name="one", gpus_per_replica=2), headers=acme)
    second = client.post(CREATE, json=create_body(name="two", gpus_per_replica=2), headers=acme)

    assert first.status_code == 202
    assert second.status_code == 409
    assert error_code(second) == "quota_exceeded"
    assert second.get_json()["error"]["details"]["quota"] == 3
    assert quota(client, admin).get_json()["used"] == 2

    # Below its use: nothing is taken away, new GPUs are refused; null returns it to the default.
    assert set_quota(client, admin, 1).get_json()["used"] == 2
    assert set_quota(client, admin, None).get_json()["explicit"] is False
    assert client.post(CREATE, json=create_body(name="two", gpus_per_replica=2), headers=acme).status_code == 202


@pytest.mark.parametrize("body", [{}, {"gpu_quota": -1}, {"gpu_quota": "3"}, {"gpu_quota": 2.5}, {"gpu_quota": True},
                                  {"gpu_quota": 100_001}, {"gpu_quota": 3, "extra": 1}])
def test_a_bad_quota_is_422(client, admin, body):
    response = client.put("/admin/v1/tenants/acme/quota", json=body, headers=admin)

    assert response.status_code == 422
    assert error_code(response) == "validation_failed"


def test_a_malformed_tenant_id_is_404_and_the_internal_scope_is_refused(client, admin, acme):
    assert error_code(quota(client, admin, tenant="Not_A_Tenant")) == "tenant_not_found"
    assert set_quota(client, admin, 3, tenant="Not_A_Tenant").status_code == 404
    assert client.put("/admin/v1/tenants/acme/quota", json={"gpu_quota": 3}, headers=acme).status_code == 403
