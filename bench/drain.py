"""Drain benchmark: this service's make-before-break drain vs ``kubectl drain`` on identical kubesim clusters.

Both clusters get the same nodes, the same three vLLM deployments with the same pods on the drained node
and the same PodDisruptionBudgets (maxUnavailable 1), and run on a ScaledClock (``--speed``), so model
loads take seconds. A sampler thread reads each cluster's pods while the drain runs and records, per
deployment, the minimum number of Ready (and not terminating) replicas. Printed side by side: wall time
(real seconds and simulated seconds) and the minimum Ready replicas vs the desired count.

Run:  python -m bench.drain [--speed 50] [--model-load 90]
Needs Postgres (TEST_DATABASE_ADMIN_URL, default the local test server; a throwaway database is created
and dropped) and runs the service's drain steps in-process (the same code a Celery worker runs, without the broker hop).

The scenario helpers here are also used by the drain tests, so the benchmark and the tests exercise
exactly the same cluster shape.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TENANT = "bench"
DRAINED_NODE = "l40s-0"
NODES_SPEC = "3xnvidia-l40s:8"


@dataclass(frozen=True)
class DeploymentShape:
    name: str
    model_id: str
    replicas: int
    gpus_per_replica: int


# 2x2 + 1x2 + 2x1 = 8 GPUs: the drained node is full, and every deployment has pods on it.
SCENARIO: tuple[DeploymentShape, ...] = (
    DeploymentShape("llama", "meta-llama/Llama-3.1-8B-Instruct", 2, 2),
    DeploymentShape("mistral", "mistralai/Mistral-7B-Instruct-v0.3", 1, 2),
    DeploymentShape("qwen", "Qwen/Qwen2.5-1.5B-Instruct", 2, 1),
)


# --------------------------------------------------------------------------- cluster helpers


def _namespace() -> str:
    from settings import get_settings

    return get_settings().k8s_namespace


def point_service_at(cluster: Any, kubeconfig: Path) -> None:
    """Make this process's settings and Kubernetes client talk to ``cluster``."""
    from settings import get_settings
    from workers.k8s import reset_client

    cluster.write_kubeconfig(kubeconfig)
    os.environ["KUBECONFIG"] = str(kubeconfig)
    os.environ.pop("K8S_CONTEXT", None)
    get_settings.cache_clear()
    reset_client()


def set_cordon(cluster: Any, names: list[str], unschedulable: bool) -> None:
    def change(obj: dict) -> None:
        obj.setdefault("spec", {})["unschedulable"] = unschedulable

    for name in names:
        cluster.store.mutate("nodes", None, name, change)
    cluster.settle()


def other_nodes(cluster: Any, keep: str) -> list[str]:
    nodes, _ = cluster.store.list("nodes")
    return sorted(node["metadata"]["name"] for node in nodes if node["metadata"]["name"] != keep)


