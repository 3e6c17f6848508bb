"""The drain, step by step, against kubesim (virtual clock) and the real Postgres.

The steps are run in this process exactly as the ``nodes.drain`` task runs them; the countdown a step
asks for is spent by advancing the simulated clock, so minutes of model loading take milliseconds. The
end-to-end variant with a real worker lives in tests/e2e/test_drain_e2e.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from bench.drain import (
    DRAINED_NODE,
    SCENARIO,
    TENANT,
    DeploymentShape,
    ReadySampler,
    deploy_through_service,
    drive_drain,
    other_nodes,
    pods_on_node,
    point_service_at,
    set_cordon,
    submit_drain,
)
from kubesim.cluster import SimCluster
from models import (
    GpuNode,
    GpuReservation,
    Job,
    JobState,
    PodAllocation,
    ScalingEvent,
    ScalingEventStatus,
    ScalingTrigger,
)
from models.db import get_sessionmaker
from settings import get_settings
from workers import admission, drain
from workers.domain import ConflictError
from workers.k8s import get_clients, reset_client

NODES = "3xnvidia-l40s:8"
FAST_PODS = {"selector": {}, "model_load_seconds": 60.0, "image_pull_seconds": 5.0}


@pytest.fixture
def cluster(tmp_path, database_url, clean_tables, monkeypatch) -> Iterator[SimCluster]:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    with SimCluster(nodes=NODES, seed=5) as sim_cluster:
        sim_cluster.sim.add_pod_behavior(FAST_PODS)
        point_service_at(sim_cluster, tmp_path / "kubeconfig")
        yield sim_cluster
    reset_client()
    get_settings.cache_clear()


def _job(job_id) -> Job:
    with get_sessionmaker()() as session:
        return session.get(Job, job_id)


def _events(job_id) -> list[ScalingEvent]:
    with get_sessionmaker()() as session:
        return list(session.scalars(select(ScalingEvent).where(ScalingEvent.job_id == job_id)))


def _add_pdb(name: str, namespace: str, selector: dict[str, str], **spec) -> None:
    clients = get_clients()
    clients.policy.create_namespaced_pod_disruption_budget(
        namespace,
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
         "spec": {"selector": {"matchLabels": selector}, **spec}},
    )


def test_drain_moves_three_deployments_without_dropping_below_desired(cluster):
    deployed = deploy_through_service(cluster)
    namespace = get_settings().k8s_namespace
    names = [deployed.k8s_names[shape.name] for shape in SCENARIO]
    assert len(pods_on_node(cluster, namespace, DRAINED_NODE)) == 5
    sampler = ReadySampler(cluster, namespace, names)
    sampler.start()

    job_id = submit_drain(DRAINED_NODE)
    state = drive_drain(cluster, job_id, advance=True)
    minimum = sampler.stop()

    job = _job(job_id)
    assert state == "SUCCEEDED", job.error
    assert job.state == JobState.SUCCEEDED
    assert sampler.samples > 50  # every store change was looked at
    for shape in SCENARIO:
        assert minimum[deployed.k8s_names[shape.name]] >= shape.replicas, (shape.name, minimum)
    assert pods_on_node(cluster, namespace, DRAINED_NODE) == []
    cluster.advance(120)  # replacements created after an eviction were scaled away: nothing left behind
    for shape in SCENARIO:
        deployment = get_clients().apps.read_namespaced_deployment(deployed.k8s_names[shape.name], namespace)
        assert deployment.spec.replicas == shape.replicas
        assert deployment.status.ready_replicas == shape.replicas
    assert job.progress["pods"] == {"total": 5, "evicted": 5, "remaining": 0}
    assert job.progress["replacements"] == {"requested": 5, "ready": 5}
    assert {item["name"] for item in job.result["deployments"]} == {shape.name for shape in SCENARIO}
    events = _events(job_id)
    assert {event.trigger for event in events} == {ScalingTrigger.DRAIN}
    surges = sorted((e.replicas_before, e.replicas_after) for e in events if e.replicas_after > e.replicas_before)
    returns = sorted((e.replicas_before, e.replicas_after) for e in events if e.replicas_after < e.replicas_before)
    assert surges == [(1, 2), (2, 4), (2, 4)]
    assert returns == [(2, 1), (4, 2), (4, 2)]
    with get_sessionmaker()() as session:
        node = session.get(GpuNode, DRAINED_NODE)
        assert node.unschedulable is True
        assert node.cordoned_by == "drain:bench-admin"
        on_drained = session.scalars(
            select(GpuReservation).where(GpuReservation.node_name == DRAINED_NODE,
                                         GpuReservation.released_at.is_(None))
        ).all()
        assert on_drained == []
        # The node views show it empty as soon as the drain ends (its pod rows closed), not at the next sweep.
        live_rows = session.scalars(select(PodAllocation).where(PodAllocation.node_name == DRAINED_NODE,
                                                                PodAllocation.terminated_at.is_(None))).all()
        assert live_rows == []
        # The moved replicas keep their room: 4 + 2 + 2 GPUs reserved on the other nodes.
        elsewhere = session.scalars(select(GpuReservation).where(GpuReservation.released_at.is_(None))).all()
        assert sum(row.gpus for row in elsewhere) == 8
        # ... and they still count against the tenant's quota: the surge rows are now its real replicas.
        assert admission.tenant_quota(session, TENANT)[1] == 8


def test_drain_without_room_elsewhere_stops_and_evicts_nothing(cluster):
    deployed = deploy_through_service(cluster)
    namespace = get_settings().k8s_namespace
    before = sorted(pods_on_node(cluster, namespace, DRAINED_NODE))
    # Take the other nodes away from admission: cordoned by an operator.
    set_cordon(cluster, other_nodes(cluster, DRAINED_NODE), True)
    from models.db import session_scope
    from workers import inventory

    with session_scope() as session:
        inventory.sync_inventory(session)

    job_id = submit_drain(DRAINED_NODE)
    state = drive_drain(cluster, job_id, advance=True)

    job = _job(job_id)
    assert state == "FAILED"
    assert job.error["code"] == "no_capacity_elsewhere"
    assert "nothing was evicted" in job.error["message"]
    blocked = {item["name"] for item in job.error["details"]["deployments"]}
    assert blocked == {shape.name for shape in SCENARIO}
    assert sorted(pods_on_node(cluster, namespace, DRAINED_NODE)) == before
    for shape in SCENARIO:
        deployment = get_clients().apps.read_namespaced_deployment(deployed.k8s_names[shape.name], namespace)
        assert deployment.spec.replicas == shape.replicas  # never surged
    assert get_clients().core.read_node(DRAINED_NODE).spec.unschedulable is True
    events = _events(job_id)
    assert {event.status for event in events} == {ScalingEventStatus.BLOCKED}
    with get_sessionmaker()() as session:
        assert session.scalars(select(GpuReservation).where(GpuReservation.job_id == job_id)).all() == []


def test_a_drain_allowed_to_lose_capacity_keeps_the_lost_replicas_reservations(cluster):
    """The evicted replicas wait for GPUs and keep their reservations, so their GPUs are not promised to anyone
    else, and they still count against the tenant's quota. (One replica each: a budget never blocks them.)"""
    from models.db import session_scope
    from workers import inventory, observe, resource_tracker

    singles = (
        DeploymentShape("mistral", "mistralai/Mistral-7B-Instruct-v0.3", 1, 4),
        DeploymentShape("qwen", "Qwen/Qwen2.5-1.5B-Instruct", 1, 2),
    )
    deployed = deploy_through_service(cluster, singles)
    namespace = get_settings().k8s_namespace
    others = other_nodes(cluster, DRAINED_NODE)
    set_cordon(cluster, others, True)
    with session_scope() as session:
        inventory.sync_inventory(session)

    job_id = submit_drain(DRAINED_NODE, allow_capacity_loss=True)
    state = drive_drain(cluster, job_id, advance=True)

    assert state == "SUCCEEDED", _job(job_id).error
    assert pods_on_node(cluster, namespace, DRAINED_NODE) == []
    with get_sessionmaker()() as session:
        held = session.scalars(select(GpuReservation).where(GpuReservation.released_at.is_(None))).all()
        assert sum(row.gpus for row in held) == 6
        assert admission.tenant_quota(session, TENANT)[1] == 6

    # Room comes back elsewhere: the waiting replicas start there, their reservations follow them, and
    # admission offers only what they leave free.
    set_cordon(cluster, others, False)
    cluster.advance(300)
    for shape in singles:
        deployment = get_clients().apps.read_namespaced_deployment(deployed.k8s_names[shape.name], namespace)
        assert deployment.status.ready_replicas == 1
    with session_scope() as session:
        inventory.sync_inventory(session)
    for deployment_id in deployed.ids.values():
        observe.observe_deployment(deployment_id)  # RUNNING: the status poll books their GPUs where they run
    with session_scope() as session:
        assert resource_tracker.reconcile_drift(session).entries == []  # nothing left for the tracker
    with session_scope() as session:
        assert admission.current_capacity(session).free_total("nvidia-l40s") == 2 * 8 - 6
        assert admission.tenant_quota(session, TENANT)[1] == 6


