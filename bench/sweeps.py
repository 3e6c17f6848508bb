"""The health monitor and the resource tracker at cluster scale: time, calls and statements per sweep.

    python bench/sweeps.py                     # 100 and 1,000 nodes (8 GPUs each)
    python bench/sweeps.py --sizes 100         # a quick run
    python bench/sweeps.py --profile           # and where one run of each sweep spends its time

For each size it builds a kubesim cluster of N `nvidia-l40s:8` nodes with N*2 deployments of 3 one-GPU
replicas (75 % of the GPUs hold a pod; 2,000 deployments and 6,000 pods at 1,000 nodes), written straight
into an in-process simulator's store and a throwaway Postgres database, lets every pod start on the virtual
clock, then serves that state from a separate `python -m kubesim --virtual` process (restored from a
snapshot), as a real API server runs apart from the workers. With a private Redis key prefix it runs each
sweep several times, interleaved with the bare calls it needs, and prints per sweep:

- sweep time (median of the runs) and the 1,000-node goal (< 2 s);
- Kubernetes calls per sweep (kubesim's request log) and SQL statements per sweep (SQLAlchemy's
  ``before_cursor_execute``), which must not grow with the cluster (list pagination aside);
- the ratio of the sweep time to the bare list calls the sweep needs (the same paginated lists, metrics
  lists and Prometheus queries, on the same threads as the sweep issues them, fetched and JSON-decoded,
  nothing else, with the cyclic GC paused as the sweeps run), goal <= 2.

Times are medians of the runs; other work on the machine shows up in both columns alike.

Needs PostgreSQL (TEST_DATABASE_ADMIN_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test) and
Redis (REDIS_URL, default redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: the repo root is the root

from sqlalchemy import create_engine, event, insert, text
from sqlalchemy.engine import make_url

GOAL_SECONDS_AT_1000 = 2.0
GOAL_RATIO = 2.0
NAMESPACE = "model-serving"
REPLICAS = 3
RUNS = 5


def _admin_url() -> str:
    from settings import normalize_database_url

    return normalize_database_url(
        os.environ.get("TEST_DATABASE_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        variable="TEST_DATABASE_ADMIN_URL",
    )


class Database:
    """A throwaway, migrated database the service's settings point at while the bench runs."""

    def __init__(self) -> None:
        self.admin = create_engine(_admin_url(), isolation_level="AUTOCOMMIT")
        self.name = f"orch_bench_{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> str:
        from models.db import dispose_engine
        from models.migrate import upgrade_database
        from settings import get_settings

        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.name}"'))
        url = make_url(_admin_url()).set(database=self.name).render_as_string(hide_password=False)
        upgrade_database(url)
        os.environ["DATABASE_URL"] = url
        get_settings.cache_clear()
        dispose_engine()
        return url

    def __exit__(self, *exc: object) -> None:
        from models.db import dispose_engine

        dispose_engine()
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


class StatementCounter:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.count = 0

    def _record(self, *_event_args: Any) -> None:
        self.count += 1

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)


def populate(cluster: Any, session: Any, deployments: int) -> None:
    """Deployment rows and their Kubernetes Deployments (straight into the store: setup is not measured)."""
    from models import Deployment, Tenant
    from settings import get_settings
    from workers.manifests import build_deployment

    settings = get_settings()
    cluster.store.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    session.add(Tenant(id="bench", name="bench", gpu_quota=100_000))
    session.flush()
    rows = [
        {
            "id": uuid.uuid4(), "tenant_id": "bench", "name": f"model-{index}", "model_id": "meta-llama/Llama-3.1-8B",
            "image": settings.vllm_image, "gpu_type": "nvidia-l40s", "gpus_per_replica": 1,
            "replicas_desired": REPLICAS, "k8s_namespace": NAMESPACE, "k8s_name": f"model-{index}",
            "status": "CREATING", "vllm_args": [], "autoscaling_targets": {},
        }
        for index in range(deployments)
    ]
    session.execute(insert(Deployment), rows)
    session.commit()
    for row in rows:
        cluster.store.create("deployments", build_deployment(Deployment(**row), settings))


