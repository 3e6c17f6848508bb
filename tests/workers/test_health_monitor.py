"""The health monitor against kubesim: statuses, reasons, recovery with backoff, FAILED after the last attempt."""

from __future__ import annotations

import itertools

from sqlalchemy import select

from models import PodAllocation, SweepRun
from tests.workers.health_monitor_support import CONFIG, recovery_events, sweep
from tests.workers.sweeps_support import (  # noqa: F401 - fixtures register by name
    create_deployment,
    deployment_row,
    redis_client_fixture,
    session_fixture,
    sim_fixture,
    sim_now,
    sync_inventory,
)
from workers.health_monitor import HealthMonitorConfig


def test_healthy_deployment_becomes_running(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, replicas=2)
    sweep(session, sim, redis_client)
    assert deployment_row(session, deployment_id).status == "CREATING"
    sim.advance(400)
    report = sweep(session, sim, redis_client)
    row = deployment_row(session, deployment_id)
    assert (row.status, row.replicas_ready, row.status_reason) == ("RUNNING", 2, None)
    assert row.last_observed_at is not None
    assert report.items["deployments"] == 1
    run = session.get(SweepRun, "health_monitor")
    assert run.last_status == "succeeded"
    assert run.last_summary["items"]["pods"] == 2
    # The pods are kept current by the monitor itself (no resource-tracker run since they were created).
    pods = session.scalars(select(PodAllocation).where(PodAllocation.deployment_id == deployment_id)).all()
    assert sorted((p.ready, p.phase, p.gpus, p.terminated_at) for p in pods) == [(True, "Running", 1, None)] * 2
    assert all(p.node_name for p in pods)


def test_crash_loop_is_recovered_then_failed_after_max_attempts(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, replicas=1, failure="CrashLoopBackOff")
    sim.advance(300)
    sweep(session, sim, redis_client)
    row = deployment_row(session, deployment_id)
    assert row.status == "CREATING"
    assert row.status_reason == "crash_loop"
    events = recovery_events(session, deployment_id)
    assert [e.inputs["attempt"] for e in events] == [1]
    assert events[0].inputs["step"] == "delete_pods"
    assert events[0].replicas_before == events[0].replicas_after == 1
    # Inside the backoff nothing more happens, however often the monitor runs.
    sim.advance(30)
    sweep(session, sim, redis_client)
    assert len(recovery_events(session, deployment_id)) == 1
    for _ in range(12):
        sim.advance(120)
        sweep(session, sim, redis_client)
    events = recovery_events(session, deployment_id)
    outcomes = [e.inputs["recovery_outcome"] for e in events]
    assert outcomes == ["attempted", "attempted", "attempted", "gave_up"]
    gaps = [b.inputs["at"] - a.inputs["at"] for a, b in itertools.pairwise(events)]
    assert gaps[0] >= 60
    assert gaps[1] >= 120
    assert gaps[2] >= 240
    row = deployment_row(session, deployment_id)
    assert row.status == "FAILED"
    assert row.status_reason == "crash_loop"
    assert "gave up" in row.status_message


def run_until_status(session, sim, redis_client, deployment_id, status, *, step=60, limit=40):
    for _ in range(limit):
        sweep(session, sim, redis_client)
        if deployment_row(session, deployment_id).status == status:
            return True
        sim.advance(step)
    return False


def test_image_that_never_pulls_ends_failed(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, failure="ImagePullBackOff")
    sim.advance(120)
    sweep(session, sim, redis_client)
    row = deployment_row(session, deployment_id)
    assert (row.status, row.status_reason) == ("CREATING", "image_pull_failure")
    assert "ImagePullBackOff" in row.status_message or "ErrImagePull" in row.status_message
    assert run_until_status(session, sim, redis_client, deployment_id, "FAILED")
    row = deployment_row(session, deployment_id)
    assert row.status_reason == "image_pull_failure"
    outcomes = [e.inputs["recovery_outcome"] for e in recovery_events(session, deployment_id)]
    assert outcomes == ["attempted", "attempted", "attempted", "gave_up"]


