"""The autoscaler against kubesim: load up -> scale up through the scale job, load down -> scale down only
after the stabilization window, no flapping; a scale-up that does not fit is blocked; Prometheus down."""

from __future__ import annotations

from sqlalchemy import func, select

from models import Job, JobType, ScalingEvent, ScalingTrigger, SweepRun
from tests.workers.sweeps_support import (  # noqa: F401 - fixtures register by name
    NAMESPACE,
    create_deployment,
    deployment_row,
    redis_client_fixture,
    run_at_once,
    run_job,
    session_fixture,
    sim_fixture,
    sim_now,
    sync_inventory,
)
from workers import deployments, observe
from workers.autoscaler import AutoscalerConfig, metric_targets, run_autoscaler
from workers.prometheus_client import PrometheusClient

CONFIG = AutoscalerConfig(namespace=NAMESPACE, scale_down_stabilization_seconds=300)


class Enqueued(list):
    def __call__(self, job):
        self.append(job)


def autoscale(session, sim, redis_client, enqueued=None, now=None, **kwargs):
    client, prefix = redis_client
    return run_autoscaler(
        session, now=sim_now(sim) if now is None else now, config=CONFIG, redis_client=client, key_prefix=prefix,
        enqueue=enqueued if enqueued is not None else Enqueued(), **kwargs,
    )


def settle(sim, deployment_id, seconds=400):
    """What the scale task and its status poller would do: let pods start, observe until settled."""
    sim.advance(seconds)
    for _ in range(10):
        if not observe.observe_deployment(deployment_id):
            return


def auto_events(session, deployment_id):
    session.expire_all()
    return list(session.scalars(
        select(ScalingEvent)
        .where(ScalingEvent.deployment_id == deployment_id, ScalingEvent.trigger == ScalingTrigger.AUTO)
        .order_by(ScalingEvent.created_at)
    ))


def autoscaled(session, sim, **spec):
    values = {"replicas": 1, "autoscaling_enabled": True, "min_replicas": 1, "max_replicas": 4}
    values.update(spec)
    deployment_id = create_deployment(session, sim, **values)
    settle(sim, deployment_id)
    assert deployment_row(session, deployment_id).status == "RUNNING"
    return deployment_id