def ready_pods(cluster: Any, namespace: str) -> dict[str, int]:
    """Ready, not terminating pods per deployment (the ``app.kubernetes.io/instance`` label)."""
    counts: dict[str, int] = {}
    with cluster.store.lock:
        pods, _ = cluster.store.list("pods", namespace)
    for pod in pods:
        metadata = pod["metadata"]
        if metadata.get("deletionTimestamp"):
            continue
        conditions = (pod.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            instance = (metadata.get("labels") or {}).get("app.kubernetes.io/instance", "")
            counts[instance] = counts.get(instance, 0) + 1
    return counts


def pods_on_node(cluster: Any, namespace: str, node: str) -> list[str]:
    with cluster.store.lock:
        pods, _ = cluster.store.list("pods", namespace)
    return [pod["metadata"]["name"] for pod in pods if (pod.get("spec") or {}).get("nodeName") == node]


def wait_for(cluster: Any, predicate: Callable[[], bool], timeout: float) -> bool:
    """Virtual clock: advance in steps. Scaled clock: poll in real time."""
    from kubesim.clock import VirtualClock

    if isinstance(cluster.sim.clock, VirtualClock):
        return cluster.run_until(predicate, timeout=timeout, step=2.0)
    deadline = time.monotonic() + timeout / cluster.sim.clock.speed + 5
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class ReadySampler:
    """Records the minimum Ready replicas per deployment while a drain runs.

    It listens to the simulator's store and recounts after *every* change, so no transient dip between
    two polls can go unseen (a polling thread could miss a replica that is down for a few milliseconds).
    """

    def __init__(self, cluster: Any, namespace: str, names: list[str]) -> None:
        self.cluster, self.namespace, self.names = cluster, namespace, names
        self.minimum: dict[str, int] = {}
        self.samples = 0
        self._active = False
        self._lock = threading.Lock()
        cluster.store.subscribe(self._on_change)

    def _on_change(self, _event: Any) -> None:
        if self._active:
            self.sample()

    def sample(self) -> None:
        counts = ready_pods(self.cluster, self.namespace)
        with self._lock:
            for name in self.names:
                value = counts.get(name, 0)
                self.minimum[name] = min(self.minimum.get(name, value), value)
            self.samples += 1

    def start(self) -> None:
        self.sample()
        self._active = True

    def stop(self) -> dict[str, int]:
        self._active = False
        self.sample()
        with self._lock:
            return dict(self.minimum)


# --------------------------------------------------------------------------- the service side


@dataclass
class Deployed:
    """The scenario's deployments: database ids and Kubernetes names."""

    ids: dict[str, uuid.UUID] = field(default_factory=dict)
    k8s_names: dict[str, str] = field(default_factory=dict)
    desired: dict[str, int] = field(default_factory=dict)


def deploy_through_service(cluster: Any, shapes: tuple[DeploymentShape, ...] = SCENARIO,
                           *, pin_to: str = DRAINED_NODE, tenant: str = TENANT,
                           ready_timeout: float = 900, wait_ready: bool = True) -> Deployed:
    """Create the deployments with the service's own request + create code, all pods on ``pin_to``.

    The other nodes are cordoned while the pods schedule (so they all land on ``pin_to``), then
    uncordoned; the inventory is synced so admission sees the cluster. Without ``wait_ready`` (pods that will
    never be Ready) it waits for every pod to be bound to ``pin_to`` instead.
    """
    from models.db import session_scope
    from workers import deployments, inventory, queries, requests
    from workers.job_lock import claimed_job

    others = other_nodes(cluster, pin_to)
    with session_scope() as session:
        inventory.sync_inventory(session)
        queries.ensure_tenant(session, tenant)
    set_cordon(cluster, others, True)
    deployed = Deployed()
    for shape in shapes:
        with session_scope() as session:
            submitted = requests.request_create(
                session,
                tenant_id=tenant,
                spec=requests.CreateDeploymentSpec(
                    model_id=shape.model_id, replicas=shape.replicas, gpus_per_replica=shape.gpus_per_replica,
                    name=shape.name, gpu_type="nvidia-l40s", max_model_len=None, dtype=None, vllm_args=[],
                    autoscaling_enabled=False, min_replicas=None, max_replicas=None, target_gpu_utilization=None,
                    autoscaling_targets={},
                ),
                requested_by="bench",
            )
            job_id = submitted.job.id
            deployed.ids[shape.name] = submitted.deployment.id
            deployed.k8s_names[shape.name] = submitted.deployment.k8s_name
            deployed.desired[shape.name] = shape.replicas
        with claimed_job(job_id) as job:
            outcome = deployments.execute_create(job)
            job.succeed(outcome.result, change=outcome.change)
    namespace = _namespace()
    everything_ready = lambda: all(  # noqa: E731 - a one-line predicate
        ready_pods(cluster, namespace).get(deployed.k8s_names[shape.name], 0) >= shape.replicas for shape in shapes
    )
    everything_bound = lambda: len(pods_on_node(cluster, namespace, pin_to)) >= sum(  # noqa: E731
        shape.replicas for shape in shapes
    )
    if not wait_for(cluster, everything_ready if wait_ready else everything_bound, ready_timeout):
        raise RuntimeError(f"scenario deployments did not become Ready: {ready_pods(cluster, namespace)}")
    set_cordon(cluster, others, False)
    with session_scope() as session:
        inventory.sync_inventory(session)
    return deployed


def submit_drain(node: str, **options: Any) -> uuid.UUID:
    from models.db import session_scope
    from workers import drain

    with session_scope() as session:
        submitted = drain.request_drain(
            session, node_name=node, options=drain.DrainOptions(**options), requested_by="bench-admin"
        )
        return submitted.job.id


def drive_drain(cluster: Any, job_id: uuid.UUID, *, advance: bool, max_steps: int = 5000,
                between_steps: Callable[[int], None] | None = None, token: str | None = None) -> str:
    """Run the drain's steps in this process, as the worker would; returns the final job state.

    With a virtual clock, the countdown a step asks for is spent by advancing the simulation; with a
    scaled clock it is slept (divided by the speed, since the cluster's seconds run faster).
    """
    from models import Job
    from models.db import get_sessionmaker
    from workers import drain

    if token is None:
        with get_sessionmaker()() as session:
            token = session.get(Job, job_id).celery_task_id
    for step in range(max_steps):
        if between_steps is not None:
            between_steps(step)
        with get_sessionmaker()() as session:
            outcome = drain.run_step(session, job_id, token)
        if outcome.countdown is None:
            return outcome.state
        token = outcome.next_token
        if advance:
            cluster.advance(max(outcome.countdown, 0.5))
        else:
            time.sleep(min(outcome.countdown / cluster.sim.clock.speed, 0.5))
    raise RuntimeError(f"drain {job_id} did not finish in {max_steps} steps")


# --------------------------------------------------------------------------- the kubectl side


def mirror_deployments(source: Any, target: Any, namespace: str) -> None:
    """Copy the Deployments and PDBs of ``source`` into ``target`` (same manifests, same pods per node)."""
    from kubesim.store import clone

    with source.store.lock:
        objects = {plural: source.store.list(plural, namespace)[0] for plural in ("deployments",
                                                                                  "poddisruptionbudgets")}
    if target.store.try_get("namespaces", None, namespace) is None:
        target.store.create("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": namespace}})
    for plural, items in objects.items():
        for item in items:
            copy = clone(item)
            copy["metadata"] = {key: value for key, value in copy["metadata"].items()
                                if key in ("name", "namespace", "labels", "annotations")}
            copy.pop("status", None)
            copy["kind"] = "Deployment" if plural == "deployments" else "PodDisruptionBudget"
            copy["apiVersion"] = "apps/v1" if plural == "deployments" else "policy/v1"
            target.store.create(plural, copy)
    target.settle()


