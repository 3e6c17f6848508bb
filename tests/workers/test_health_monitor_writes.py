"""The health monitor writes only what changed, and readers still see when it last observed each deployment."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, text, update

from models import Deployment, DeploymentStatus, PodAllocation
from models.db import get_engine
from tests.workers.health_monitor_support import sweep
from tests.workers.sweeps_support import (  # noqa: F401 - fixtures register by name
    StatementCounter,
    create_deployment,
    deployment_row,
    ensure_tenant,
    redis_client_fixture,
    session_fixture,
    sim_fixture,
    sim_now,
    sync_inventory,
)
from workers.health_monitor import PodViewMemo
from workers.k8s import get_clients
from workers.queries import deployment_status, get_deployment, list_deployments
from workers.requests import CreateDeploymentSpec, request_create


def pod_rows(session, deployment_id):
    session.expire_all()
    rows = session.scalars(select(PodAllocation).where(PodAllocation.deployment_id == deployment_id))
    return {row.pod_name: row for row in rows}


def writes_of(session, sim, redis_client):
    """One sweep; the INSERT/UPDATE statements it sent, but for the bookkeeping of the run itself."""
    with StatementCounter(get_engine()) as counter:
        assert sweep(session, sim, redis_client).status == "succeeded"
    return [
        " ".join(statement.split())
        for statement in counter.statements
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE")) and "sweep_runs" not in statement
    ]


def observed_by_readers(session, deployment_id):
    """``last_observed_at`` as the status endpoint, the deployment itself and the list show it (all agree)."""
    session.expire_all()
    seen = {
        deployment_status(session, None, deployment_id)["last_observed_at"],
        get_deployment(session, None, deployment_id).last_observed_at,
        next(d for d in list_deployments(session, None)[0] if d.id == deployment_id).last_observed_at,
    }
    assert len(seen) == 1, seen
    return seen.pop()


def test_a_steady_deployment_is_not_rewritten_yet_shows_the_latest_observation(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, replicas=2)
    sim.advance(400)
    sweep(session, sim, redis_client)
    written = deployment_row(session, deployment_id)
    assert written.status == "RUNNING"
    assert written.last_observed_at == datetime.fromtimestamp(sim_now(sim), UTC)
    pods_before = {name: row.observed_at for name, row in pod_rows(session, deployment_id).items()}

    sim.advance(30)
    assert writes_of(session, sim, redis_client) == []
    row = deployment_row(session, deployment_id)
    assert (row.last_observed_at, row.updated_at) == (written.last_observed_at, written.updated_at)
    assert {name: row.observed_at for name, row in pod_rows(session, deployment_id).items()} == pods_before
    assert observed_by_readers(session, deployment_id) == datetime.fromtimestamp(sim_now(sim), UTC)


def test_a_skipped_sweep_vouches_for_nothing(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, replicas=1)
    sim.advance(400)
    sweep(session, sim, redis_client)
    sim.advance(30)
    sweep(session, sim, redis_client)
    observed = datetime.fromtimestamp(sim_now(sim), UTC)
    sim.faults.add({"resource": "pods", "verb": "list", "action": {"status": 503}})
    sim.advance(30)
    assert sweep(session, sim, redis_client).status == "skipped"
    assert observed_by_readers(session, deployment_id) == observed


def test_a_deployment_changed_since_the_sweep_shows_its_own_time(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, replicas=1)
    sim.advance(400)
    sweep(session, sim, redis_client)
    own_time = deployment_row(session, deployment_id).last_observed_at
    sim.advance(30)
    sweep(session, sim, redis_client)
    assert observed_by_readers(session, deployment_id) > own_time
    # A change the sweep did not see (here: a delete requested since): its observation no longer covers it.
    row = deployment_row(session, deployment_id)
    row.status = DeploymentStatus.DELETING
    session.commit()
    assert observed_by_readers(session, deployment_id) == own_time


def test_a_change_begun_before_the_sweep_but_written_after_it_is_not_vouched_for(session, sim, redis_client):
    """The writer's transaction starts before the sweep, its UPDATE runs after the sweep read: the sweep never
    saw that state, so its observation must not cover it (``updated_at`` is the UPDATE's own time)."""
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, replicas=1)
    sim.advance(400)
    sweep(session, sim, redis_client)
    own_time = deployment_row(session, deployment_id).last_observed_at
    with get_engine().connect() as writer:
        writer.execute(text("SELECT 1"))  # the writer's transaction, and its now(), begin here
        sim.advance(30)
        sweep(session, sim, redis_client)
        assert observed_by_readers(session, deployment_id) > own_time
        writer.execute(
            update(Deployment).where(Deployment.id == deployment_id).values(status_message="a change in flight")
        )
        writer.commit()
    assert observed_by_readers(session, deployment_id) == own_time


def test_a_changed_pod_is_written_and_a_vanished_one_closed(session, sim, redis_client):
    sync_inventory(session)
    deployment_id = create_deployment(session, sim, replicas=2)
    sweep(session, sim, redis_client)
    assert {row.ready for row in pod_rows(session, deployment_id).values()} == {False}
    sim.advance(400)
    sweep(session, sim, redis_client)
    rows = pod_rows(session, deployment_id)
    assert sorted((row.phase, row.ready, row.terminated_at) for row in rows.values()) == [("Running", True, None)] * 2

    gone = sorted(rows)[0]
    get_clients().core.delete_namespaced_pod(gone, "model-serving", grace_period_seconds=0)
    sim.advance(5)
    sweep(session, sim, redis_client)
    rows = pod_rows(session, deployment_id)
    assert rows[gone].terminated_at == datetime.fromtimestamp(sim_now(sim), UTC)
    assert rows[gone].ready is False
    replacements = [row for name, row in rows.items() if name != gone and row.terminated_at is None]
    assert len(replacements) == 2  # the survivor and the ReplicaSet's new pod, written when first listed


def test_a_deployment_the_sweep_does_not_read_is_not_vouched_for(session, sim, redis_client):
    sync_inventory(session)
    ensure_tenant(session)
    submitted = request_create(
        session, tenant_id="acme", requested_by="tests",
        spec=CreateDeploymentSpec(model_id="meta-llama/Llama-3.1-8B-Instruct", replicas=1, gpu_type="nvidia-l40s"),
    )
    session.commit()
    sim.advance(30)
    sweep(session, sim, redis_client)
    assert deployment_row(session, submitted.deployment.id).status == "PENDING"  # its create job has not run
    assert observed_by_readers(session, submitted.deployment.id) is None


def listed_pod(version, phase="Running"):
    return {"metadata": {"uid": "u-1", "name": "m-1", "namespace": "ms", "resourceVersion": version},
            "status": {"phase": phase}}


def test_a_pod_view_is_reused_only_for_the_same_pod_version_on_the_same_cluster():
    memo, cluster, other_cluster = PodViewMemo(), object(), object()
    [first] = memo.views(cluster, [listed_pod("7")])
    [again] = memo.views(cluster, [listed_pod("7")])
    assert again is first
    [changed] = memo.views(cluster, [listed_pod("8", phase="Failed")])
    assert changed.phase == "Failed"
    [elsewhere] = memo.views(other_cluster, [listed_pod("8", phase="Pending")])
    assert elsewhere.phase == "Pending"