def reserve_where_pods_run(session: Any) -> None:
    """Admission's ledger as it would be after these creates: one reservation per deployment and node."""
    from models import SCHEMA

    session.execute(text(f"""
        INSERT INTO {SCHEMA}.gpu_reservations (id, deployment_id, tenant_id, node_name, gpu_type, gpus, replicas)
        SELECT gen_random_uuid(), deployment_id, 'bench', node_name, 'nvidia-l40s', sum(gpus), count(*)
        FROM {SCHEMA}.pod_allocations WHERE deployment_id IS NOT NULL AND node_name IS NOT NULL
        GROUP BY deployment_id, node_name
    """))
    session.commit()


def _side_by_side(*calls: Callable[[], Any]) -> None:
    """Run the calls on their own threads, as the sweeps do, and re-raise the first failure."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        for future in [pool.submit(call) for call in calls]:
            future.result()


def bare_health_monitor_lists(clients: Any) -> None:
    """``health_monitor.read_cluster``'s three paginated lists, fetched and decoded on three threads as it does."""
    from workers.health_monitor import OUR_SELECTOR
    from workers.kube_calls import list_pages

    _side_by_side(
        lambda: list(list_pages(clients, clients.apps.list_namespaced_deployment, NAMESPACE,
                                label_selector=OUR_SELECTOR)),
        lambda: list(list_pages(clients, clients.core.list_namespaced_pod, NAMESPACE, label_selector=OUR_SELECTOR)),
        lambda: list(list_pages(clients, clients.core.list_node)),
    )


def bare_resource_tracker_lists(clients: Any, prometheus: Any) -> None:
    """The resource tracker's calls laid out as it lays them out: the inventory's node and pod lists
    (``inventory.fetch``, itself two threads) beside the metrics sources, metrics.k8s.io's pod list on one
    thread and the Prometheus queries on another; each response fetched and decoded, nothing else."""
    from kubernetes import client as k8s_client

    from workers import inventory, resource_tracker

    custom = k8s_client.CustomObjectsApi(clients.api_client)

    def metrics_server() -> None:
        custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "pods", _request_timeout=clients.request_timeout)

    def prometheus_queries() -> None:
        for query in resource_tracker.PROMETHEUS_QUERIES:
            prometheus.query(query)

    _side_by_side(lambda: inventory.fetch(clients), lambda: _side_by_side(metrics_server, prometheus_queries))


class KubesimProcess:
    """kubesim in its own process, as a real API server is: its work never competes with the sweep's
    process for the interpreter, so the bare-list baseline and the sweep see the same server."""

    def __init__(self, spec: str, kubeconfig: Path) -> None:
        self.spec, self.kubeconfig = spec, kubeconfig
        self.process: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> KubesimProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kubesim", "--port", "0", "--nodes", self.spec, "--kubeconfig",
             str(self.kubeconfig), "--virtual", "--seed", "1"],
            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, text=True,
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line.startswith("kubesim ready:"):
            raise RuntimeError(f"kubesim did not start: {line!r}")
        self.url = line.split()[2]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def build_cluster_state(spec: str, session: Any, deployments: int) -> dict[str, Any]:
    """Deployments created and every pod Ready, in an in-process simulator; returned as a snapshot."""
    from kubesim.cluster import SimCluster

    with SimCluster(nodes=spec, seed=1) as cluster:
        populate(cluster, session, deployments)
        # Image pulls and model loads until every pod is Ready. Settle explicitly with a long timeout first:
        # advance() settles between timers with a short one, meant for test-sized clusters.
        for _ in range(20):
            cluster.settle(timeout=900)
            cluster.advance(20)
        return cluster.sim.snapshot()


def api_calls(admin: Any) -> tuple[int, int]:
    """(Kubernetes API calls, Prometheus queries) in kubesim's request log."""
    paths = [entry["path"] for entry in admin.requests()]
    prometheus = sum(1 for path in paths if path.startswith("/prometheus"))
    kubernetes = sum(1 for path in paths if not path.startswith(("/prometheus", "/_sim")))
    return kubernetes, prometheus