def test_load_up_then_down_scales_up_then_down_after_window_without_flapping(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = autoscaled(session, sim, autoscaling_targets={"queue_depth": 4}, target_gpu_utilization=90)
    k8s_name = deployment_row(session, deployment_id).k8s_name

    sim.sim.set_load(NAMESPACE, k8s_name, {"concurrency": 48, "capacity_per_replica": 16})
    sim.advance(30)
    enqueued = Enqueued()
    report = autoscale(session, sim, redis_client, enqueued)
    assert report.actions["scale_up"] == 1
    [job] = enqueued
    assert job.type == JobType.DEPLOYMENT_SCALE
    [event] = auto_events(session, deployment_id)
    assert (event.replicas_before, event.replicas_after) == (1, 4)  # queue 32 vs 4 -> 8, capped at max 4
    queue = next(m for m in event.inputs["metrics"] if m["metric"] == "queue_depth")
    assert queue["average"] == 32
    assert deployment_row(session, deployment_id).replicas_desired == 4
    run_job(job.id, deployments.execute_scale)
    # The new replicas load their model while the load stays high: sweeps keep the 4 replicas (no flapping,
    # even though the queue empties once they serve: GPU utilization still asks for 4).
    for _ in range(14):
        sim.advance(30)
        observe.observe_deployment(deployment_id)
        enqueued = Enqueued()
        autoscale(session, sim, redis_client, enqueued)
        assert enqueued == []
    row = deployment_row(session, deployment_id)
    assert (row.status, row.replicas_ready, row.replicas_desired) == ("RUNNING", 4, 4)

    # Load falls; sweeps every 30 s. Nothing happens inside the scale-down window, then one step down.
    sim.sim.set_load(NAMESPACE, k8s_name, {"concurrency": 2, "capacity_per_replica": 16})
    replicas_seen = []
    scale_jobs = []
    for _ in range(14):
        sim.advance(30)
        enqueued = Enqueued()
        autoscale(session, sim, redis_client, enqueued)
        for scale_job in enqueued:
            scale_jobs.append(scale_job)
            run_job(scale_job.id, deployments.execute_scale)
            settle(sim, deployment_id, seconds=60)
        replicas_seen.append(deployment_row(session, deployment_id).replicas_desired)
    assert len(scale_jobs) == 1
    first_down = replicas_seen.index(replicas_seen[-1])
    assert first_down * 30 >= 270  # no scale-down while a 4-replica recommendation is in the 300 s window
    assert replicas_seen[-1] == 1
    events = auto_events(session, deployment_id)
    assert [(e.replicas_before, e.replicas_after) for e in events] == [(1, 4), (4, 1)]
    assert "scale_down_stabilization" not in events[-1].inputs["limited_by"]


def test_scale_up_that_does_not_fit_is_blocked_and_creates_nothing(session, sim, redis_client):
    sync_inventory(session)
    create_deployment(session, sim, replicas=1, gpus=8, name="filler")
    deployment_id = autoscaled(session, sim, gpus=8, target_gpu_utilization=50)
    k8s_name = deployment_row(session, deployment_id).k8s_name
    pods_before = len(sim.store.list("pods", NAMESPACE)[0])
    sim.sim.set_load(NAMESPACE, k8s_name, {"concurrency": 16})
    sim.advance(30)
    enqueued = Enqueued()
    report = autoscale(session, sim, redis_client, enqueued)
    assert report.actions["scale_blocked"] == 1
    assert enqueued == []
    [event] = auto_events(session, deployment_id)
    assert event.status == "blocked"
    assert event.job_id is None
    assert event.replicas_after == 2
    assert event.inputs["admission"]["code"] == "insufficient_gpu"
    assert event.inputs["admission"]["details"]["requested_per_replica"] == 8
    row = deployment_row(session, deployment_id)
    assert (row.replicas_desired, row.status, row.active_job_id) == (1, "RUNNING", None)
    scale_jobs = session.scalar(select(func.count()).select_from(Job).where(Job.type == JobType.DEPLOYMENT_SCALE))
    assert scale_jobs == 0
    sim.advance(30)
    assert len(sim.store.list("pods", NAMESPACE)[0]) == pods_before
    # The same block 30 s later is not recorded again.
    autoscale(session, sim, redis_client)
    assert len(auto_events(session, deployment_id)) == 1


def test_prometheus_down_skips_without_decisions(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = autoscaled(session, sim, target_gpu_utilization=50)
    sim.sim.set_load(NAMESPACE, deployment_row(session, deployment_id).k8s_name, {"concurrency": 40})
    report = autoscale(session, sim, redis_client, prometheus=PrometheusClient("http://127.0.0.1:9/prometheus"))
    assert report.status == "skipped"
    assert report.skip_reason.startswith("prometheus_unavailable")
    assert auto_events(session, deployment_id) == []
    session.expire_all()
    assert session.get(SweepRun, "autoscaler").last_status == "skipped"


def test_two_autoscalers_at_once_scale_once(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = autoscaled(session, sim, target_gpu_utilization=50)
    sim.sim.set_load(NAMESPACE, deployment_row(session, deployment_id).k8s_name, {"concurrency": 40})
    sim.advance(30)
    statuses = [report.status for report in run_at_once(lambda db: autoscale(db, sim, redis_client))]
    assert sorted(statuses) == ["skipped", "succeeded"]
    assert len(auto_events(session, deployment_id)) == 1


def test_metric_targets_aliases_and_defaults():
    from workers.autoscaler import AutoscaledDeployment

    def deployment(targets, gpu=None):
        return AutoscaledDeployment(id=None, tenant_id="t", model_id="m", replicas_desired=1, min_replicas=1,
                                    max_replicas=2, target_gpu_utilization=gpu, targets=targets, busy=False)

    assert metric_targets(deployment({})) == ({"gpu_utilization": 80.0}, [])
    targets, ignored = metric_targets(deployment({"vllm:num_requests_waiting": 3, "kv_cache_usage": 85, "rps": 2}, 70))
    assert targets == {"queue_depth": 3.0, "kv_cache_usage": 0.85, "gpu_utilization": 70.0}
    assert ignored == ["rps"]


def test_a_new_deployment_is_not_scaled_down_within_the_window_after_its_creation(session, sim, redis_client):
    """Its model loads and no traffic has come yet: utilization 0 must not shrink it at the first sweep. The
    replicas it was created with count as a recommendation made when its create job began."""
    sync_inventory(session)
    deployment_id = autoscaled(session, sim, replicas=3, target_gpu_utilization=70)
    created_at = session.scalar(select(func.max(Job.created_at)).where(Job.target_id == str(deployment_id)))
    assert created_at is not None
    sim.advance(30)

    held = Enqueued()
    inside = autoscale(session, sim, redis_client, held, now=created_at.timestamp() + 60)
    assert held == []
    assert inside.actions.get("scale_down", 0) == 0

    scaled = Enqueued()
    later = created_at.timestamp() + CONFIG.scale_down_stabilization_seconds + 60
    autoscale(session, sim, redis_client, scaled, now=later)
    [job] = scaled
    [event] = auto_events(session, deployment_id)
    assert (event.replicas_before, event.replicas_after) == (3, 1)
    assert event.reason.endswith("(held to min_replicas)")  # idle: the metric alone asks for fewer than the min
    assert job.type == JobType.DEPLOYMENT_SCALE


def test_an_event_names_what_held_the_result():
    from types import SimpleNamespace

    from workers.autoscaler import _held_by

    bounds = SimpleNamespace(min_replicas=1, max_replicas=4)
    # Clamped to min (1) first, then the window kept 2 of the 4 replicas: the window held it, not min_replicas.
    assert _held_by(["min_replicas", "scale_down_stabilization"], 2, bounds) == " (held up by the scale-down window)"
    assert _held_by(["min_replicas"], 1, bounds) == " (held to min_replicas)"
    assert _held_by(["max_replicas", "step_cap"], 4, bounds) == " (held to max_replicas; capped per step)"
    assert _held_by([], 3, bounds) == ""
