"""The resource tracker against kubesim: inventory, utilization, a GPU dropping off, drift, cleanup, outages."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from models import Deployment, DeploymentStatus, GpuNode, GpuReservation, PodAllocation, SweepRun
from models.db import get_engine
from tests.workers.sweeps_support import (  # noqa: F401 - fixtures register by name
    NAMESPACE,
    StatementCounter,
    create_deployment,
    k8s_calls,
    redis_client_fixture,
    session_fixture,
    sim_fixture,
    sim_now,
    sync_inventory,
)
from workers import observe
from workers.prometheus_client import PrometheusClient
from workers.resource_tracker import run_resource_tracker


def track(session, sim, redis_client, **kwargs):
    client, prefix = redis_client
    return run_resource_tracker(session, now=sim_now(sim), redis_client=client, key_prefix=prefix, **kwargs)


def node(session, name):
    session.expire_all()
    return session.get(GpuNode, name)


def our_pods(session, deployment_id):
    session.expire_all()
    return list(session.scalars(select(PodAllocation).where(PodAllocation.deployment_id == deployment_id)))


def test_inventory_and_utilization(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, replicas=2, gpus=2)
    sim.advance(400)
    from models import Deployment

    k8s_name = session.get(Deployment, deployment_id).k8s_name
    sim.sim.set_load(NAMESPACE, k8s_name, {"concurrency": 40})
    sim.advance(30)
    report = track(session, sim, redis_client)
    assert report.status == "succeeded"
    assert report.details["metrics_sources"] == {"metrics_server": "ok", "prometheus": "ok"}
    row = node(session, "l40s-0")
    assert (row.gpu_product, row.gpu_capacity, row.gpu_allocatable, row.ready_status) == ("nvidia-l40s", 8, 8, "Ready")
    assert any(taint["key"] == "nvidia.com/gpu" for taint in row.taints)
    assert row.cpu_capacity_millicores > 0
    assert sum(node(session, n).gpu_allocated for n in ("l40s-0", "l40s-1")) == 4
    busy_node = node(session, "l40s-0") if node(session, "l40s-0").gpu_allocated else node(session, "l40s-1")
    assert busy_node.gpu_utilization > 0
    pods = our_pods(session, deployment_id)
    assert len(pods) == 2
    for pod in pods:
        assert pod.cpu_usage_millicores > 0
        assert pod.memory_usage_bytes > 0
        assert pod.gpu_utilization > 50  # 20 concurrent requests per replica of capacity 16: busy
        assert pod.metrics["requests_waiting"] == 4
        assert 0 < pod.metrics["kv_cache_usage"] <= 1
        assert pod.metrics["gpu_memory_used_mib"] > 0
    assert report.details["drift"] == []


def test_gpu_dropping_off_a_node_and_a_node_disappearing(session, sim, redis_client):
    track(session, sim, redis_client)
    sim.sim.set_node_gpus("l40s-1", 7)
    sim.sim.remove_node("l40s-0")
    sim.advance(5)
    report = track(session, sim, redis_client)
    assert node(session, "l40s-1").gpu_allocatable == 7
    assert node(session, "l40s-1").gpu_capacity == 8
    assert node(session, "l40s-0").present is False
    assert report.actions["nodes_marked_missing"] == 1


@pytest.mark.parametrize("status", [None, DeploymentStatus.FAILED])
def test_drift_is_flagged_and_a_pure_placement_difference_realigned(session, sim, redis_client, status):
    """RUNNING as observed, or FAILED (crash-looping pods still hold GPUs where they run)."""
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, replicas=1, gpus=2)
    sim.advance(400)
    observe.observe_deployment(deployment_id)
    if status is not None:
        session.execute(update(Deployment).where(Deployment.id == deployment_id).values(status=status))
        session.commit()
    track(session, sim, redis_client)
    [pod] = our_pods(session, deployment_id)
    wrong_node = "l40s-1" if pod.node_name == "l40s-0" else "l40s-0"
    # Admission's promise says another node than where the scheduler put the pod.
    session.execute(update(GpuReservation).where(GpuReservation.deployment_id == deployment_id)
                    .values(node_name=wrong_node))
    session.commit()
    report = track(session, sim, redis_client)
    entries = {(e["node"], e["reserved_gpus"], e["allocated_gpus"]) for e in report.details["drift"]}
    assert entries == {(wrong_node, 2, 0), (pod.node_name, 0, 2)}
    assert report.actions["reservations_realigned"] == 1
    session.expire_all()
    active = session.scalars(select(GpuReservation).where(GpuReservation.deployment_id == deployment_id,
                                                          GpuReservation.released_at.is_(None))).all()
    assert [(r.node_name, r.gpus, r.replicas) for r in active] == [(pod.node_name, 2, 1)]
    assert track(session, sim, redis_client).details["drift"] == []


def test_total_mismatch_is_flagged_not_rewritten(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, replicas=1, gpus=2)
    sim.advance(400)
    observe.observe_deployment(deployment_id)  # RUNNING: only settled deployments are checked for drift
    track(session, sim, redis_client)
    session.execute(update(GpuReservation).where(GpuReservation.deployment_id == deployment_id).values(gpus=4))
    session.commit()
    report = track(session, sim, redis_client)
    assert [(e["reserved_gpus"], e["allocated_gpus"]) for e in report.details["drift"]] == [(4, 2)]
    assert report.actions.get("reservations_realigned", 0) == 0
    session.expire_all()
    assert session.scalar(select(GpuReservation.gpus).where(GpuReservation.deployment_id == deployment_id)) == 4


def test_finished_pods_are_deleted_and_closed(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, replicas=1, failure="Failed")
    sim.advance(300)
    failed = [p for p in sim.store.list("pods", NAMESPACE)[0] if p["status"].get("phase") == "Failed"]
    assert failed
    report = track(session, sim, redis_client)
    assert report.actions["finished_pods_deleted"] == len(failed)
    sim.settle()
    remaining = {p["metadata"]["name"] for p in sim.store.list("pods", NAMESPACE)[0]}
    assert not remaining & {p["metadata"]["name"] for p in failed}
    closed = [p for p in our_pods(session, deployment_id) if p.pod_name in {f["metadata"]["name"] for f in failed}]
    assert closed
    assert all(p.terminated_at is not None for p in closed)


def test_metrics_sources_down_degrade_gracefully(session, sim, redis_client):
    sim.sim.metrics_available = False
    report = track(session, sim, redis_client, prometheus=PrometheusClient("http://127.0.0.1:9/prometheus"))
    assert report.status == "succeeded"
    assert report.details["metrics_sources"]["metrics_server"].startswith("unavailable")
    assert report.details["metrics_sources"]["prometheus"].startswith("unavailable")
    assert {e["code"] for e in report.errors} == {"metrics_server_unavailable", "prometheus_unavailable"}
    assert node(session, "l40s-0").gpu_capacity == 8  # the inventory itself still ran


def test_pods_keep_their_figures_while_the_metrics_sources_are_down(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, replicas=2)
    sim.advance(400)
    track(session, sim, redis_client)
    before = our_pods(session, deployment_id)
    observed = {pod.pod_uid: pod.observed_at for pod in before}
    figures = {
        pod.pod_uid: (pod.cpu_usage_millicores, pod.memory_usage_bytes, pod.gpu_utilization, dict(pod.metrics))
        for pod in before
    }
    assert len(figures) == 2
    assert all(cpu and memory and metrics for cpu, memory, _gpu, metrics in figures.values())
    sim.sim.metrics_available = False
    sim.advance(30)
    report = track(session, sim, redis_client, prometheus=PrometheusClient("http://127.0.0.1:9/prometheus"))
    assert report.status == "succeeded"
    assert report.actions["pod_usage_updated"] == 0
    pods = our_pods(session, deployment_id)
    assert all(pod.observed_at > observed[pod.pod_uid] for pod in pods)  # the rows themselves were rewritten
    assert {
        pod.pod_uid: (pod.cpu_usage_millicores, pod.memory_usage_bytes, pod.gpu_utilization, dict(pod.metrics))
        for pod in pods
    } == figures


def test_kubernetes_down_skips(session, sim, redis_client):
    track(session, sim, redis_client)
    before = node(session, "l40s-0").last_seen_at
    sim.faults.add({"resource": "nodes", "verb": "list", "action": {"status": 500}})
    report = track(session, sim, redis_client)
    assert report.status == "skipped"
    assert report.skip_reason.startswith("kubernetes_unavailable")
    assert node(session, "l40s-0").last_seen_at == before
    session.expire_all()
    assert session.get(SweepRun, "resource_tracker").last_status == "skipped"


def test_calls_do_not_grow_with_cluster_size(session, sim, redis_client):
    sync_inventory(session)
    create_deployment(session, sim, replicas=1)
    sim.advance(300)
    sim.server.request_log.clear()
    with StatementCounter(get_engine()) as small_statements:
        track(session, sim, redis_client)
    small_calls = len(k8s_calls(sim))
    sim.sim.add_nodes("6xnvidia-l40s:8")
    for index in range(4):
        create_deployment(session, sim, replicas=2, name=f"more-{index}")
    sim.advance(300)
    track(session, sim, redis_client)
    sim.server.request_log.clear()
    with StatementCounter(get_engine()) as large_statements:
        track(session, sim, redis_client)
    assert small_calls == len(k8s_calls(sim)) == 3  # nodes, pods, pod metrics
    assert small_statements.count == large_statements.count