def measure(admin: Any, engine: Any, sweep: Callable[[], Any], bare: Callable[[], Any]) -> dict[str, Any]:
    """Sweep and bare lists, interleaved run by run, so load from other processes on the machine hits both
    alike; medians of RUNS each."""
    from workers.sweep_metrics import cyclic_gc_paused

    times, bare_times, calls, queries, statements = [], [], [], [], []
    for _ in range(RUNS):
        admin.clear_requests()
        with StatementCounter(engine) as counter:
            started = time.perf_counter()
            sweep()
            times.append(time.perf_counter() - started)
        kubernetes, prometheus = api_calls(admin)
        calls.append(kubernetes)
        queries.append(prometheus)
        statements.append(counter.count)
        # Under the same collector setting as the sweeps run with (observed_sweep pauses the cyclic GC), so
        # the ratio compares the sweep's own work, not a difference in decoding cost.
        with cyclic_gc_paused():
            started = time.perf_counter()
            bare()
            bare_times.append(time.perf_counter() - started)
    return {
        "seconds": statistics.median(times), "bare_seconds": statistics.median(bare_times),
        "calls": max(calls), "queries": max(queries), "statements": max(statements),
    }


def print_profile(title: str, engine: Any, sweep: Callable[[], Any]) -> None:
    """One more run under cProfile (this process only: the workers' side of the sweep; threads other than
    the caller's show up as time spent waiting on their futures)."""
    import cProfile
    import pstats

    timings: list[tuple[float, str]] = []

    began: dict[int, float] = {}

    def started(_conn: Any, cursor: Any, *_rest: Any) -> None:
        began[id(cursor)] = time.perf_counter()

    def finished(_conn: Any, cursor: Any, statement: str, *_rest: Any) -> None:
        timings.append((time.perf_counter() - began.pop(id(cursor)), " ".join(statement.split())[:100]))

    event.listen(engine, "before_cursor_execute", started)
    event.listen(engine, "after_cursor_execute", finished)
    profiler = cProfile.Profile()
    try:
        profiler.runcall(sweep)
    finally:
        event.remove(engine, "before_cursor_execute", started)
        event.remove(engine, "after_cursor_execute", finished)
    print(f"  profile of one {title}: SQL statements by time")
    for seconds, statement in sorted(timings, reverse=True)[:6]:
        print(f"    {seconds:7.3f} s  {statement}")
    print("  top functions by own time:")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(15)


