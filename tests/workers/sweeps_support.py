"""Shared fixtures and helpers for the sweep tests: a kubesim cluster wired into settings, committed DB
sessions, a private Redis key prefix, the real create path, and counters for cluster calls and SQL.

Test modules import the ``*_fixture`` functions; pytest registers them under their short names
(``sim``, ``session``, ``redis_client``), so the imports do not shadow the test arguments.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
import redis
from sqlalchemy import Connection, Engine, event, select
from sqlalchemy.orm import Session

import settings as settings_module
from kubesim.cluster import SimCluster
from models import Deployment, Job, Tenant
from models.db import get_sessionmaker
from workers import deployments, inventory, job_runner
from workers.k8s import get_clients, reset_client
from workers.requests import CreateDeploymentSpec, request_create

NAMESPACE = "model-serving"
DEFAULT_NODES = "2xnvidia-l40s:8"


@contextmanager
def sim_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nodes: str = DEFAULT_NODES, seed: int = 11):
    """A started SimCluster whose kubeconfig and Prometheus URL the service's settings point at."""
    cluster = SimCluster(nodes=nodes, seed=seed, virtual_clock=True)
    cluster.start()
    try:
        kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.setenv("PROMETHEUS_URL", f"{cluster.url}/prometheus")
        monkeypatch.setenv("K8S_NAMESPACE", NAMESPACE)
        monkeypatch.delenv("K8S_CONTEXT", raising=False)
        settings_module.get_settings.cache_clear()
        reset_client()
        yield cluster
    finally:
        reset_client()
        cluster.stop()
        settings_module.get_settings.cache_clear()


@pytest.fixture(name="sim")
def sim_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[SimCluster]:
    # database_url first: its fixture exports DATABASE_URL before the settings cache is rebuilt here.
    with sim_environment(tmp_path, monkeypatch) as cluster:
        yield cluster


@pytest.fixture(name="session")
def session_fixture(clean_tables: Engine) -> Iterator[Session]:
    """A session on the test database whose commits are real (the job functions use their own sessions)."""
    db = get_sessionmaker()()
    try:
        yield db
    finally:
        db.rollback()
        db.close()


@pytest.fixture(name="redis_client")
def redis_client_fixture() -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"test-sweeps-{uuid.uuid4().hex[:10]}:"
    try:
        yield client, prefix
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


def sync_inventory(session: Session) -> None:
    inventory.sync_inventory(session, get_clients())
    session.commit()


def run_job(job_id: uuid.UUID, execute: Callable[[str], Any]) -> Any:
    """What a job task does, without Celery: the job runner itself (claim, execute, SUCCEEDED, which frees the
    deployment); a failure raises here instead of being retried, so a test sees it at once."""
    task = SimpleNamespace(request=SimpleNamespace(retries=0), max_retries=0)
    outcome = job_runner.run_job(task, str(job_id), execute)
    if "failed" in outcome:
        raise AssertionError(f"job {job_id} failed: {outcome['failed']}")
    return outcome


def ensure_tenant(session: Session, tenant_id: str = "acme", quota: int | None = None) -> None:
    if session.get(Tenant, tenant_id) is None:
        session.add(Tenant(id=tenant_id, name=tenant_id, gpu_quota=quota))
        session.commit()


def create_deployment(
    session: Session,
    cluster: SimCluster,
    *,
    replicas: int = 1,
    gpus: int = 1,
    failure: str | None = None,
    tenant_id: str = "acme",
    model_id: str = "meta-llama/Llama-3.1-8B-Instruct",
    name: str | None = None,
    **spec: Any,
) -> uuid.UUID:
    """The real create path (request -> commit -> execute), optionally with a kubesim pod failure mode."""
    ensure_tenant(session, tenant_id)
    submitted = request_create(
        session,
        tenant_id=tenant_id,
        spec=CreateDeploymentSpec(
            model_id=model_id, replicas=replicas, gpus_per_replica=gpus, name=name, gpu_type="nvidia-l40s", **spec
        ),
        requested_by="tests",
    )
    session.commit()
    deployment_id = submitted.deployment.id
    if failure:
        cluster.sim.add_pod_behavior(
            {"selector": {"labels": {"orchestration.ai/deployment-id": str(deployment_id)}}, "failure": failure}
        )
    run_job(submitted.job.id, deployments.execute_create)
    cluster.settle()
    return deployment_id


def deployment_row(session: Session, deployment_id: uuid.UUID) -> Deployment:
    session.expire_all()
    return session.execute(select(Deployment).where(Deployment.id == deployment_id)).scalar_one()


def jobs_for(session: Session, deployment_id: uuid.UUID) -> list[Job]:
    session.expire_all()
    return list(session.scalars(select(Job).where(Job.target_id == str(deployment_id)).order_by(Job.created_at)))


Result = TypeVar("Result")


def run_at_once(run: Callable[[Session], Result], count: int = 2) -> list[Result]:
    """``run`` in ``count`` threads, each with its own session, released together by a barrier."""
    barrier = threading.Barrier(count)
    results: list[Result] = []

    def one() -> None:
        db = get_sessionmaker()()
        try:
            barrier.wait()
            results.append(run(db))
        finally:
            db.close()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def sim_now(cluster: SimCluster) -> float:
    return cluster.sim.clock.now()


def k8s_calls(cluster: SimCluster) -> list[Any]:
    """Requests to the Kubernetes API proper (not the Prometheus endpoint nor the admin API)."""
    return [
        entry
        for entry in cluster.server.request_log.entries()
        if not entry.path.startswith(("/prometheus", "/_sim"))
    ]


class StatementCounter:
    """Counts SQL statements sent on an engine, or on one connection (executemany counts once, as one round
    trip)."""

    def __init__(self, engine: Engine | Connection) -> None:
        self.engine = engine
        self.statements: list[str] = []

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.statements.append(statement)

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    @property
    def count(self) -> int:
        return len(self.statements)