def kubectl_drain(kubeconfig: Path, node: str, timeout_seconds: int) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "kubectl"
    command = str(binary) if binary.exists() else (shutil.which("kubectl") or "kubectl")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": cache}
        return subprocess.run(
            [command, "--kubeconfig", str(kubeconfig), "drain", node, "--ignore-daemonsets",
             "--delete-emptydir-data", f"--timeout={timeout_seconds}s"],
            env=env, capture_output=True, text=True, timeout=timeout_seconds + 30, check=False,
        )


# --------------------------------------------------------------------------- main


def _throwaway_database() -> tuple[str, Callable[[], None]]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from models.migrate import upgrade_database
    from settings import normalize_database_url

    # The same server the tests use; the throwaway database is created there and dropped afterwards.
    admin_url = normalize_database_url(
        os.environ.get("TEST_DATABASE_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        variable="TEST_DATABASE_ADMIN_URL",
    )
    name = f"orch_bench_{uuid.uuid4().hex[:10]}"
    admin_engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    upgrade_database(url)

    def drop() -> None:
        from models.db import dispose_engine

        dispose_engine()
        with admin_engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()

    return url, drop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=50.0, help="simulated seconds per real second")
    parser.add_argument("--model-load", type=float, default=90.0, help="model load time (simulated seconds)")
    parser.add_argument("--timeout", type=int, default=600, help="drain timeout (real seconds)")
    args = parser.parse_args(argv)

    from kubesim.cluster import SimCluster
    from models.db import dispose_engine
    from settings import get_settings

    url, drop = _throwaway_database()
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    dispose_engine()
    behavior = {"selector": {}, "model_load_seconds": args.model_load, "image_pull_seconds": 5.0}
    results: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory() as workdir, \
                SimCluster(nodes=NODES_SPEC, seed=11, virtual_clock=False, speed=args.speed) as service_cluster, \
                SimCluster(nodes=NODES_SPEC, seed=11, virtual_clock=False, speed=args.speed) as kubectl_cluster:
            service_cluster.sim.add_pod_behavior(behavior)
            kubectl_cluster.sim.add_pod_behavior(behavior)
            point_service_at(service_cluster, Path(workdir) / "service.kubeconfig")
            namespace = _namespace()
            deployed = deploy_through_service(service_cluster)
            names = [deployed.k8s_names[shape.name] for shape in SCENARIO]

            # Identical second cluster: same manifests, pods pinned to the same node the same way.
            others = other_nodes(kubectl_cluster, DRAINED_NODE)
            set_cordon(kubectl_cluster, others, True)
            mirror_deployments(service_cluster, kubectl_cluster, namespace)
            ready_all = lambda: all(  # noqa: E731
                ready_pods(kubectl_cluster, namespace).get(deployed.k8s_names[s.name], 0) >= s.replicas
                for s in SCENARIO
            )
            if not wait_for(kubectl_cluster, ready_all, 900):
                raise RuntimeError("kubectl cluster's deployments did not become Ready")
            set_cordon(kubectl_cluster, others, False)

            sampler = ReadySampler(service_cluster, namespace, names)
            sampler.start()
            started = time.monotonic()
            sim_started = service_cluster.sim.clock.now()
            job_id = submit_drain(DRAINED_NODE, timeout_seconds=args.timeout)
            state = drive_drain(service_cluster, job_id, advance=False)
            results["service"] = {
                "state": state, "wall": time.monotonic() - started,
                "sim": service_cluster.sim.clock.now() - sim_started, "minimum": sampler.stop(),
            }

            kubeconfig = kubectl_cluster.write_kubeconfig(Path(workdir) / "kubectl.kubeconfig")
            sampler = ReadySampler(kubectl_cluster, namespace, names)
            sampler.start()
            started = time.monotonic()
            sim_started = kubectl_cluster.sim.clock.now()
            completed = kubectl_drain(kubeconfig, DRAINED_NODE, args.timeout)
            results["kubectl"] = {
                "state": "SUCCEEDED" if completed.returncode == 0 else f"exit {completed.returncode}",
                "wall": time.monotonic() - started,
                "sim": kubectl_cluster.sim.clock.now() - sim_started, "minimum": sampler.stop(),
            }
            desired = {deployed.k8s_names[s.name]: s.replicas for s in SCENARIO}
    finally:
        drop()
    _report(results, desired, args)
    return 0 if results["service"]["state"] == "SUCCEEDED" else 1


