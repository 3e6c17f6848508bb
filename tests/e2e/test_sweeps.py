"""The sweeps end to end: a REAL ``celery beat`` schedules them and a REAL ``celery worker`` runs them.

kubesim runs in this process on a fast real-time clock (60x); beat and the worker are subprocesses
configured only through the environment (DATABASE_URL, KUBECONFIG, PROMETHEUS_URL, short sweep
intervals, and a Celery config module adding a unique Redis key prefix, which also scopes the sweep locks).
A deployment created through the job path becomes RUNNING; the sweep rows show each sweep ran; a model
that starts crash-looping is diagnosed and gets a recorded recovery step, all without the test calling
any sweep itself.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from celery import Celery
from sqlalchemy import select

import settings as settings_module
from kubesim.cluster import SimCluster
from models import Deployment, ScalingEvent, ScalingTrigger, SweepRun
from models.db import get_sessionmaker
from tests.e2e import worker_support
from tests.e2e.worker_support import CeleryProcesses, cluster_for_this_process
from workers.inventory import run_inventory_sweep
from workers.queries import ensure_tenant
from workers.queues import TASK_FOR_JOB_TYPE, Queues
from workers.requests import CreateDeploymentSpec, request_create

WAIT_SECONDS = 120
wait_for = functools.partial(worker_support.wait_for, timeout=WAIT_SECONDS, interval=0.3)


@dataclass
class Stack:
    cluster: SimCluster
    sender: Celery


@pytest.fixture
def stack(clean_tables, database_url, tmp_path, monkeypatch) -> Iterator[Stack]:
    with cluster_for_this_process(tmp_path, monkeypatch, nodes="2xnvidia-l40s:8", seed=3, speed=60) as (
        cluster, kubeconfig
    ):
        celery = CeleryProcesses("e2e-sweeps", tmp_path, settings_module.get_settings().redis_url,
                                 {"visibility_timeout": 30})
        celery.configure(
            database_url, kubeconfig,
            PROMETHEUS_URL=f"{cluster.url}/prometheus",
            HEALTH_MONITOR_INTERVAL_SECONDS="1",
            RESOURCE_TRACKER_INTERVAL_SECONDS="2",
            AUTOSCALER_INTERVAL_SECONDS="2",
            STATUS_POLL_INTERVAL_SECONDS="1",
        )
        with get_sessionmaker().begin() as session:
            ensure_tenant(session, "acme")
        run_inventory_sweep()
        try:
            celery.start_worker()
            celery.start("beat", "beat", "--schedule", str(tmp_path / "beat-schedule"), "--loglevel", "INFO")
            yield Stack(cluster, celery.sender)
        finally:
            celery.close()


def sweep_run(name: str) -> SweepRun | None:
    with get_sessionmaker()() as session:
        return session.get(SweepRun, name)


def deployment(deployment_id) -> Deployment:
    with get_sessionmaker()() as session:
        return session.get(Deployment, deployment_id)


def recovery_events(deployment_id) -> list[ScalingEvent]:
    with get_sessionmaker()() as session:
        return list(session.scalars(select(ScalingEvent).where(
            ScalingEvent.deployment_id == deployment_id, ScalingEvent.trigger == ScalingTrigger.RECOVERY
        )))


def test_beat_and_worker_run_the_sweeps(stack):
    with get_sessionmaker().begin() as session:
        submitted = request_create(
            session, tenant_id="acme", requested_by="e2e",
            spec=CreateDeploymentSpec(model_id="meta-llama/Llama-3.1-8B-Instruct", replicas=1, gpus_per_replica=1,
                                      name="sweepy", autoscaling_enabled=True, min_replicas=1, max_replicas=2),
        )
        job, deployment_id = submitted.job, submitted.deployment.id
    stack.sender.send_task(TASK_FOR_JOB_TYPE[job.type], args=[str(job.id)], task_id=job.celery_task_id,
                           queue=Queues.JOBS)
    wait_for(lambda: deployment(deployment_id).status == "RUNNING", "the deployment to be RUNNING")

    def swept(name: str) -> bool:
        run = sweep_run(name)
        if run is None or run.last_status != "succeeded":
            return False
        return run.last_summary["items"].get("deployments", 0) >= 1

    wait_for(lambda: swept("health_monitor"), "a health-monitor sweep that saw the deployment")
    wait_for(lambda: swept("autoscaler"), "an autoscaler sweep that saw the deployment")
    wait_for(lambda: (sweep_run("resource_tracker") or SweepRun(last_status=None)).last_status == "succeeded",
             "a resource-tracker sweep")
    assert sweep_run("resource_tracker").last_summary["metrics_sources"]["prometheus"] == "ok"

    # The model starts crash-looping: the monitor (scheduled by beat) diagnoses it and takes a recovery step.
    stack.cluster.sim.add_pod_behavior(
        {"selector": {"labels": {"orchestration.ai/deployment-id": str(deployment_id)}}, "failure": "CrashLoopBackOff"}
    )
    for pod in stack.cluster.store.list("pods", "model-serving")[0]:
        stack.cluster.store.delete("pods", "model-serving", pod["metadata"]["name"], grace_period_seconds=0)
    wait_for(lambda: bool(recovery_events(deployment_id)), "a recovery step recorded by the health monitor")
    [event] = recovery_events(deployment_id)[:1]
    assert event.inputs["diagnosis"]["reason"] == "crash_loop"
    assert event.inputs["step"] == "delete_pods"
    assert deployment(deployment_id).status_reason == "crash_loop"
