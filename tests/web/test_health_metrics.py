"""Liveness, readiness with each dependency down, request ids, and the Prometheus metrics."""

from __future__ import annotations

import pytest

import settings as settings_module
from tests.web.helpers import create_body
from workers import k8s

UNUSED_PORT_URL = "127.0.0.1:1"


def test_liveness_touches_no_dependency(make_app):
    client = make_app(redis_url=f"redis://{UNUSED_PORT_URL}/0").test_client()

    response = client.get("/health")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


@pytest.fixture
def unreachable_cluster(tmp_path, monkeypatch):
    """Point the process's Kubernetes client at a port nothing listens on."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dead\n"
        f"clusters: [{{name: dead, cluster: {{server: 'http://{UNUSED_PORT_URL}'}}}}]\n"
        "users: [{name: nobody, user: {token: x}}]\n"
        "contexts: [{name: dead, context: {cluster: dead, user: nobody}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("K8S_REQUEST_TIMEOUT_SECONDS", "1")
    settings_module.get_settings.cache_clear()
    k8s.reset_client()
    yield
    monkeypatch.undo()
    settings_module.get_settings.cache_clear()
    k8s.reset_client()


def test_readiness_names_the_cluster_when_it_is_down(make_app, unreachable_cluster):
    response = make_app().test_client().get("/health/ready")

    assert response.status_code == 503
    body = response.get_json()
    assert body["failed"] == ["cluster"]
    assert body["checks"]["postgres"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is True


def test_readiness_names_redis_when_it_is_down(make_app, unreachable_cluster):
    response = make_app(redis_url=f"redis://{UNUSED_PORT_URL}/0").test_client().get("/health/ready")

    assert response.status_code == 503
    assert "redis" in response.get_json()["failed"]
    assert response.get_json()["checks"]["postgres"]["ok"] is True


def test_readiness_names_postgres_when_it_is_down(make_app, unreachable_cluster):
    dead_database = f"postgresql+psycopg://postgres@{UNUSED_PORT_URL}/nothing"
    response = make_app(database_url_override=dead_database).test_client().get("/health/ready")

    assert response.status_code == 503
    assert "postgres" in response.get_json()["failed"]
    assert response.get_json()["checks"]["redis"]["ok"] is True


def test_request_id_is_echoed_or_generated(client):
    echoed = client.get("/health", headers={"X-Request-ID": "abc-123"})
    generated = client.get("/health", headers={"X-Request-ID": "bad id <script>"})

    assert echoed.headers["X-Request-ID"] == "abc-123"
    assert len(generated.headers["X-Request-ID"]) == 32


def test_metrics_count_requests_jobs_and_job_states(client, acme, seed_nodes):
    seed_nodes({"nvidia-l40s": [8]})
    client.get("/internal/deployments", headers=acme)
    client.get("/internal/deployments", headers=acme)
    assert client.post("/internal/deployments/create", json=create_body(), headers=acme).status_code == 202

    deployment_id = client.get("/internal/deployments", headers=acme).get_json()["items"][0]["id"]
    client.get(f"/internal/deployments/{deployment_id}/status", headers=acme)

    scraped = client.get("/metrics")
    text = scraped.get_data(as_text=True)

    assert scraped.headers["Content-Type"] == "text/plain; version=1.0.0; charset=utf-8"
    assert 'http_requests_total{endpoint="/internal/deployments",method="GET",status="200"} 3.0' in text
    assert 'endpoint="/internal/deployments/{deployment_id}/status",method="GET",status="200"} 1.0' in text
    assert 'http_requests_total{endpoint="/internal/deployments/create",method="POST",status="202"} 1.0' in text
    assert 'http_request_duration_seconds_count{endpoint="/internal/deployments",method="GET"} 3.0' in text
    assert 'orchestration_jobs_submitted_total{type="deployment.create"} 1.0' in text
    assert 'orchestration_jobs{state="PENDING"} 1.0' in text
    assert 'orchestration_jobs{state="FAILED"} 0.0' in text


def test_unmatched_paths_share_one_metrics_label(client):
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")

    text = client.get("/metrics").get_data(as_text=True)

    assert 'http_requests_total{endpoint="<unmatched>",method="GET",status="404"} 2.0' in text


def test_metrics_serve_each_sweeps_last_run_from_its_row(client):
    """Sweeps run in worker processes; the API serves their last run from the sweep_runs rows they write."""
    from prometheus_client.parser import text_string_to_metric_families

    from models.db import get_sessionmaker
    from workers.sweep_metrics import observed_sweep

    with get_sessionmaker()() as session, observed_sweep(session, "resource_tracker") as report:
        report.saw("nodes", 8)
        report.acted("pods_closed", 3)
        report.error("prometheus_unavailable", "PROMETHEUS_URL is not configured")
        report.error("prometheus_unavailable", "again")
    with get_sessionmaker()() as session, pytest.raises(RuntimeError), observed_sweep(session, "health_monitor"):
        raise RuntimeError("the cluster vanished")

    families = {
        family.name: {tuple(sorted(sample.labels.items())): sample.value for sample in family.samples}
        for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
    }

    tracker, monitor = (("sweep", "resource_tracker"),), (("sweep", "health_monitor"),)
    assert families["orchestration_sweep_last_run_status"] == {
        (("status", "succeeded"), *tracker): 1.0,
        (("status", "failed"), *monitor): 1.0,
    }
    assert families["orchestration_sweep_last_run_items"] == {(("kind", "nodes"), *tracker): 8.0}
    assert families["orchestration_sweep_last_run_actions"] == {(("action", "pods_closed"), *tracker): 3.0}
    assert families["orchestration_sweep_last_run_errors"] == {
        (("code", "prometheus_unavailable"), *tracker): 2.0,
        (("code", "RuntimeError"), *monitor): 1.0,
    }
    assert set(families["orchestration_sweep_last_run_duration_seconds"]) == {tracker, monitor}
    assert families["orchestration_sweep_last_run_finished_timestamp_seconds"][tracker] > 1.7e9
