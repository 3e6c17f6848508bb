"""Drains end to end: admin API -> Postgres -> Redis -> a REAL Celery worker process -> kubesim.

kubesim runs in this process on a ScaledClock (60 simulated seconds per real second), so a 60 s model
load takes about a second; the worker reaches it only through the kubeconfig. The API is driven with the
Flask test client and an admin token; jobs go through the real broker under a key prefix unique to this
test, so parallel runs never share queues. While a drain runs, every change to the cluster's pods is
checked (a store listener, not a polling thread that could miss a short dip) and the minimum Ready
replicas per deployment recorded.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

import settings as settings_module
from bench.drain import (
    DRAINED_NODE,
    SCENARIO,
    ReadySampler,
    deploy_through_service,
    other_nodes,
    pods_on_node,
    point_service_at,
    set_cordon,
)
from kubesim.cluster import SimCluster
from models import Job, JobState
from models.db import get_sessionmaker, session_scope
from tests.e2e.worker_support import CeleryProcesses
from web.app import create_app
from web.tokens import mint_token
from workers import inventory, k8s

WAIT_SECONDS = 120
JWT_SECRET = "drain-e2e-secret-of-at-least-32-bytes!"
NODES_API = "/admin/v1/infrastructure/nodes"


class Stack:
    def __init__(self, cluster: SimCluster, celery: CeleryProcesses, client, headers: dict[str, str],
                 namespace: str) -> None:
        self.cluster = cluster
        self.celery = celery
        self.client = client
        self.headers = headers
        self.namespace = namespace
        self.start_worker = celery.start_worker

    def kill_worker(self) -> None:
        """SIGKILL the newest worker and its pool children: no warm shutdown, no ack, no requeue."""
        self.celery.kill(self.celery.processes[-1])

    def drain(self, node: str = DRAINED_NODE, **body):
        return self.client.post(f"{NODES_API}/{node}/drain", json=body, headers=self.headers)

    def job(self, job_id: str) -> dict:
        response = self.client.get(f"/admin/v1/jobs/{job_id}", headers=self.headers)
        assert response.status_code == 200
        return response.get_json()

    def wait_job(self, job_id: str, states=("SUCCEEDED", "FAILED", "CANCELLED"),
                 on_poll: Callable[[dict], None] | None = None, timeout: float = WAIT_SECONDS) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if on_poll is not None:
                on_poll(job)
            if job["state"] in states:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not reach {states}: {self.job(job_id)}")


@pytest.fixture
def stack(clean_tables, database_url, tmp_path, monkeypatch) -> Iterator[Stack]:
    import workers.celery_app as celery_app_module

    with SimCluster(nodes="3xnvidia-l40s:8", seed=5, virtual_clock=False, speed=60) as cluster:
        cluster.sim.add_pod_behavior({"selector": {}, "model_load_seconds": 60.0, "image_pull_seconds": 5.0})
        kubeconfig = tmp_path / "kubeconfig"
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        point_service_at(cluster, kubeconfig)
        settings = settings_module.get_settings()
        # Short visibility timeout: a SIGKILLed worker's unacked (waiting) step comes back within seconds.
        celery = CeleryProcesses("drain-e2e", tmp_path, settings.redis_url,
                                 {"visibility_timeout": 10, "unacked_restore_interval": 1})
        monkeypatch.setattr(celery_app_module, "app", celery.sender)  # the API's dispatch publishes through it
        celery.configure(database_url, kubeconfig, K8S_REQUEST_TIMEOUT_SECONDS="5")
        celery.start_worker()
        app = create_app(dataclasses.replace(settings, jwt_secret=JWT_SECRET, jwt_algorithm="HS256"))
        token = mint_token(app.extensions["orchestration_settings"], subject="ops-e2e", scopes=["admin"])
        try:
            celery.wait_for_worker()
            yield Stack(cluster, celery, app.test_client(), {"Authorization": f"Bearer {token}"},
                        settings.k8s_namespace)
        finally:
            celery.close()
            k8s.reset_client()
            settings_module.get_settings.cache_clear()


def test_drain_of_three_deployments_never_drops_below_desired(stack):
    deployed = deploy_through_service(stack.cluster)
    names = [deployed.k8s_names[shape.name] for shape in SCENARIO]
    sampler = ReadySampler(stack.cluster, stack.namespace, names)
    sampler.start()

    accepted = stack.drain(reason="kernel upgrade")
    assert accepted.status_code == 202, accepted.get_json()
    job_id = accepted.get_json()["job_id"]
    second = stack.drain()
    assert second.status_code == 409
    assert second.get_json()["error"]["code"] == "drain_in_progress"
    phases: set[str] = set()
    job = stack.wait_job(job_id, on_poll=lambda job: phases.add(job["progress"].get("phase")))
    minimum = sampler.stop()

    assert job["state"] == "SUCCEEDED", job["error"]
    for shape in SCENARIO:
        assert minimum[deployed.k8s_names[shape.name]] >= shape.replicas, (shape.name, minimum)
    assert {"wait_ready", "done"} <= phases
    assert job["progress"]["pods"] == {"total": 5, "evicted": 5, "remaining": 0}
    assert job["result"]["pods"]["evicted"] == 5
    assert pods_on_node(stack.cluster, stack.namespace, DRAINED_NODE) == []
    node = stack.client.get(f"{NODES_API}/{DRAINED_NODE}", headers=stack.headers).get_json()
    assert node["cordon"]["cordoned"] is True
    events = stack.client.get("/admin/v1/scaling/events?trigger=drain", headers=stack.headers).get_json()["items"]
    assert len(events) == 6  # a surge and a return per deployment
    assert {event["job_id"] for event in events} == {job_id}


def test_drain_without_room_elsewhere_stops_with_nothing_evicted(stack):
    deploy_through_service(stack.cluster)
    before = sorted(pods_on_node(stack.cluster, stack.namespace, DRAINED_NODE))
    set_cordon(stack.cluster, other_nodes(stack.cluster, DRAINED_NODE), True)
    with session_scope() as session:
        inventory.sync_inventory(session)

    dry_run = stack.drain(dry_run=True)
    assert dry_run.status_code == 200
    assert dry_run.get_json()["would_succeed"] is False
    assert not any(item["capacity_elsewhere"] for item in dry_run.get_json()["deployments"])

    job = stack.wait_job(stack.drain().get_json()["job_id"])

    assert job["state"] == "FAILED"
    assert job["error"]["code"] == "no_capacity_elsewhere"
    assert len(job["error"]["details"]["deployments"]) == 3
    assert sorted(pods_on_node(stack.cluster, stack.namespace, DRAINED_NODE)) == before
    assert k8s.get_clients().core.read_node(DRAINED_NODE).spec.unschedulable is True


def test_drain_blocked_by_a_pdb_until_its_timeout(stack):
    # A foreign workload on the node whose budget allows no disruption at all.
    clients = k8s.get_clients()
    labels = {"app": "ledger"}
    clients.apps.create_namespaced_deployment("default", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ledger"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": DRAINED_NODE},
                     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                     "containers": [{"name": "ledger", "image": "ledger:1"}]}}},
    })
    clients.policy.create_namespaced_pod_disruption_budget("default", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "ledger-budget"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}},
    })
    deadline = time.monotonic() + 30
    while not pods_on_node(stack.cluster, "default", DRAINED_NODE) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # let the PDB controller publish its status (observedGeneration)

    blocked_messages: list[str] = []

    def record(job: dict) -> None:
        for item in job["progress"].get("blocked") or []:
            blocked_messages.append(item["message"])

    job = stack.wait_job(stack.drain(timeout_seconds=6).get_json()["job_id"], on_poll=record)

    assert job["state"] == "FAILED"
    assert job["error"]["code"] == "eviction_blocked"
    assert blocked_messages, "the job never showed itself blocked"
    assert "ledger-budget" in blocked_messages[-1]
    assert pods_on_node(stack.cluster, "default", DRAINED_NODE)  # still there


def test_cancelled_drain_withdraws_its_surge(stack):
    deployed = deploy_through_service(stack.cluster)
    before = sorted(pods_on_node(stack.cluster, stack.namespace, DRAINED_NODE))
    # Replacements never become Ready, so the drain is certainly waiting when it is cancelled.
    stack.cluster.sim.add_pod_behavior({"selector": {}, "failure": "NeverReady"})
    job_id = stack.drain().get_json()["job_id"]
    stack.wait_job(job_id, states=("RUNNING",), on_poll=None)
    deadline = time.monotonic() + WAIT_SECONDS
    while stack.job(job_id)["progress"].get("phase") != "wait_ready" and time.monotonic() < deadline:
        time.sleep(0.1)

    cancel = stack.client.delete(f"{NODES_API}/{DRAINED_NODE}/drain", headers=stack.headers)
    assert cancel.status_code == 202
    job = stack.wait_job(job_id)

    assert job["state"] == "CANCELLED"
    assert sorted(job["error"]["details"]["surges_withdrawn"]) == sorted(shape.name for shape in SCENARIO)
    for shape in SCENARIO:
        deployment = k8s.get_clients().apps.read_namespaced_deployment(deployed.k8s_names[shape.name],
                                                                        stack.namespace)
        assert deployment.spec.replicas == shape.replicas
    assert sorted(pods_on_node(stack.cluster, stack.namespace, DRAINED_NODE)) == before
    assert k8s.get_clients().core.read_node(DRAINED_NODE).spec.unschedulable is True
    with get_sessionmaker()() as session:
        assert session.get(Job, uuid.UUID(job_id)).state == JobState.CANCELLED


def test_drain_survives_a_killed_worker(stack):
    deployed = deploy_through_service(stack.cluster)
    names = [deployed.k8s_names[shape.name] for shape in SCENARIO]
    sampler = ReadySampler(stack.cluster, stack.namespace, names)
    sampler.start()
    # Slow replacements: the drain is certainly waiting (its next step held by the worker) when killed.
    stack.cluster.sim.add_pod_behavior({"selector": {}, "model_load_seconds": 300.0, "image_pull_seconds": 5.0})
    job_id = stack.drain().get_json()["job_id"]
    deadline = time.monotonic() + WAIT_SECONDS
    while stack.job(job_id)["progress"].get("phase") != "wait_ready" and time.monotonic() < deadline:
        time.sleep(0.1)
    stack.kill_worker()
    assert stack.job(job_id)["state"] == "RUNNING"

    stack.start_worker()
    # kombu hands an unacked message back only when a consumer next restores expired ones (up to a couple
    # of minutes after the visibility timeout), hence the longer wait.
    job = stack.wait_job(job_id, timeout=300)
    minimum = sampler.stop()

    assert job["state"] == "SUCCEEDED", job["error"]
    for shape in SCENARIO:
        assert minimum[deployed.k8s_names[shape.name]] >= shape.replicas, (shape.name, minimum)
    assert pods_on_node(stack.cluster, stack.namespace, DRAINED_NODE) == []
    events = stack.client.get("/admin/v1/scaling/events?trigger=drain", headers=stack.headers).get_json()["items"]
    assert len(events) == 6  # the resumed drain did not surge twice
