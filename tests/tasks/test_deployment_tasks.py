"""Deployment tasks against kubesim: create -> RUNNING -> restart -> delete, retries and permanent failures."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update

from models import Deployment, DeploymentStatus, GpuReservation, Job, JobState, PodAllocation
from models.db import get_sessionmaker
from tasks import deployments as deployment_tasks
from workers import k8s
from workers.inventory import run_inventory_sweep
from workers.observe import observe_deployment
from workers.requests import CreateDeploymentSpec, request_create, request_delete, request_restart
from workers.resource_tracker import reconcile_drift


def submit(fn, **kwargs):
    with get_sessionmaker().begin() as session:
        submitted = fn(session, **kwargs)
        return submitted.job.id, (submitted.deployment.id if submitted.deployment else None)


def submit_create(replicas=1, gpus=1, name="llama"):
    spec = CreateDeploymentSpec(
        model_id="meta-llama/Llama-3.1-8B-Instruct", replicas=replicas, gpus_per_replica=gpus, name=name
    )
    return submit(request_create, tenant_id="acme", spec=spec, requested_by="test")


def job(job_id) -> Job:
    with get_sessionmaker()() as session:
        return session.get(Job, job_id)


def deployment(deployment_id) -> Deployment:
    with get_sessionmaker()() as session:
        return session.get(Deployment, deployment_id)


def k8s_deployment(name="llama-acme"):
    clients = k8s.get_clients()
    return clients.apps.read_namespaced_deployment(name, "model-serving")


def observe_until(harness, deployment_id, status, *, step=10.0, limit=120):
    for _ in range(limit):
        observe_deployment(deployment_id)
        if deployment(deployment_id).status == status:
            return
        harness.sim.advance(step)
    raise AssertionError(f"deployment never reached {status}: {deployment(deployment_id).status}")


def reserved_gpus(deployment_id) -> int:
    with get_sessionmaker()() as session:
        return int(
            session.execute(
                select(func.coalesce(func.sum(GpuReservation.gpus), 0)).where(
                    GpuReservation.deployment_id == deployment_id, GpuReservation.released_at.is_(None)
                )
            ).scalar_one()
        )


def test_create_running_restart_delete(harness):
    job_id, deployment_id = submit_create(replicas=2, gpus=2)
    deployment_tasks.create.apply(args=[str(job_id)])
    assert job(job_id).state == JobState.SUCCEEDED
    assert harness.observed == [str(deployment_id)]
    assert deployment(deployment_id).status == DeploymentStatus.CREATING
    live = k8s_deployment()
    assert live.metadata.labels["orchestration.ai/deployment-id"] == str(deployment_id)
    assert live.spec.strategy.rolling_update.max_surge == 0

    observe_until(harness, deployment_id, DeploymentStatus.RUNNING)
    row = deployment(deployment_id)
    assert row.replicas_ready == 2
    assert row.last_observed_at is not None
    with get_sessionmaker()() as session:
        pods = (
            session.execute(
                select(PodAllocation).where(
                    PodAllocation.deployment_id == deployment_id, PodAllocation.terminated_at.is_(None)
                )
            )
            .scalars()
            .all()
        )
    assert len(pods) == 2
    assert all(pod.ready and pod.node_name and pod.gpus == 2 for pod in pods)

    restart_job, _ = submit(request_restart, tenant_id="acme", deployment_id=deployment_id, requested_by="test")
    deployment_tasks.restart.apply(args=[str(restart_job)])
    assert job(restart_job).state == JobState.SUCCEEDED
    min_ready = 2
    for _ in range(200):
        harness.sim.advance(2)
        min_ready = min(min_ready, k8s_deployment().status.ready_replicas or 0)
        observe_deployment(deployment_id)
        if deployment(deployment_id).status == DeploymentStatus.RUNNING:
            break
    assert deployment(deployment_id).status == DeploymentStatus.RUNNING
    assert min_ready >= 1, "a restart must never take every replica down"
    template = k8s_deployment().spec.template.metadata.annotations
    assert template["orchestration.ai/restartedAt"] == str(restart_job)

    delete_job, _ = submit(request_delete, tenant_id="acme", deployment_id=deployment_id, requested_by="test")
    deployment_tasks.delete.apply(args=[str(delete_job)])
    assert job(delete_job).state == JobState.SUCCEEDED
    row = deployment(deployment_id)
    assert row.status == DeploymentStatus.DELETED
    assert row.deleted_at is not None
    assert row.endpoint is None
    assert reserved_gpus(deployment_id) == 0
    clients = k8s.get_clients()
    assert clients.apps.list_namespaced_deployment("model-serving").items == []
    assert clients.core.list_namespaced_service("model-serving").items == []
    assert clients.policy.list_namespaced_pod_disruption_budget("model-serving").items == []
    # A redelivered delete (acks_late after a crash) finds the job finished and does nothing.
    assert deployment_tasks.delete.apply(args=[str(delete_job)]).result == {"skipped": "job already finished"}


def _node_of_only_pod(name_prefix: str) -> str:
    pods = k8s.get_clients().core.list_namespaced_pod("model-serving").items
    [node] = {pod.spec.node_name for pod in pods if pod.metadata.name.startswith(name_prefix)}
    return node


def test_single_replica_restart_surges_and_restores(harness):
    job_id, deployment_id = submit_create(replicas=1, gpus=4)
    deployment_tasks.create.apply(args=[str(job_id)])
    observe_until(harness, deployment_id, DeploymentStatus.RUNNING)
    assert reserved_gpus(deployment_id) == 4
    # A filler takes the rest of the replica's node, so the restart's new replica has to start on the other one.
    home = _node_of_only_pod("llama-acme")
    other = next(name for name in ("l40s-0", "l40s-1") if name != home)
    harness.cluster.store.mutate("nodes", None, other, lambda node: node["spec"].update(unschedulable=True))
    filler_job, filler_id = submit_create(replicas=1, gpus=4, name="filler")
    deployment_tasks.create.apply(args=[str(filler_job)])
    observe_until(harness, filler_id, DeploymentStatus.RUNNING)
    assert _node_of_only_pod("filler-acme") == home
    harness.cluster.store.mutate("nodes", None, other, lambda node: node["spec"].update(unschedulable=False))
    run_inventory_sweep()
    restart_job, _ = submit(request_restart, tenant_id="acme", deployment_id=deployment_id, requested_by="test")
    assert reserved_gpus(deployment_id) == 8  # the temporary replica is admitted up front
    with get_sessionmaker().begin() as session:  # admission's guess and the scheduler's choice differ
        session.execute(update(GpuReservation).where(GpuReservation.job_id == restart_job).values(node_name=home))
    deployment_tasks.restart.apply(args=[str(restart_job)])
    min_ready = 1
    for _ in range(200):
        harness.sim.advance(2)
        min_ready = min(min_ready, k8s_deployment().status.ready_replicas or 0)
        with get_sessionmaker().begin() as session:  # the resource tracker sweeps in the middle of the rollout
            reconcile_drift(session)
        observe_deployment(deployment_id)
        if deployment(deployment_id).status == DeploymentStatus.RUNNING:
            break
    assert deployment(deployment_id).status == DeploymentStatus.RUNNING
    assert min_ready == 1
    assert k8s_deployment().spec.strategy.rolling_update.max_surge == 0
    assert reserved_gpus(deployment_id) == 4
    # The reservation is on the node the new replica runs on (the scheduler's choice, not admission's).
    pods = k8s.get_clients().core.list_namespaced_pod("model-serving").items
    running_on = {pod.spec.node_name for pod in pods
                  if pod.metadata.deletion_timestamp is None and pod.metadata.name.startswith("llama-acme")}
    with get_sessionmaker()() as session:
        reserved_on = set(session.scalars(select(GpuReservation.node_name).where(
            GpuReservation.deployment_id == deployment_id, GpuReservation.released_at.is_(None))))
    assert reserved_on == running_on == {other}


def test_a_create_that_settles_books_its_gpus_where_its_pods_run(harness):
    job_id, deployment_id = submit_create(replicas=1, gpus=4)
    deployment_tasks.create.apply(args=[str(job_id)])
    harness.sim.advance(1)
    actual = _node_of_only_pod("llama-acme")
    wrong = next(name for name in ("l40s-0", "l40s-1") if name != actual)
    with get_sessionmaker().begin() as session:  # admission's guess, which the scheduler did not follow
        session.execute(update(GpuReservation).where(GpuReservation.deployment_id == deployment_id)
                        .values(node_name=wrong))

    observe_until(harness, deployment_id, DeploymentStatus.RUNNING)

    with get_sessionmaker()() as session:
        booked = session.execute(select(GpuReservation.node_name, GpuReservation.gpus).where(
            GpuReservation.deployment_id == deployment_id, GpuReservation.released_at.is_(None))).all()
    assert booked == [(actual, 4)]


def test_transient_faults_are_retried_then_succeed(harness):
    faults = harness.cluster.faults
    faults.add({"resource": "deployments", "verb": "create", "count": 1, "action": {"status": 500}})
    faults.add({"resource": "services", "verb": "create", "count": 1, "action": {"status": 429, "retry_after": 1}})
    faults.add({"resource": "poddisruptionbudgets", "verb": "create", "count": 1, "action": {"latency": 3}})
    job_id, deployment_id = submit_create()
    deployment_tasks.create.apply(args=[str(job_id)])
    finished = job(job_id)
    assert finished.state == JobState.SUCCEEDED
    # The three writes go out one after the other: each fault fails one attempt (the Deployment's 500, then
    # the Service's 429, then the PDB's timeout), and the fourth attempt adopts what exists and applies the rest.
    assert finished.attempts == 4
    assert harness.cluster.faults.rules() == []  # every fault fired
    clients = k8s.get_clients()
    assert len(clients.apps.list_namespaced_deployment("model-serving").items) == 1
    assert clients.policy.read_namespaced_pod_disruption_budget("llama-acme", "model-serving")
    observe_until(harness, deployment_id, DeploymentStatus.RUNNING)


def test_permanent_forbidden_fails_with_the_cluster_message(harness):
    harness.cluster.faults.add(
        {
            "resource": "deployments",
            "verb": "create",
            "action": {"status": 403, "message": "denied by policy gpu-guard"},
        }
    )
    job_id, deployment_id = submit_create()
    deployment_tasks.create.apply(args=[str(job_id)])
    failed = job(job_id)
    assert failed.state == JobState.FAILED
    assert failed.attempts == 1
    assert failed.error["retryable"] is False
    assert "denied by policy gpu-guard" in failed.error["message"]
    row = deployment(deployment_id)
    assert row.status == DeploymentStatus.FAILED
    assert row.active_job_id is None
    assert reserved_gpus(deployment_id) == 0


def test_a_refused_delete_leaves_the_deployment_running_and_observed(harness):
    job_id, deployment_id = submit_create()
    deployment_tasks.create.apply(args=[str(job_id)])
    observe_until(harness, deployment_id, DeploymentStatus.RUNNING)
    harness.observed.clear()
    harness.cluster.faults.add(
        {"resource": "deployments", "verb": "delete", "action": {"status": 403, "message": "denied by policy"}}
    )

    delete_job, _ = submit(request_delete, tenant_id="acme", deployment_id=deployment_id, requested_by="test")
    deployment_tasks.delete.apply(args=[str(delete_job)])

    assert job(delete_job).state == JobState.FAILED
    assert "denied by policy" in job(delete_job).error["message"]
    row = deployment(deployment_id)
    assert (row.status, row.status_reason) == (DeploymentStatus.RUNNING, "delete_failed")
    assert row.active_job_id is None
    assert reserved_gpus(deployment_id) == 1  # still running: its GPUs stay counted
    assert harness.observed == [str(deployment_id)]  # observed again at once


def test_a_refused_delete_during_a_rollout_leaves_it_restarting(harness):
    job_id, deployment_id = submit_create()
    deployment_tasks.create.apply(args=[str(job_id)])
    observe_until(harness, deployment_id, DeploymentStatus.RUNNING)
    restart_job, _ = submit(request_restart, tenant_id="acme", deployment_id=deployment_id, requested_by="test")
    deployment_tasks.restart.apply(args=[str(restart_job)])  # the job ends; the rollout goes on
    assert deployment(deployment_id).status == DeploymentStatus.RESTARTING
    harness.cluster.faults.add({"resource": "deployments", "verb": "delete", "action": {"status": 403}})

    delete_job, _ = submit(request_delete, tenant_id="acme", deployment_id=deployment_id, requested_by="test")
    deployment_tasks.delete.apply(args=[str(delete_job)])

    assert job(delete_job).state == JobState.FAILED
    assert deployment(deployment_id).status == DeploymentStatus.RESTARTING  # so the restart still ends
    harness.cluster.faults.clear()
    observe_until(harness, deployment_id, DeploymentStatus.RUNNING, step=2.0)
    assert reserved_gpus(deployment_id) == 1  # the surge replica was given back when the rollout ended


def test_permanent_invalid_fails_with_the_cluster_message(harness):
    job_id, deployment_id = submit_create()
    with get_sessionmaker().begin() as session:
        session.get(Deployment, deployment_id).image = ""
    deployment_tasks.create.apply(args=[str(job_id)])
    failed = job(job_id)
    assert failed.state == JobState.FAILED
    assert failed.error["code"] == "cluster_invalid"
    assert "image" in failed.error["message"]
    assert deployment(deployment_id).status_reason == "cluster_invalid"


def test_retries_exhausted_end_failed(harness):
    harness.cluster.faults.add({"resource": "deployments", "verb": "create", "action": {"status": 503}})
    job_id, _ = submit_create()
    deployment_tasks.create.apply(args=[str(job_id)])
    failed = job(job_id)
    assert failed.state == JobState.FAILED
    assert failed.attempts == deployment_tasks.create.max_retries + 1
    assert failed.attempts == failed.max_attempts  # never more attempts than the job says it allows
    assert failed.error["code"] == "cluster_http_503"
    assert failed.error["message"].startswith(f"gave up after {failed.max_attempts} attempts")


def test_create_adopts_existing_objects(harness):
    job_id, deployment_id = submit_create()
    deployment_tasks.create.apply(args=[str(job_id)])
    # Simulate a redelivery after a crash: the job is run again from RUNNING.
    with get_sessionmaker().begin() as session:
        session.get(Job, job_id).state = JobState.RUNNING
    result = deployment_tasks.create.apply(args=[str(job_id)]).result
    assert result["actions"] == {"deployment": "adopted", "service": "adopted", "pdb": "adopted"}
    assert len(k8s.get_clients().apps.list_namespaced_deployment("model-serving").items) == 1
    assert uuid.UUID(result["deployment_id"]) == deployment_id


def test_deleting_a_create_that_met_a_foreign_object_leaves_that_object_alone(harness):
    clients = k8s.get_clients()
    clients.core.create_namespace({"metadata": {"name": "model-serving"}})
    clients.apps.create_namespaced_deployment("model-serving", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "llama-acme", "labels": {"app": "theirs"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "theirs"}},
                 "template": {"metadata": {"labels": {"app": "theirs"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
    })
    job_id, deployment_id = submit_create()
    deployment_tasks.create.apply(args=[str(job_id)])
    assert job(job_id).error["code"] == "name_conflict"
    assert deployment(deployment_id).endpoint is None  # the Service of that name would be the other owner's

    delete_job, _ = submit(request_delete, tenant_id="acme", deployment_id=deployment_id, requested_by="test")
    result = deployment_tasks.delete.apply(args=[str(delete_job)]).result

    assert job(delete_job).state == JobState.SUCCEEDED
    assert result["removed"] == {"deployment": "foreign", "service": "absent", "pdb": "absent"}
    assert k8s_deployment().metadata.labels == {"app": "theirs"}
    assert deployment(deployment_id).status == DeploymentStatus.DELETED


def test_unschedulable_is_waiting_for_gpus_not_failed(harness):
    # Another workload (not ours) takes the GPUs after admission: the pod cannot schedule.
    job_id, deployment_id = submit_create(replicas=1, gpus=8, name="big")
    harness.sim.set_node_gpus("l40s-0", 0)
    harness.sim.set_node_gpus("l40s-1", 0)
    deployment_tasks.create.apply(args=[str(job_id)])
    harness.sim.advance(5)
    observe_deployment(deployment_id)
    row = deployment(deployment_id)
    assert row.status == DeploymentStatus.CREATING
    assert row.status_reason == "waiting_for_gpus"
    assert "nvidia.com/gpu" in (row.status_message or "")


def test_scale_up_then_down(harness):
    from models import ScalingEvent, ScalingEventStatus
    from workers.requests import request_scale

    job_id, deployment_id = submit_create(replicas=1, gpus=2)
    deployment_tasks.create.apply(args=[str(job_id)])
    observe_until(harness, deployment_id, DeploymentStatus.RUNNING)
    scale_job, _ = submit(
        request_scale, tenant_id="acme", deployment_id=deployment_id, replicas=3, reason="load", requested_by="test"
    )
    assert reserved_gpus(deployment_id) == 6
    deployment_tasks.scale.apply(args=[str(scale_job)])
    assert job(scale_job).state == JobState.SUCCEEDED
    observe_until(harness, deployment_id, DeploymentStatus.RUNNING)
    assert deployment(deployment_id).replicas_ready == 3
    assert k8s_deployment().spec.replicas == 3
    down_job, _ = submit(
        request_scale, tenant_id="acme", deployment_id=deployment_id, replicas=1, reason="quiet", requested_by="test"
    )
    deployment_tasks.scale.apply(args=[str(down_job)])
    observe_until(harness, deployment_id, DeploymentStatus.RUNNING)
    assert deployment(deployment_id).replicas_ready == 1
    assert reserved_gpus(deployment_id) == 2
    with get_sessionmaker()() as session:
        statuses = session.execute(
            select(ScalingEvent.replicas_before, ScalingEvent.replicas_after, ScalingEvent.status).order_by(
                ScalingEvent.created_at
            )
        ).all()
    assert statuses == [(1, 3, ScalingEventStatus.SUCCEEDED), (3, 1, ScalingEventStatus.SUCCEEDED)]


def test_a_scale_the_cluster_refuses_puts_the_count_and_the_gpus_back(harness):
    from models import ScalingEvent, ScalingEventStatus
    from workers.requests import request_scale

    job_id, deployment_id = submit_create(replicas=2, gpus=2)
    deployment_tasks.create.apply(args=[str(job_id)])
    observe_until(harness, deployment_id, DeploymentStatus.RUNNING)
    run_inventory_sweep()  # pod rows, as the resource tracker keeps them
    harness.cluster.faults.add({"method": "PATCH", "action": {"status": 403}})

    for replicas in (1, 3):  # down (reservations released up front), then up (admitted up front)
        scale_job, _ = submit(request_scale, tenant_id="acme", deployment_id=deployment_id, replicas=replicas,
                              reason="test", requested_by="test")
        deployment_tasks.scale.apply(args=[str(scale_job)])

        assert job(scale_job).state == JobState.FAILED
        row = deployment(deployment_id)
        assert (row.replicas_desired, row.status, row.status_reason) == (2, DeploymentStatus.RUNNING, "scale_failed")
        assert reserved_gpus(deployment_id) == 4  # the two replicas that still run
    assert k8s_deployment().spec.replicas == 2
    with get_sessionmaker()() as session:
        assert set(session.scalars(select(ScalingEvent.status))) == {ScalingEventStatus.FAILED}


def test_missing_image_ends_failed_with_the_pull_error(harness):
    job_id, deployment_id = submit_create()
    with get_sessionmaker().begin() as session:
        session.get(Deployment, deployment_id).image = "registry.example/vllm/does-not-exist:1"
    deployment_tasks.create.apply(args=[str(job_id)])
    observe_until(harness, deployment_id, DeploymentStatus.FAILED, step=5)
    row = deployment(deployment_id)
    assert row.status_reason == "image_pull_failure"
    assert "not found" in row.status_message


def test_a_namespace_deleted_behind_our_back_is_recreated(harness):
    """The namespace we remembered is gone: the first write meets it missing, recreates it and retries, and the
    job succeeds at its first attempt."""
    first_job, _ = submit_create(name="first")
    deployment_tasks.create.apply(args=[str(first_job)])
    assert job(first_job).state == JobState.SUCCEEDED
    clients = k8s.get_clients()
    clients.core.delete_namespace("model-serving")
    for _ in range(30):
        harness.sim.advance(5)
        if "model-serving" not in {ns.metadata.name for ns in clients.core.list_namespace().items}:
            break
    else:
        raise AssertionError("the namespace was never deleted")

    second_job, _ = submit_create(name="second")
    deployment_tasks.create.apply(args=[str(second_job)])

    finished = job(second_job)
    assert (finished.state, finished.attempts) == (JobState.SUCCEEDED, 1), finished.error
    assert clients.policy.read_namespaced_pod_disruption_budget("second-acme", "model-serving")
    assert clients.core.read_namespaced_service("second-acme", "model-serving")


def test_the_status_poller_follows_a_create_until_it_settles(harness, monkeypatch):
    """The poll_status task through its real schedule (Redis, keys of its own): each run observes the due
    deployment and sends its successor while it converges; once RUNNING, the schedule is empty."""
    from tests.workers.status_polls_support import isolated_schedule
    from workers import status_polls

    with isolated_schedule(monkeypatch) as (client, where, sent):
        job_id, deployment_id = submit_create()
        deployment_tasks.create.apply(args=[str(job_id)])
        status_polls.schedule(deployment_id, 0)
        runs = 0
        while deployment(deployment_id).status != DeploymentStatus.RUNNING:
            assert sent, "the poller stopped while the deployment was still converging"
            client.zadd(where.due, {str(deployment_id): 0})  # due now: the test does not wait out the delays
            assert deployment_tasks.poll_status.apply(args=[sent.pop()[0]]).result == 1
            harness.sim.advance(10)
            runs += 1
            assert runs < 60
        assert client.zcard(where.due) == 0  # settled: no more polls
        assert client.hlen(where.leases) == 0