def test_a_drain_does_not_wait_for_replacements_of_pods_that_were_not_ready(cluster):
    """Crash-looping pods serve nothing: evicting them loses no capacity, so the drain goes on without waiting for
    replacements that crash-loop too (it used to wait out its whole timeout, holding the deployment)."""
    cluster.sim.add_pod_behavior({"selector": {}, "failure": "CrashLoopBackOff"})
    deployed = deploy_through_service(cluster, (DeploymentShape("crashy", "org/crashy", 2, 1),), wait_ready=False)
    namespace = get_settings().k8s_namespace
    name = deployed.k8s_names["crashy"]
    assert (get_clients().apps.read_namespaced_deployment(name, namespace).status.ready_replicas or 0) == 0

    job_id = submit_drain(DRAINED_NODE)
    state = drive_drain(cluster, job_id, advance=True, max_steps=100)

    assert state == "SUCCEEDED", _job(job_id).error
    assert pods_on_node(cluster, namespace, DRAINED_NODE) == []


def test_drain_blocked_by_pdb_fails_at_timeout_and_withdraws_the_surge(cluster):
    deployed = deploy_through_service(cluster)
    namespace = get_settings().k8s_namespace
    qwen = deployed.k8s_names["qwen"]
    # A second, stricter budget on one deployment: every pod must stay (no eviction can ever pass).
    clients = get_clients()
    clients.policy.delete_namespaced_pod_disruption_budget(qwen, namespace)
    _add_pdb("qwen-strict", namespace, {"app.kubernetes.io/instance": qwen}, minAvailable="100%")
    cluster.settle()

    job_id = submit_drain(DRAINED_NODE, timeout_seconds=3600)
    seen_blocked: list[dict] = []
    backoffs: list[float] = []

    def watch(step: int) -> None:
        progress = _job(job_id).progress or {}
        if not progress.get("blocked"):
            return
        seen_blocked.extend(progress["blocked"])
        backoffs.append(progress["eviction_attempts"])
        if len(backoffs) == 3:
            # Three blocked passes seen (retried with growing backoff): let the job's time run out now,
            # instead of waiting an hour of wall time for the deadline.
            with get_sessionmaker()() as session:
                job = session.get(Job, job_id)
                job.progress = {**job.progress, "deadline": "2000-01-01T00:00:00+00:00"}
                session.commit()

    state = drive_drain(cluster, job_id, advance=True, between_steps=watch)
    job = _job(job_id)
    assert state == "FAILED"
    assert job.error["code"] == "eviction_blocked"
    assert backoffs == [1, 2, 3]
    assert "disruption budget" in job.error["message"]
    assert any(item["name"].startswith(qwen) and "disruption budget" in item["message"] for item in seen_blocked)
    assert "qwen-strict" in " ".join(item["message"] for item in seen_blocked)
    # qwen's pods are still on the node; its surge was withdrawn.
    assert any(name.startswith(qwen) for name in pods_on_node(cluster, namespace, DRAINED_NODE))
    assert clients.apps.read_namespaced_deployment(qwen, namespace).spec.replicas == 2
    assert clients.core.read_node(DRAINED_NODE).spec.unschedulable is True
    with get_sessionmaker()() as session:
        unused = session.scalars(
            select(GpuReservation).where(GpuReservation.job_id == job_id, GpuReservation.released_at.is_(None))
        ).all()
    # Only the surges of the deployments that did move remain (they now hold the moved replicas).
    assert sum(row.replicas for row in unused) == 3


