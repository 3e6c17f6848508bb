"""Health monitor: node failure, overlapping runs, the API down, and constant cost per sweep."""

from __future__ import annotations

from sqlalchemy import select

from models import GpuReservation, PodAllocation, SweepRun
from models.db import get_engine
from tests.workers.health_monitor_support import CONFIG, recovery_events, sweep
from tests.workers.sweeps_support import (  # noqa: F401 - fixtures register by name
    StatementCounter,
    create_deployment,
    deployment_row,
    k8s_calls,
    redis_client_fixture,
    run_at_once,
    session_fixture,
    sim_fixture,
    sim_now,
    sync_inventory,
)
from workers.health_monitor import run_health_monitor


def pods_by_node(sim, deployment_id):
    pods, _revision = sim.store.list("pods", "model-serving")
    return sorted(
        (p["spec"].get("nodeName"), bool(p["metadata"].get("deletionTimestamp")))
        for p in pods
        if p["metadata"]["labels"].get("orchestration.ai/deployment-id") == str(deployment_id)
    )


def active_reservations(db, deployment_id):
    db.expire_all()
    rows = db.scalars(select(GpuReservation).where(GpuReservation.deployment_id == deployment_id,
                                                   GpuReservation.released_at.is_(None)))
    return sorted((row.node_name, row.gpus) for row in rows)


def test_node_not_ready_moves_replicas_within_the_admitted_gpus(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, replicas=2, gpus=2)
    sim.advance(400)
    sweep(session, sim, redis_client)
    assert deployment_row(session, deployment_id).status == "RUNNING"
    [(node, _)] = active_reservations(session, deployment_id)  # best fit packs both replicas on one node
    other = "l40s-1" if node == "l40s-0" else "l40s-0"

    sim.sim.fail_node(node, mode="Unknown")
    sim.advance(60)
    # No resource-tracker run since the failure: the gpu_nodes rows admission reads still say Ready, and the
    # monitor must not place the moved replicas back on the dead node.
    sweep(session, sim, redis_client)
    row = deployment_row(session, deployment_id)
    assert row.status in ("DEGRADED", "RUNNING")
    [event] = recovery_events(session, deployment_id)
    assert event.inputs["step"] == "move_pods"
    assert event.status == "succeeded"
    assert event.replicas_before == event.replicas_after == 2
    # The reservation moved with the pods: same 4 GPUs, now on the healthy node.
    assert active_reservations(session, deployment_id) == [(other, 4)]
    sim.advance(400)
    sweep(session, sim, redis_client)
    row = deployment_row(session, deployment_id)
    assert (row.status, row.replicas_ready) == ("RUNNING", 2)
    assert [n for n, deleting in pods_by_node(sim, deployment_id) if not deleting] == [other, other]


def test_node_not_ready_without_room_is_blocked_and_deletes_nothing(session, sim, redis_client):
    sync_inventory(session)
    first = create_deployment(session, sim, replicas=1, gpus=8, name="big-a")
    second = create_deployment(session, sim, replicas=1, gpus=8, name="big-b")
    sim.advance(400)
    sweep(session, sim, redis_client)
    [(node, _)] = active_reservations(session, first)
    sim.sim.fail_node(node, mode="Unknown")
    sim.advance(60)
    sync_inventory(session)
    before = pods_by_node(sim, first)
    sweep(session, sim, redis_client)
    [event] = recovery_events(session, first)
    assert event.status == "blocked"
    assert event.inputs["admission"]["code"] == "insufficient_gpu"
    assert pods_by_node(sim, first) == before
    assert active_reservations(session, first) == [(node, 8)]
    assert deployment_row(session, second).status == "RUNNING"


def test_two_sweeps_at_once_act_once(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, failure="CrashLoopBackOff")
    sim.advance(300)
    reports = run_at_once(lambda db: sweep(db, sim, redis_client))
    assert sorted(report.status for report in reports) == ["skipped", "succeeded"]
    assert len(recovery_events(session, deployment_id)) == 1
    # And a later run at the same instant does not repeat the step either (backoff, from the recorded event).
    sweep(session, sim, redis_client)
    assert len(recovery_events(session, deployment_id)) == 1


def test_kubernetes_down_skips_and_writes_nothing(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, replicas=1)
    sim.advance(400)
    sweep(session, sim, redis_client)
    before = deployment_row(session, deployment_id)
    observed, status = before.last_observed_at, before.status
    sim.faults.add({"resource": "pods", "verb": "list", "action": {"status": 503}})
    sim.advance(30)
    report = sweep(session, sim, redis_client)
    assert report.status == "skipped"
    assert report.skip_reason.startswith("kubernetes_unavailable")
    session.expire_all()
    run = session.get(SweepRun, "health_monitor")
    assert run.last_status == "skipped"
    assert "kubernetes_unavailable" in run.last_summary["skip_reason"]
    after = deployment_row(session, deployment_id)
    assert (after.status, after.last_observed_at) == (status, observed)
    pod_closed = select(PodAllocation.terminated_at).where(PodAllocation.deployment_id == deployment_id)
    assert session.scalar(pod_closed) is None
    sim.faults.clear()
    assert sweep(session, sim, redis_client).status == "succeeded"


def measure(db, sim, redis_client):
    sim.server.request_log.clear()
    with StatementCounter(get_engine()) as statements:
        sweep(db, sim, redis_client)
    return len(k8s_calls(sim)), statements.count


def test_calls_and_statements_do_not_grow_with_deployments(session, sim, redis_client):
    sync_inventory(session)
    create_deployment(session, sim, replicas=1, name="one")
    sim.advance(400)
    sweep(session, sim, redis_client)
    small = measure(session, sim, redis_client)
    for index in range(6):
        failure = "CrashLoopBackOff" if index % 2 else None
        create_deployment(session, sim, replicas=1, name=f"more-{index}", failure=failure)
    sim.advance(400)
    sweep(session, sim, redis_client)  # the recovery actions happen here
    sim.advance(10)
    large = measure(session, sim, redis_client)
    assert small[0] == large[0] == 3  # deployments, pods, nodes
    # Only what changed is written, each kind in one statement whatever the number of rows: the deployments,
    # the new or changed pods and the vanished ones; the steady single deployment needed none of them.
    assert small[1] <= large[1] <= small[1] + 3


def test_redis_down_skips_and_says_so(session, sim):
    import redis

    unreachable = redis.Redis(host="127.0.0.1", port=9, socket_connect_timeout=0.5)
    report = run_health_monitor(session, now=sim_now(sim), config=CONFIG, redis_client=unreachable,
                                key_prefix="unused:", enqueue=lambda job: None)
    assert report.status == "skipped"
    assert report.skip_reason.startswith("redis_unavailable")
    session.expire_all()
    assert session.get(SweepRun, "health_monitor").last_status == "skipped"
