"""End to end with a REAL Celery worker process: Postgres (test database) -> Redis -> worker -> kubesim.

The worker runs ``celery -A workers.celery_app worker`` exactly as deployed, configured only through the
environment: DATABASE_URL (this session's database), KUBECONFIG (a SimCluster running in this process on a
fast real-time clock), and CELERY_CONFIG_MODULE naming a module that adds a unique Redis key prefix, so
parallel test runs never share queues. Jobs are sent the way the API sends them, after commit.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator

import pytest

import settings as settings_module
from kubesim.cluster import SimCluster
from models import Deployment, DeploymentStatus, Job, JobState
from models.db import get_sessionmaker
from tests.e2e import worker_support
from tests.e2e.worker_support import CeleryProcesses, cluster_for_this_process
from workers import k8s
from workers.inventory import run_inventory_sweep
from workers.manifests import DEPLOYMENT_ID_LABEL
from workers.queries import ensure_tenant
from workers.queues import TASK_FOR_JOB_TYPE, Queues
from workers.requests import (
    CreateDeploymentSpec,
    request_create,
    request_delete,
    request_restart,
    request_scale,
)

WAIT_SECONDS = 90
wait_for = functools.partial(worker_support.wait_for, timeout=WAIT_SECONDS)


class Pipeline:
    def __init__(self, cluster: SimCluster, celery: CeleryProcesses) -> None:
        self.cluster = cluster
        self.celery = celery
        self.start_worker = celery.start_worker
        self.kill = celery.kill

    def enqueue(self, job: Job) -> None:
        self.celery.sender.send_task(
            TASK_FOR_JOB_TYPE[job.type], args=[str(job.id)], task_id=job.celery_task_id, queue=Queues.JOBS
        )

    def submit(self, fn: Callable, **kwargs) -> tuple[uuid.UUID, uuid.UUID]:
        with get_sessionmaker().begin() as session:
            submitted = fn(session, **kwargs)
            job = submitted.job
        self.enqueue(job)  # commit, then enqueue
        return job.id, submitted.deployment.id


def job_state(job_id) -> JobState:
    with get_sessionmaker()() as session:
        return session.get(Job, job_id).state


def deployment_row(deployment_id) -> Deployment:
    with get_sessionmaker()() as session:
        return session.get(Deployment, deployment_id)


@pytest.fixture
def pipeline(clean_tables, database_url, tmp_path, monkeypatch) -> Iterator[Pipeline]:
    with cluster_for_this_process(tmp_path, monkeypatch, nodes="2xnvidia-l40s:8", seed=5, speed=60) as (
        cluster, kubeconfig
    ):
        # Short visibility timeout: a SIGKILLed worker's unacked task comes back within seconds.
        celery = CeleryProcesses(
            "e2e", tmp_path, settings_module.get_settings().redis_url,
            {"visibility_timeout": 8, "unacked_restore_interval": 1, "unacked_restore_throttle": 1},
        )
        celery.configure(database_url, kubeconfig, STATUS_POLL_INTERVAL_SECONDS="1", K8S_REQUEST_TIMEOUT_SECONDS="5")
        with get_sessionmaker().begin() as session:
            ensure_tenant(session, "acme")
        run_inventory_sweep()
        try:
            yield Pipeline(cluster, celery)
        finally:
            celery.close()


def create_spec(replicas=2, gpus=2, name="llama") -> CreateDeploymentSpec:
    return CreateDeploymentSpec(
        model_id="meta-llama/Llama-3.1-8B-Instruct", replicas=replicas, gpus_per_replica=gpus, name=name
    )


def k8s_deployments() -> list:
    return k8s.get_clients().apps.list_namespaced_deployment("model-serving").items


def test_create_running_restart_delete(pipeline):
    pipeline.start_worker()
    create_job, deployment_id = pipeline.submit(
        request_create, tenant_id="acme", spec=create_spec(), requested_by="e2e"
    )
    wait_for(lambda: job_state(create_job) == JobState.SUCCEEDED, "create job")
    wait_for(lambda: deployment_row(deployment_id).status == DeploymentStatus.RUNNING, "RUNNING")
    assert deployment_row(deployment_id).replicas_ready == 2

    restart_job, _ = pipeline.submit(request_restart, tenant_id="acme", deployment_id=deployment_id, requested_by="e2e")
    ready_samples = []

    def restarted() -> bool:
        ready_samples.append(k8s_deployments()[0].status.ready_replicas or 0)
        return job_state(restart_job) == JobState.SUCCEEDED and (
            deployment_row(deployment_id).status == DeploymentStatus.RUNNING
        )

    wait_for(restarted, "restart to finish")
    assert min(ready_samples) >= 1, ready_samples
    annotations = k8s_deployments()[0].spec.template.metadata.annotations
    assert annotations["orchestration.ai/restartedAt"] == str(restart_job)

    delete_job, _ = pipeline.submit(request_delete, tenant_id="acme", deployment_id=deployment_id, requested_by="e2e")
    wait_for(lambda: job_state(delete_job) == JobState.SUCCEEDED, "delete job")
    assert deployment_row(deployment_id).status == DeploymentStatus.DELETED
    assert k8s_deployments() == []


def test_scaled_to_zero_is_stopped_and_runs_again_when_scaled_up(pipeline):
    pipeline.start_worker()
    _, deployment_id = pipeline.submit(
        request_create, tenant_id="acme", spec=create_spec(replicas=1, name="idle"), requested_by="e2e"
    )
    wait_for(lambda: deployment_row(deployment_id).status == DeploymentStatus.RUNNING, "RUNNING")

    def scale(replicas: int) -> uuid.UUID:
        job_id, _ = pipeline.submit(
            request_scale, tenant_id="acme", deployment_id=deployment_id, replicas=replicas, reason="e2e",
            requested_by="e2e",
        )
        return job_id

    stop_job = scale(0)
    wait_for(lambda: deployment_row(deployment_id).status == DeploymentStatus.STOPPED, "STOPPED")
    assert job_state(stop_job) == JobState.SUCCEEDED
    assert deployment_row(deployment_id).replicas_ready == 0
    pods = pipeline.cluster.sim.store.pods_with_labels("model-serving", {DEPLOYMENT_ID_LABEL: str(deployment_id)})
    assert [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")] == []

    scale(1)
    wait_for(lambda: deployment_row(deployment_id).status == DeploymentStatus.RUNNING, "RUNNING again")
    assert deployment_row(deployment_id).replicas_ready == 1


def test_worker_killed_mid_create_converges(pipeline):
    # Every Deployment create takes 4 s on the server, so the task is certainly in flight when killed.
    pipeline.cluster.faults.add({"resource": "deployments", "verb": "create", "count": 1, "action": {"latency": 4}})
    first = pipeline.start_worker()
    create_job, deployment_id = pipeline.submit(
        request_create, tenant_id="acme", spec=create_spec(replicas=1), requested_by="e2e"
    )
    wait_for(lambda: job_state(create_job) == JobState.RUNNING, "the create to start")
    pipeline.kill(first)
    assert job_state(create_job) == JobState.RUNNING

    pipeline.start_worker()
    wait_for(lambda: job_state(create_job) == JobState.SUCCEEDED, "the redelivered create to finish")
    with get_sessionmaker()() as session:
        assert session.get(Job, create_job).attempts >= 2
    assert len(k8s_deployments()) == 1
    wait_for(lambda: deployment_row(deployment_id).status == DeploymentStatus.RUNNING, "RUNNING")
