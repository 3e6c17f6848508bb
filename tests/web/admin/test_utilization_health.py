"""GET /admin/v1/infrastructure/gpu-utilization and GET /admin/v1/infrastructure/health."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from bench.drain import deploy_through_service, point_service_at
from kubesim.cluster import SimCluster
from models import Deployment, DeploymentStatus, GpuNode, Job, SweepRun
from settings import get_settings
from tests.web.helpers import create_body
from workers.k8s import reset_client

UTILIZATION = "/admin/v1/infrastructure/gpu-utilization"
HEALTH = "/admin/v1/infrastructure/health"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_utilization_degrades_without_metrics(client, admin, acme, seed_nodes):
    seed_nodes({"nvidia-l40s": [8, 8]})
    assert client.post("/internal/deployments/create", json=create_body(name="reader"), headers=acme).status_code == 202

    response = client.get(UTILIZATION, headers=admin)

    assert response.status_code == 200
    body = response.get_json()
    assert body["metrics_available"] is False
    assert "PROMETHEUS_URL is not configured" in body["reason"]
    assert body["cluster"]["gpus"] == {"capacity": 16, "allocatable": 16, "allocated": 0, "free": 16}
    assert [node["name"] for node in body["nodes"]] == ["l40s-0", "l40s-1"]
    assert body["nodes"][0]["utilization_percent"] is None
    assert body["gpus"] == []
    datetime.fromisoformat(body["nodes"][0]["last_observed_at"])  # ISO 8601, not an HTTP date


def test_utilization_reports_unreachable_prometheus_as_a_reason(make_app, admin, seed_nodes):
    seed_nodes({"nvidia-l40s": [8]})
    app = make_app(prometheus_url=f"http://127.0.0.1:{_closed_port()}/prometheus")

    response = app.test_client().get(UTILIZATION, headers=admin)

    assert response.status_code == 200
    body = response.get_json()
    assert body["gpu_metrics_available"] is False
    assert "unreachable" in body["reason"]
    assert body["cluster"]["gpus"]["capacity"] == 8


@pytest.fixture
def loaded_cluster(tmp_path, monkeypatch, clean_tables):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    with SimCluster(nodes="3xnvidia-l40s:8", seed=9) as cluster:
        cluster.sim.add_pod_behavior({"selector": {}, "model_load_seconds": 20.0, "image_pull_seconds": 2.0})
        point_service_at(cluster, tmp_path / "kubeconfig")
        deployed = deploy_through_service(cluster)
        namespace = get_settings().k8s_namespace
        cluster.sim.set_load(namespace, deployed.k8s_names["llama"], {"concurrency": 40})
        cluster.advance(30)
        yield cluster, deployed
    reset_client()
    get_settings.cache_clear()


def test_utilization_from_dcgm_and_metrics_api(make_app, admin, loaded_cluster):
    cluster, _deployed = loaded_cluster
    app = make_app(prometheus_url=f"{cluster.url}/prometheus", kubeconfig=get_settings().kubeconfig)

    body = app.test_client().get(UTILIZATION, headers=admin).get_json()

    assert body["metrics_available"] is True, body["reason"]
    assert body["reason"] is None
    assert len(body["gpus"]) == 24  # DCGM reports every GPU of the three nodes
    by_deployment = {item["name"]: item for item in body["deployments"]}
    assert by_deployment["llama"]["gpus_allocated"] == 4
    assert by_deployment["llama"]["utilization_percent"] > 50  # under load
    assert by_deployment["qwen"]["allocated_idle_gpus"] == 2  # allocated, no traffic
    assert by_deployment["llama"]["allocated_idle_gpus"] == 0
    assert by_deployment["llama"]["cpu_used_millicores"] > 0
    drained_node = next(node for node in body["nodes"] if node["name"] == "l40s-0")
    assert drained_node["gpus"]["allocated"] == 8
    assert drained_node["cpu_used_millicores"] > 0
    assert body["cluster"]["allocated_idle_gpus"] == 4  # mistral 2 + qwen 2
    assert body["cluster"]["allocated_busy_gpus"] == 4

    cluster.sim.metrics_available = False
    degraded = app.test_client().get(UTILIZATION, headers=admin).get_json()
    assert degraded["gpu_metrics_available"] is True
    assert degraded["resource_metrics_available"] is False
    assert degraded["metrics_available"] is False
    assert "metrics.k8s.io unavailable" in degraded["reason"]


def test_health_report_without_workers(client, admin, seed_nodes, clean_tables, acme, enqueued_task_ids):
    seed_nodes({"nvidia-l40s": [8, 8]})
    created = client.post("/internal/deployments/create", json=create_body(name="reader"), headers=acme)
    now = datetime.now(UTC)
    with Session(clean_tables) as session:
        session.execute(update(GpuNode).where(GpuNode.name == "l40s-1").values(ready_status="NotReady",
                                                                                 unschedulable=True))
        session.execute(update(Deployment).values(status=DeploymentStatus.CREATING, status_reason="ImagePullBackOff",
                                                  status_message="image not found"))
        session.add(SweepRun(name="health_monitor", last_started_at=now - timedelta(seconds=10),
                             last_finished_at=now - timedelta(seconds=9), last_status="succeeded"))
        session.add(SweepRun(name="resource_tracker", last_started_at=now - timedelta(hours=1),
                             last_finished_at=now - timedelta(hours=1), last_status="succeeded"))
        session.commit()

    response = client.get(HEALTH, headers=admin)

    assert response.status_code == 200
    body = response.get_json()
    assert body["verdict"] == "unhealthy"  # no worker answered the ping
    assert body["workers"]["alive"] is False
    assert any("no Celery worker" in problem for problem in body["problems"])
    assert body["nodes"]["ready"] == 1
    assert body["nodes"]["not_ready"] == 1
    assert body["nodes"]["cordoned"] == 1
    assert body["nodes"]["unhealthy_names"] == ["l40s-1"]
    assert body["gpus"]["total"] == 16
    assert body["gpus"]["on_unhealthy_nodes"] == 8
    assert body["deployments"]["by_status"] == {"CREATING": 1}
    assert body["deployments"]["stuck"][0]["reason"] == "ImagePullBackOff"
    assert body["deployments"]["stuck"][0]["deployment_id"] == created.get_json()["deployment_id"]
    assert body["beat"]["alive"] is True
    assert body["sweeps"]["health_monitor"]["stale"] is False
    assert body["sweeps"]["resource_tracker"]["stale"] is True
    assert body["sweeps"]["autoscaler"]["last_started_at"] is None
    # ISO 8601 like every other timestamp of the API (was an HTTP date: "Fri, 27 Nov 2026 10:28:37 GMT").
    started = datetime.fromisoformat(body["sweeps"]["health_monitor"]["last_started_at"])
    assert abs(started - (now - timedelta(seconds=10))) < timedelta(seconds=1)
    assert body["queues"]["available"] is True
    assert body["queues"]["depths"]["jobs"] == len(enqueued_task_ids()) == 1


def test_a_rollout_in_progress_is_not_stuck_until_it_takes_too_long(client, admin, seed_nodes, clean_tables, acme):
    seed_nodes({"nvidia-l40s": [8, 8]})
    loading = client.post("/internal/deployments/create", json=create_body(name="loading"), headers=acme)
    starting = client.post("/internal/deployments/create", json=create_body(name="starting"), headers=acme)
    ids = {name: response.get_json()["deployment_id"] for name, response in (("loading", loading),
                                                                             ("starting", starting))}

    def set_progress(name, reason, age):
        """The rollout's job began ``age`` ago; the status poll has just looked again (updated_at is now)."""
        with Session(clean_tables) as session:
            session.execute(update(Job).where(Job.target_id == ids[name]).values(created_at=datetime.now(UTC) - age))
            session.execute(update(Deployment).where(Deployment.id == ids[name]).values(
                status=DeploymentStatus.CREATING, status_reason=reason, status_message=f"pod x: {reason}"))
            session.commit()

    def stuck():
        return {row["name"] for row in client.get(HEALTH, headers=admin).get_json()["deployments"]["stuck"]}

    set_progress("loading", "model_loading", timedelta(seconds=5))
    set_progress("starting", "pod_starting", timedelta(seconds=5))
    assert stuck() == set()

    set_progress("loading", "model_loading", timedelta(minutes=20))
    assert stuck() == {"loading"}

    set_progress("starting", "waiting_for_gpus", timedelta(seconds=5))
    assert stuck() == {"loading", "starting"}


def test_health_verdict_rules():
    from workers.admin_queries import verdict

    healthy = {
        "nodes": {"total": 2, "ready": 2}, "gpus": {"degraded": 0}, "deployments": {"stuck": []},
        "workers": {"alive": True}, "beat": {"alive": True}, "sweeps": {"health_monitor": {"stale": False}},
        "queues": {"available": True},
    }
    assert verdict(healthy) == ("healthy", [])
    beat_stopped = {**healthy, "beat": {"alive": False}, "sweeps": {"health_monitor": {"stale": True}}}
    assert verdict(beat_stopped)[0] == "degraded"
    broker_down = {**healthy, "queues": {"available": False, "error": "ConnectionError"}}
    assert verdict(broker_down)[0] == "unhealthy"
    no_nodes = {**healthy, "nodes": {"total": 0, "ready": 0}}
    assert verdict(no_nodes) == ("unhealthy", ["no Ready GPU node"])