def _report(results: dict[str, dict[str, Any]], desired: dict[str, int], args: argparse.Namespace) -> None:
    print(f"drain of {DRAINED_NODE} ({NODES_SPEC}), speed {args.speed}x, model load {args.model_load}s simulated")
    print(f"{'':28}{'service (make-before-break)':>30}{'kubectl drain':>22}")
    for key, label in (("state", "outcome"),):
        print(f"{label:28}{results['service'][key]:>30}{results['kubectl'][key]:>22}")
    print(f"{'wall time (real s)':28}{results['service']['wall']:>30.2f}{results['kubectl']['wall']:>22.2f}")
    print(f"{'wall time (simulated s)':28}{results['service']['sim']:>30.1f}{results['kubectl']['sim']:>22.1f}")
    lost = {"service": 0, "kubectl": 0}
    for name, want in desired.items():
        service_min = results["service"]["minimum"].get(name, 0)
        kubectl_min = results["kubectl"]["minimum"].get(name, 0)
        lost["service"] += max(want - service_min, 0)
        lost["kubectl"] += max(want - kubectl_min, 0)
        print(f"{'min Ready ' + name[:18]:28}{f'{service_min}/{want}':>30}{f'{kubectl_min}/{want}':>22}")
    print(f"{'replicas lost (sum)':28}{lost['service']:>30}{lost['kubectl']:>22}")
    budget = results["kubectl"]["sim"] * 1.5 + args.model_load
    print(f"service simulated time {results['service']['sim']:.1f}s vs budget 1.5 x kubectl + model load = "
          f"{budget:.1f}s -> {'within' if results['service']['sim'] <= budget else 'OVER'}")


if __name__ == "__main__":
    sys.exit(main())