def test_cancelled_drain_scales_back_and_leaves_the_node_cordoned(cluster):
    deployed = deploy_through_service(cluster)
    namespace = get_settings().k8s_namespace
    before = sorted(pods_on_node(cluster, namespace, DRAINED_NODE))
    job_id = submit_drain(DRAINED_NODE)

    def cancel_while_waiting(step: int) -> None:
        if step == 3:
            with get_sessionmaker()() as session:
                drain.request_cancel(session, job_id)
                session.commit()

    state = drive_drain(cluster, job_id, advance=True, between_steps=cancel_while_waiting)
    job = _job(job_id)
    assert state == "CANCELLED"
    assert job.state == JobState.CANCELLED
    assert job.progress["phase"] == "cancelled"
    assert sorted(job.error["details"]["surges_withdrawn"]) == sorted(shape.name for shape in SCENARIO)
    cluster.advance(60)
    assert sorted(pods_on_node(cluster, namespace, DRAINED_NODE)) == before  # nothing evicted
    for shape in SCENARIO:
        deployment = get_clients().apps.read_namespaced_deployment(deployed.k8s_names[shape.name], namespace)
        assert deployment.spec.replicas == shape.replicas
    assert get_clients().core.read_node(DRAINED_NODE).spec.unschedulable is True
    with get_sessionmaker()() as session:
        assert session.scalars(
            select(GpuReservation).where(GpuReservation.job_id == job_id, GpuReservation.released_at.is_(None))
        ).all() == []
        with pytest.raises(ConflictError) as finished:
            drain.request_cancel(session, job_id)
        assert finished.value.code == "job_finished"


