"""Cordon and uncordon jobs against kubesim: the cluster, the GpuNode row, the job record, retries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.drain import point_service_at
from kubesim.cluster import SimCluster
from models import GpuNode, Job, JobState, JobType
from models.db import get_sessionmaker, session_scope
from settings import get_settings
from workers import inventory, node_ops
from workers.cluster_errors import TransientClusterError
from workers.domain import ConflictError, NotFoundError
from workers.k8s import get_clients, reset_client


@pytest.fixture
def cluster(tmp_path, database_url, clean_tables, monkeypatch) -> Iterator[SimCluster]:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("K8S_REQUEST_TIMEOUT_SECONDS", "2")
    with SimCluster(nodes="2xnvidia-l40s:8", seed=2) as sim_cluster:
        point_service_at(sim_cluster, tmp_path / "kubeconfig")
        with session_scope() as session:
            inventory.sync_inventory(session)
        yield sim_cluster
    reset_client()
    get_settings.cache_clear()


def _submit(job_type: JobType, node: str = "l40s-0", **params) -> Job:
    with session_scope() as session:
        return node_ops.request_node_job(session, node_name=node, job_type=job_type, params=params,
                                         requested_by="ops-carol").job


def _run(job_id) -> str:
    with get_sessionmaker()() as session:
        return node_ops.run_node_job(session, job_id)


def _node_row(name: str = "l40s-0") -> GpuNode:
    with get_sessionmaker()() as session:
        return session.get(GpuNode, name)


def test_cordon_then_uncordon(cluster):
    cordon = _submit(JobType.NODE_CORDON, reason="replace a fan")
    assert _run(cordon.id) == "SUCCEEDED"

    assert get_clients().core.read_node("l40s-0").spec.unschedulable is True
    row = _node_row()
    assert (row.unschedulable, row.cordoned_by, row.cordon_reason) == (True, "ops-carol", "replace a fan")
    with get_sessionmaker()() as session:
        job = session.get(Job, cordon.id)
        assert job.state == JobState.SUCCEEDED
        assert job.result == {"node": "l40s-0", "schedulable": False, "reason": "replace a fan"}
        assert job.attempts == 1

    uncordon = _submit(JobType.NODE_UNCORDON)
    assert _run(uncordon.id) == "SUCCEEDED"
    assert not get_clients().core.read_node("l40s-0").spec.unschedulable
    row = _node_row()
    assert (row.unschedulable, row.cordoned_by, row.cordon_reason) == (False, None, None)
    assert _run(uncordon.id) == "skipped"  # a redelivered finished job does nothing


def test_transient_error_propagates_for_the_task_to_retry(cluster):
    cluster.faults.add({"resource": "nodes", "verb": "patch", "count": 1, "action": {"status": 503}})
    job = _submit(JobType.NODE_CORDON)
    with pytest.raises(TransientClusterError):
        _run(job.id)
    assert _node_row().unschedulable is False
    assert _run(job.id) == "SUCCEEDED"  # the retry
    with get_sessionmaker()() as session:
        assert session.get(Job, job.id).attempts == 2


def test_cordon_task_retries_then_succeeds(cluster):
    from tasks.nodes import cordon_node

    cluster.faults.add({"resource": "nodes", "verb": "patch", "count": 2, "action": {"status": 500}})
    job = _submit(JobType.NODE_CORDON)
    cordon_node.apply(args=[str(job.id)], task_id=job.celery_task_id)
    with get_sessionmaker()() as session:
        stored = session.get(Job, job.id)
        assert stored.state == JobState.SUCCEEDED
        assert stored.attempts == 3
    assert get_clients().core.read_node("l40s-0").spec.unschedulable is True


def test_node_gone_from_cluster_fails_with_the_reason(cluster):
    job = _submit(JobType.NODE_CORDON, node="l40s-1")
    cluster.sim.remove_node("l40s-1")
    assert _run(job.id) == "FAILED"
    with get_sessionmaker()() as session:
        stored = session.get(Job, job.id)
        assert stored.error["code"] == "node_not_found"
        assert stored.error["retryable"] is False


def test_submission_rules(cluster):
    with pytest.raises(NotFoundError):
        _submit(JobType.NODE_CORDON, node="h100-0")
    from workers import drain

    with session_scope() as session:
        drain.request_drain(session, node_name="l40s-0", options=drain.DrainOptions(), requested_by="ops")
    for job_type in (JobType.NODE_UNCORDON, JobType.NODE_CORDON):  # a cordon would replace the drain's reason
        with pytest.raises(ConflictError) as conflict:
            _submit(job_type)
        assert conflict.value.code == "drain_in_progress"