def test_model_that_never_becomes_ready_times_out(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, failure="NeverReady")
    sim.advance(300)
    sweep(session, sim, redis_client)
    row = deployment_row(session, deployment_id)
    # Still inside the model-load deadline: loading slowly is not a fault.
    assert (row.status, row.status_reason) == ("CREATING", None)
    sim.advance(600)
    sweep(session, sim, redis_client)
    row = deployment_row(session, deployment_id)
    assert row.status_reason == "model_load_timeout"
    assert "has not become ready" in row.status_message
    assert run_until_status(session, sim, redis_client, deployment_id, "FAILED", step=300)
    assert deployment_row(session, deployment_id).status_reason == "model_load_timeout"


def test_unschedulable_replica_shows_waiting_for_gpus_with_scheduler_message(session, sim, redis_client):
    sync_inventory(session)
    # Admitted while both nodes had 8 free GPUs; then a node loses GPUs before the pods exist.
    deployment_id_holder = []

    def shrink_then_create():
        sim.sim.set_node_gpus("l40s-1", 4)
        deployment_id_holder.append(create_deployment(session, sim, replicas=2, gpus=8))

    shrink_then_create()
    deployment_id = deployment_id_holder[0]
    sim.advance(400)
    sweep(session, sim, redis_client)
    row = deployment_row(session, deployment_id)
    assert row.status == "CREATING"
    assert row.replicas_ready == 1
    assert row.status_reason == "waiting_for_gpus"
    assert "Insufficient nvidia.com/gpu" in row.status_message
    assert row.status_message.startswith("0/2 nodes are available")
    assert recovery_events(session, deployment_id) == []  # deleting a pending pod frees nothing


def test_recovered_deployment_closes_its_episode(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, replicas=1, failure="CrashLoopBackOff")
    sim.advance(300)
    sweep(session, sim, redis_client)
    assert len(recovery_events(session, deployment_id)) == 1
    # The cause goes away (say, a bad config map was fixed): the next attempt brings it up.
    for behavior in sim.sim.pod_behaviors():
        sim.sim.remove_pod_behavior(behavior["id"])
    # The replacement pod from attempt 1 starts cleanly now and loads the model.
    sim.advance(400)
    sweep(session, sim, redis_client)
    row = deployment_row(session, deployment_id)
    assert (row.status, row.status_reason) == ("RUNNING", None)
    outcomes = [e.inputs["recovery_outcome"] for e in recovery_events(session, deployment_id)]
    assert outcomes == ["attempted", "recovered"]
    # Healthy runs afterwards record nothing more.
    sim.advance(60)
    sweep(session, sim, redis_client)
    assert len(recovery_events(session, deployment_id)) == 2


def test_creating_past_the_deadline_fails_with_the_reason(session, sim, redis_client):
    sync_inventory(session)
    sim.sim.set_node_gpus("l40s-1", 0)
    sim.sim.set_node_gpus("l40s-0", 0)  # admitted from the rows synced above; then the GPUs vanish
    deployment_id = create_deployment(session, sim, replicas=1, gpus=4)
    short = HealthMonitorConfig(create_deadline_seconds=300, model_load_deadline_seconds=600,
                                recovery_policy=CONFIG.recovery_policy, namespace="model-serving")
    sim.advance(60)
    sweep(session, sim, redis_client, config=short)
    assert deployment_row(session, deployment_id).status_reason == "waiting_for_gpus"
    assert deployment_row(session, deployment_id).status == "CREATING"
    sim.advance(400)
    sweep(session, sim, redis_client, config=short)
    row = deployment_row(session, deployment_id)
    assert (row.status, row.status_reason) == ("FAILED", "waiting_for_gpus")
    assert "Insufficient nvidia.com/gpu" in row.status_message
    [event] = recovery_events(session, deployment_id)
    assert event.inputs["recovery_outcome"] == "gave_up"


def test_each_sweep_records_its_run_and_logs_one_summary_line(session, sim, redis_client, caplog):
    """The run's row is what /metrics serves (web.observability.SweepsCollector) and /health reads."""
    from models import SweepRun

    with caplog.at_level("INFO", logger="workers.sweeps"):
        sweep(session, sim, redis_client)
    session.expire_all()
    row = session.get(SweepRun, "health_monitor")
    assert row.last_status == "succeeded"
    assert row.last_finished_at is not None
    assert row.last_summary["items"]["nodes"] == 2
    assert row.last_summary["duration_seconds"] > 0
    lines = [record for record in caplog.records if record.name == "workers.sweeps"]
    assert len(lines) == 1
    assert lines[0].summary["status"] == "succeeded"
    assert lines[0].summary["items"]["nodes"] == 2