def run_size(nodes: int, *, profile: bool = False) -> dict[str, dict[str, Any]]:
    import redis

    from kubesim.admin_client import SimAdminClient
    from models.db import get_engine, get_sessionmaker
    from settings import get_settings
    from workers import inventory
    from workers.health_monitor import HealthMonitorConfig, run_health_monitor
    from workers.k8s import get_clients, reset_client
    from workers.prometheus_client import PrometheusClient
    from workers.resource_tracker import run_resource_tracker

    deployments = nodes * 2
    spec = f"{nodes}xnvidia-l40s:8"
    results: dict[str, dict[str, Any]] = {}
    with Database(), tempfile.TemporaryDirectory() as tmp:
        session = get_sessionmaker()()
        started = time.perf_counter()
        state = build_cluster_state(spec, session, deployments)
        with KubesimProcess(spec, Path(tmp) / "kubeconfig") as kubesim:
            admin = SimAdminClient(kubesim.url, timeout=900)
            admin.restore(state)
            admin.settle(timeout=900)
            del state
            os.environ["KUBECONFIG"] = str(kubesim.kubeconfig)
            os.environ["PROMETHEUS_URL"] = f"{kubesim.url}/prometheus"
            os.environ["K8S_NAMESPACE"] = NAMESPACE
            get_settings.cache_clear()
            reset_client()
            clients = get_clients()
            prometheus = PrometheusClient(f"{kubesim.url}/prometheus", timeout=60)
            redis_client = redis.Redis.from_url(get_settings().redis_url)
            prefix = f"bench-sweeps-{uuid.uuid4().hex[:8]}:"
            engine = get_engine()
            try:
                inventory.sync_inventory(session, clients)
                session.commit()
                reserve_where_pods_run(session)
                print(f"  setup: {nodes} nodes, {deployments} deployments, {deployments * REPLICAS} pods "
                      f"in {time.perf_counter() - started:.1f} s")
                config = HealthMonitorConfig(create_deadline_seconds=1800, model_load_deadline_seconds=1800,
                                             namespace=NAMESPACE)
                now = admin.now()
                recovery_jobs: list[Any] = []  # a healthy cluster needs none; collected rather than sent to Celery

                def health_monitor() -> None:
                    report = run_health_monitor(
                        session, now=now, clients=clients, config=config, enqueue=recovery_jobs.append,
                        redis_client=redis_client, key_prefix=prefix,
                    )
                    assert report.status == "succeeded", report.summary()

                def resource_tracker() -> None:
                    report = run_resource_tracker(session, now=now, clients=clients, prometheus=prometheus,
                                                  redis_client=redis_client, key_prefix=prefix)
                    assert report.status == "succeeded", report.summary()

                health_monitor()  # warm-up (CREATING -> RUNNING for every deployment)
                resource_tracker()
                results["health_monitor"] = measure(
                    admin, engine, health_monitor, lambda: bare_health_monitor_lists(clients)
                )
                results["resource_tracker"] = measure(
                    admin, engine, resource_tracker, lambda: bare_resource_tracker_lists(clients, prometheus)
                )
                if profile:
                    for name, sweep in (("health_monitor", health_monitor), ("resource_tracker", resource_tracker)):
                        print_profile(f"{name} at {nodes} nodes", engine, sweep)
            finally:
                session.close()
                for key in redis_client.scan_iter(f"{prefix}*"):
                    redis_client.delete(key)
                reset_client()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000", help="comma-separated node counts (default 100,1000)")
    parser.add_argument("--profile", action="store_true", help="also profile one run of each sweep per size")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    table: dict[int, dict[str, dict[str, Any]]] = {}
    for nodes in sizes:
        print(f"cluster of {nodes} nodes x 8 GPUs")
        table[nodes] = run_size(nodes, profile=args.profile)
    print()
    print(f"{'sweep':<18}{'nodes':>7}{'time s':>9}{'bare s':>9}{'ratio':>8}{'k8s calls':>11}{'PromQL':>8}"
          f"{'SQL stmts':>11}")
    for nodes, results in table.items():
        for sweep, figures in results.items():
            ratio = figures["seconds"] / figures["bare_seconds"]
            print(f"{sweep:<18}{nodes:>7}{figures['seconds']:>9.3f}{figures['bare_seconds']:>9.3f}"
                  f"{ratio:>8.2f}{figures['calls']:>11}{figures['queries']:>8}{figures['statements']:>11}")
    print()
    for sweep in ("health_monitor", "resource_tracker"):
        statements = {table[n][sweep]["statements"] for n in table}
        print(f"{sweep}: SQL statements per sweep across sizes {sorted(statements)} -> "
              f"{'constant' if len(statements) == 1 else 'VARIES'}; k8s calls "
              f"{[table[n][sweep]['calls'] for n in table]} (list pages grow with pagination only)")
        for nodes in table:
            figures = table[nodes][sweep]
            ratio = figures["seconds"] / figures["bare_seconds"]
            print(f"  {nodes} nodes: ratio {ratio:.2f} (goal <= {GOAL_RATIO}) "
                  f"{'PASS' if ratio <= GOAL_RATIO else 'MISS'}", end="")
            if nodes >= 1000:
                print(f"; time {figures['seconds']:.3f} s (goal < {GOAL_SECONDS_AT_1000} s) "
                      f"{'PASS' if figures['seconds'] < GOAL_SECONDS_AT_1000 else 'MISS'}", end="")
            print()


if __name__ == "__main__":
    main()