def test_second_drain_of_a_node_is_refused_while_the_first_runs(cluster):
    deploy_through_service(cluster)
    first = submit_drain(DRAINED_NODE)
    with pytest.raises(ConflictError) as conflict:
        submit_drain(DRAINED_NODE)
    assert conflict.value.code == "drain_in_progress"
    assert conflict.value.details["job_id"] == str(first)
    assert drive_drain(cluster, first, advance=True) == "SUCCEEDED"
    second = submit_drain(DRAINED_NODE)  # once the first ended, a new drain is accepted
    assert drive_drain(cluster, second, advance=True) == "SUCCEEDED"
    assert _job(second).result["deployments"] == []


def test_dry_run_reports_impact_without_changing_anything(cluster):
    deployed = deploy_through_service(cluster)
    with get_sessionmaker()() as session:
        impact = drain.plan_impact(session, DRAINED_NODE, drain.DrainOptions())
        session.rollback()
        assert session.get(GpuNode, DRAINED_NODE).unschedulable is False
        assert session.scalars(select(GpuReservation).where(GpuReservation.job_id.is_(None),
                                                            GpuReservation.node_name != DRAINED_NODE)).all() == []
    assert impact["would_succeed"] is True
    by_name = {item["name"]: item for item in impact["deployments"]}
    assert {name: item["replicas_on_node"] for name, item in by_name.items()} == {"llama": 2, "mistral": 1, "qwen": 2}
    assert all(item["capacity_elsewhere"] for item in by_name.values())
    assert by_name["llama"]["deployment_id"] == str(deployed.ids["llama"])
    assert get_clients().core.read_node(DRAINED_NODE).spec.unschedulable in (None, False)


