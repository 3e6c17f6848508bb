"""A simulated cluster wired to the service through a kubeconfig, plus the database, for task tests.

Task functions are called directly (``task.apply``: the task body, its retry loop and the job state
machine run in this process, with retry countdowns skipped). Status polls are not scheduled here: the job
tasks' ``schedule_status_poll`` is replaced by a recorder and tests call the observe function themselves
(the schedule and the poller have their own tests, against Redis).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

import settings as settings_module
from kubesim.cluster import SimCluster
from models.db import get_sessionmaker
from workers import k8s
from workers.inventory import run_inventory_sweep
from workers.queries import ensure_tenant


@dataclass
class Harness:
    cluster: SimCluster
    observed: list[str] = field(default_factory=list)

    @property
    def sim(self):
        return self.cluster.sim


@pytest.fixture
def harness(clean_tables, tmp_path, monkeypatch) -> Iterator[Harness]:
    with SimCluster(nodes="2xnvidia-l40s:8", seed=3) as cluster:
        kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.setenv("K8S_REQUEST_TIMEOUT_SECONDS", "2")
        monkeypatch.delenv("K8S_CONTEXT", raising=False)
        settings_module.get_settings.cache_clear()
        k8s.reset_client()
        state = Harness(cluster=cluster)
        import tasks.deployments as deployment_tasks

        monkeypatch.setattr(
            deployment_tasks,
            "schedule_status_poll",
            lambda deployment_id, delay_seconds: state.observed.append(str(deployment_id)),
        )
        with get_sessionmaker().begin() as session:
            ensure_tenant(session, "acme")
        run_inventory_sweep()
        try:
            yield state
        finally:
            k8s.reset_client()
            settings_module.get_settings.cache_clear()