def test_unmanaged_foreign_pod_blocks_the_drain_unless_forced(cluster):
    clients = get_clients()
    clients.core.create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug-shell"},
        "spec": {"nodeName": DRAINED_NODE, "containers": [{"name": "sh", "image": "busybox"}]},
    })
    cluster.advance(10)
    from models.db import session_scope
    from workers import inventory

    with session_scope() as session:
        inventory.sync_inventory(session)
    job_id = submit_drain(DRAINED_NODE)
    assert drive_drain(cluster, job_id, advance=True) == "FAILED"
    job = _job(job_id)
    assert job.error["code"] == "pods_not_evictable"
    assert job.error["details"]["blocked_pods"][0]["name"] == "debug-shell"

    forced = submit_drain(DRAINED_NODE, force=True)
    assert drive_drain(cluster, forced, advance=True) == "SUCCEEDED"
    assert pods_on_node(cluster, "default", DRAINED_NODE) == []


def test_step_messages_never_run_twice_and_are_never_lost(cluster, db_engine):
    from sqlalchemy import text

    deploy_through_service(cluster)
    job_id = submit_drain(DRAINED_NODE)
    first_token = _job(job_id).celery_task_id
    with get_sessionmaker()() as session:
        first = drain.run_step(session, job_id, first_token)
    assert first.countdown is not None
    assert first.next_token != first_token

    # A redelivered copy of the first message: a newer step owns the job, so it waits, without acting,
    # until that step would count as lost (and keeps its own id, so it stays a copy of the old message).
    progress_before = _job(job_id).progress
    with get_sessionmaker()() as session:
        stale = drain.run_step(session, job_id, first_token)
    assert stale.state == "deferred"
    assert stale.next_token == first_token
    assert drain.LOST_STEP_GRACE_SECONDS < stale.countdown <= drain.LOST_STEP_GRACE_SECONDS + first.countdown + 2
    assert _job(job_id).progress == progress_before

    # The row is locked by someone else (a cancel being written): come back shortly, do nothing now.
    with db_engine.connect() as locker:
        locker.execute(text(f"SELECT 1 FROM {Job.__table__.fullname} WHERE id = :id FOR UPDATE"), {"id": job_id})
        with get_sessionmaker()() as session:
            locked = drain.run_step(session, job_id, first.next_token)
        locker.rollback()
    assert (locked.state, locked.next_token) == ("deferred", first.next_token)
    assert locked.countdown <= 2

    # The newer step's message was lost: once it is overdue, the old message adopts the job.
    with get_sessionmaker()() as session:
        job = session.get(Job, job_id)
        job.progress = {**job.progress, "step_due_at": "2000-01-01T00:00:00+00:00"}
        session.commit()
    with get_sessionmaker()() as session:
        adopted = drain.run_step(session, job_id, first_token)
    assert adopted.state not in ("deferred", "skipped")
    assert _job(job_id).progress["step_token"] == adopted.next_token

    with get_sessionmaker()() as session:
        drain.request_cancel(session, job_id)
        session.commit()
    assert drive_drain(cluster, job_id, advance=True, token=adopted.next_token) == "CANCELLED"
    with get_sessionmaker()() as session:
        assert drain.run_step(session, job_id, adopted.next_token).state == "skipped"


def test_a_tenant_change_during_a_drain_is_busy_naming_the_drain(cluster):
    from workers.requests import request_delete

    deployed = deploy_through_service(cluster)
    job_id = submit_drain(DRAINED_NODE)
    refusals = []

    def try_a_delete(step):
        if step == 2:  # the drain holds the deployments it moves once it has planned
            with get_sessionmaker()() as session, pytest.raises(ConflictError) as busy:
                request_delete(session, tenant_id=None, deployment_id=deployed.ids["llama"], requested_by="svc")
            refusals.append(busy.value)

    assert drive_drain(cluster, job_id, advance=True, between_steps=try_a_delete) == "SUCCEEDED"
    [busy] = refusals
    assert busy.code == "deployment_busy"
    assert busy.details == {"job_id": str(job_id), "job_type": "node.drain"}
    assert "drain" in busy.message
