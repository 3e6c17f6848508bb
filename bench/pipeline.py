"""Pipeline benchmark: the whole stack vs bare Celery, and the status endpoint vs a bare Flask endpoint.

    python -m bench.pipeline [--jobs 60] [--rounds 5] [--concurrency 2] [--status-requests 2000] [--cluster-speed 50]

Everything runs side by side in one process tree on the same broker (Redis, under a unique key prefix),
the same worker process and the same concurrency:
- pipeline: POST /internal/deployments/create (Flask test client of ``web.app.create_app()``) -> Postgres ->
  Celery -> kubesim, until every create job is SUCCEEDED; vs N no-op Celery tasks sent and completed. The two
  alternate over ``--rounds`` rounds (a no-op batch, then a pipeline batch); each round starts from a quiet
  point (every deployment RUNNING, so no status poll of an earlier round runs during it, and the jobs queue
  empty). Per-round figures are printed; the verdict is on the median round, since one short no-op batch
  (~0.1 s) swings by a third from run to run on a shared machine. The simulated cluster is sized to hold
  every create of every round (one GPU each).
- API: GET /internal/deployments/{id}/status (auth, tenant check, one query) vs a bare Flask endpoint
  registered on the same app, in alternating rounds, measured twice with one sequential client: in-process
  (Flask test client: framework cost only) and over HTTP behind gunicorn running ``web.wsgi`` (what a
  caller sees). The worker and kubesim are stopped first, so both endpoints see the same machine.
  Warm-ups (one create per worker slot, 200 requests per endpoint) are not timed, as for the no-op side.
Both sides of each pair share the broker, the worker (same process, same concurrency), the client and the
way completion is seen: jobs are sent back to back, then the sender polls until all of them have finished
(the no-ops' completion list in Redis, the create jobs' rows in Postgres; both polled every 20 ms), and each side ends
at the moment its last task finished, as that task recorded it (the no-op's wall-clock time in Redis, the job's
``finished_at`` in Postgres; one host, one clock), not at the poll that noticed it: a 20 ms poll would otherwise
add up to 20 ms to a side that takes ~0.1 s. CPU seconds of every process involved are reported for both sides,
and for the create jobs the mean time queued (row written -> worker starts it) and running (start -> end).
Goals: pipeline ratio >= 0.25, API ratio >= 0.5; each is printed with PASS/MISS and the machine's load
average (``os.getloadavg()``, what ``uptime`` shows) before and after, since a loaded machine skews both.
A cProfile of the status requests shows where API time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import math
import os
import pstats
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

NOOP_MODULE = '''
import os
import time

import redis

from workers.celery_app import app

_counter = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.task(name="bench.noop", acks_late=True, ignore_result=True, soft_time_limit=20, time_limit=30, queue="jobs")
def noop(counter_key):
    """Does nothing but record when it ran (wall clock), so the sender can see the round trip end."""
    _counter.rpush(counter_key, time.time())
'''


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def _process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc (empty where /proc is not available)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(parents.get(pid, []))
    return tree


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone or /proc is not available)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent by each part of the stack between two snapshots, so both sides of a pair are
    accounted for the same way and the closing note can say which process the time went to."""

    def __init__(self, parts) -> None:
        self._parts = parts  # name -> callable returning the pids of that part now
        self._start: dict[int, float] = {}

    def _snapshot(self) -> dict[str, dict[int, float]]:
        snapshot = {name: {pid: _cpu_seconds(pid) for pid in pids()} for name, pids in self._parts.items()}
        snapshot["this process (client, in-process API)"] = {os.getpid(): sum(os.times()[:2])}
        return snapshot

    def start(self) -> None:
        self._start = {pid: used for part in self._snapshot().values() for pid, used in part.items()}

    def stop(self) -> dict[str, float]:
        # A process that started after start() counts from zero; one that ended in between is not counted.
        return {
            name: sum(used - self._start.get(pid, 0.0) for pid, used in part.items())
            for name, part in self._snapshot().items()
        }


def cpu_table(label: str, used: dict[str, float], jobs: int, wall: float) -> str:
    lines = [f"CPU seconds during {label} ({wall:.2f}s wall, {os.cpu_count()} CPUs; ms per job in brackets):"]
    for name, seconds in sorted(used.items(), key=lambda item: -item[1]):
        lines.append(f"  {name:40}{seconds:8.2f}  ({1000 * seconds / jobs:6.1f})")
    total = sum(used.values())
    lines.append(f"  {'total':40}{total:8.2f}  ({1000 * total / jobs:6.1f})")
    return "\n".join(lines)


GPUS_PER_NODE = 8
PIPELINE_GOAL = 0.25
API_GOAL = 0.5


@dataclass(frozen=True)
class RoundResult:
    noop_seconds: float
    pipeline_seconds: float
    submit_seconds: float
    queued: float
    running: float

    @property
    def ratio(self) -> float:
        """Pipeline jobs/s over no-op jobs/s; both sides ran the same number of jobs."""
        return self.noop_seconds / self.pipeline_seconds


def add_cpu(total: dict[str, float], used: dict[str, float]) -> None:
    for name, seconds in used.items():
        total[name] = total.get(name, 0.0) + seconds


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def verdict(ratio: float, goal: float) -> str:
    return f"(goal >= {goal}) {'PASS' if ratio >= goal else 'MISS'}"


WSGI_MODULE = """
from web.wsgi import app

app.add_url_rule("/bench/bare", "bench_bare", lambda: {"ok": True})
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_timer(port: int):
    """Sequential GETs over one kept-alive HTTP/1.1 connection (the same client for both endpoints)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def timed(path: str, headers: dict[str, str], count: int) -> float:
        begin = time.perf_counter()
        for _ in range(count):
            connection.request("GET", path, headers=headers)
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise SystemExit(f"{path} answered {answer.status} over HTTP")
        return time.perf_counter() - begin

    return timed


def sweep_finished(get_sessionmaker) -> bool:
    from models import SweepRun

    with get_sessionmaker()() as session:
        run = session.get(SweepRun, "resource_tracker")
        return run is not None and run.last_finished_at is not None and run.last_status != "running"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--status-requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5, help="alternating no-op / pipeline rounds (median reported)")
    parser.add_argument("--cluster-speed", type=float, default=50, help="kubesim's virtual clock speed")
    args = parser.parse_args(argv)
    if min(args.jobs, args.rounds, args.concurrency) < 1:
        parser.error("--jobs, --rounds and --concurrency must be at least 1")
    # Every create (warm-ups included) holds one GPU until the end: the simulated cluster is sized to hold them all.
    cluster_nodes = math.ceil((args.jobs * args.rounds + args.concurrency) / GPUS_PER_NODE)
    load_before = load_average()

    admin_url = os.environ.get("TEST_DATABASE_ADMIN_URL", DEFAULT_ADMIN_URL).replace(
        "postgresql://", "postgresql+psycopg://", 1
    )
    database = f"orch_bench_{uuid.uuid4().hex[:10]}"
    admin_engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    database_url = make_url(admin_url).set(database=database).render_as_string(hide_password=False)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    config_module = f"celeryconfig_{prefix.replace('-', '_')}"
    (workdir / f"{config_module}.py").write_text(
        "from celeryconfig import *  # noqa: F403\n"
        f"broker_transport_options = {{'visibility_timeout': 900, 'global_keyprefix': '{prefix}:'}}\n"
        "imports = ['bench_noop_tasks']\n"
    )
    (workdir / "bench_noop_tasks.py").write_text(NOOP_MODULE)
    (workdir / "bench_wsgi.py").write_text(WSGI_MODULE)
    os.environ.update(
        DATABASE_URL=database_url,
        CELERY_CONFIG_MODULE=config_module,
        JWT_SECRET=secrets.token_hex(32),
        STATUS_POLL_INTERVAL_SECONDS="2",
    )
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    sys.path.insert(0, str(workdir))

    worker = None
    server = None
    # kubesim in its own process, like a real API server: sharing this process's GIL would slow both sides.
    kubeconfig = workdir / "kubeconfig"
    cluster = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubesim",
            "--port",
            "0",
            "--nodes",
            f"{cluster_nodes}xnvidia-l40s:{GPUS_PER_NODE}",
            "--kubeconfig",
            str(kubeconfig),
            "--speed",
            str(args.cluster_speed),
            "--seed",
            "1",
        ],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        ready_line = cluster.stdout.readline() if cluster.stdout is not None else ""
        if "kubesim ready" not in ready_line:
            raise SystemExit(f"kubesim did not start: {ready_line!r}")
        os.environ["KUBECONFIG"] = str(kubeconfig)
        import redis

        from models import Deployment, DeploymentStatus, Job
        from models.db import get_sessionmaker
        from models.migrate import upgrade_database
        from settings import get_settings
        from web.app import create_app
        from web.tokens import mint_token
        from workers.celery_app import app as celery_app
        from workers.inventory import run_inventory_sweep
        from workers.queries import ensure_tenant

        upgrade_database(database_url)
        settings = get_settings()
        counter = redis.Redis.from_url(settings.redis_url)
        run_inventory_sweep()
        with get_sessionmaker().begin() as session:
            ensure_tenant(session, "bench").gpu_quota = 10_000

        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(workdir), str(REPOSITORY)]))
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.celery_app",
                "worker",
                "--queues",
                "jobs,sweeps",
                "--concurrency",
                str(args.concurrency),
                "--hostname",
                f"{prefix}@%h",
                "--without-mingle",
                "--without-gossip",
                "--loglevel",
                os.environ.get("BENCH_WORKER_LOGLEVEL", "WARNING"),
            ],
            cwd=REPOSITORY,
            env=env,
            start_new_session=True,
        )
        warm_key = f"{prefix}:warm"
        celery_app.send_task("bench.noop", args=[warm_key], queue="jobs")
        wait_until(lambda: counter.llen(warm_key) >= 1, 60, "the worker to start")
        # The worker syncs the inventory when it starts; let that finish so it does not skew either side.
        wait_until(lambda: sweep_finished(get_sessionmaker), 120, "the start-up inventory sweep")

        def postgres_backends() -> list[int]:
            with admin_engine.connect() as connection:
                return list(
                    connection.execute(
                        text("SELECT pid FROM pg_stat_activity WHERE datname = :name"), {"name": database}
                    ).scalars()
                )

        meter = CpuMeter(
            {
                "Celery worker (all processes)": lambda: _process_tree(worker.pid),
                "kubesim": lambda: _process_tree(cluster.pid),
                "Postgres backends (bench database)": postgres_backends,
            }
        )

        flask_app = create_app()
        flask_app.add_url_rule("/bench/bare", "bench_bare", lambda: {"ok": True})
        client = flask_app.test_client()
        token = mint_token(settings, subject="bench", scopes=["internal"], tenant_id="bench")
        headers = {"Authorization": f"Bearer {token}"}

        def submit_creates(names: list[str]) -> tuple[list[uuid.UUID], str]:
            job_ids, deployment_id = [], ""
            for name in names:
                response = client.post(
                    "/internal/deployments/create",
                    json={"model_id": "org/bench-model", "replicas": 1, "gpus_per_replica": 1, "name": name},
                    headers=headers,
                )
                if response.status_code != 202:
                    raise SystemExit(f"create answered {response.status_code}: {response.get_json()}")
                job_ids.append(uuid.UUID(response.get_json()["job_id"]))
                deployment_id = response.get_json()["deployment_id"]
            return job_ids, deployment_id

        # The completion check runs every 20 ms while the pipeline works, on the same 2 CPUs: one autocommit
        # statement on a connection of its own, as light as the no-op side's LLEN can make it (through an ORM
        # session it cost ~1 ms of CPU per check, taken from the pipeline it watches). How often it runs does not
        # change the time measured, which is the last job's finished_at.
        completion = psycopg.connect(make_url(database_url).set(drivername="postgresql").render_as_string(
            hide_password=False), autocommit=True)
        count_succeeded = "SELECT count(*) FROM orchestration.jobs WHERE id = ANY(%s) AND state = 'SUCCEEDED'"

        def all_succeeded(job_ids: list[uuid.UUID]) -> bool:
            row = completion.execute(count_succeeded, (job_ids,)).fetchone()
            return row is not None and row[0] >= len(job_ids)

        def settled() -> bool:
            """Every deployment RUNNING (so no status poll is pending) and nothing left on the jobs queue."""
            with get_sessionmaker()() as session:
                converging = session.execute(
                    select(func.count()).where(Deployment.status != DeploymentStatus.RUNNING)
                ).scalar_one()
            return converging == 0 and counter.llen(f"{prefix}:jobs") == 0

        def quiet_point() -> None:
            # Each round starts with the previous round's follow-up work done: the status polls of the new
            # deployments would otherwise run during the next round and slow whichever side they hit.
            wait_until(settled, 300, "the deployments to become RUNNING")
            time.sleep(0.5)

        # Warm-up, as the no-op side had: one create per worker slot, not timed (first requests and first
        # tasks of a process pay one-time costs: statement compilation, connections, the kubeconfig).
        warm_ids, _ = submit_creates([f"bench-warm-{index}" for index in range(args.concurrency)])
        wait_until(lambda: all_succeeded(warm_ids), 120, "warm-up create jobs")

        results: list[RoundResult] = []
        noop_cpu: dict[str, float] = {}
        pipeline_cpu: dict[str, float] = {}
        for round_index in range(args.rounds):
            quiet_point()
            # --- bare Celery round trip -----------------------------------------------------------------------
            key = f"{prefix}:noop:{round_index}"
            meter.start()
            started = time.time()
            for _ in range(args.jobs):
                celery_app.send_task("bench.noop", args=[key], queue="jobs")
            wait_until(lambda key=key: counter.llen(key) >= args.jobs, 300, "no-op tasks")
            noop_seconds = max(float(stamp) for stamp in counter.lrange(key, 0, -1)) - started
            add_cpu(noop_cpu, meter.stop())

            # --- the pipeline ---------------------------------------------------------------------------------
            meter.start()
            started = time.time()
            job_ids, deployment_id = submit_creates([f"bench-{round_index}-{index}" for index in range(args.jobs)])
            submit_seconds = time.time() - started
            wait_until(lambda job_ids=job_ids: all_succeeded(job_ids), 600, "create jobs")
            with get_sessionmaker()() as session:
                last_finished = session.execute(
                    select(func.max(Job.finished_at)).where(Job.id.in_(job_ids))
                ).scalar_one()
                # Per job: waiting in the queue (row written -> a worker starts it) and running (start -> end).
                queued, running = session.execute(
                    select(
                        func.avg(func.extract("epoch", Job.started_at - Job.created_at)),
                        func.avg(func.extract("epoch", Job.finished_at - Job.started_at)),
                    ).where(Job.id.in_(job_ids))
                ).one()
            add_cpu(pipeline_cpu, meter.stop())
            if last_finished is None:
                raise SystemExit("the create jobs succeeded without a finished_at")
            results.append(
                RoundResult(
                    noop_seconds=noop_seconds,
                    pipeline_seconds=last_finished.timestamp() - started,
                    submit_seconds=submit_seconds,
                    queued=float(queued),
                    running=float(running),
                )
            )

        # --- API: status vs bare --------------------------------------------------------------------------------
        # Measured with the worker and the simulated cluster stopped, so both endpoints see the same idle machine.
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        cluster.terminate()
        cluster.wait(timeout=30)

        def timed(path: str, request_headers: dict[str, str], count: int) -> float:
            begin = time.perf_counter()
            for _ in range(count):
                answer = client.get(path, headers=request_headers)
                if answer.status_code != 200:
                    raise SystemExit(f"{path} answered {answer.status_code}")
            return time.perf_counter() - begin

        status_path = f"/internal/deployments/{deployment_id}/status"
        timed("/bench/bare", {}, 200)  # warm-up: routing, caches (token, tenant), a pooled connection
        timed(status_path, headers, 200)
        # Both endpoints in alternating rounds, so a change in machine load during the run hits both alike;
        # neither is timed under the profiler (cProfile slows Python code several-fold).
        rounds = 4
        per_round = max(args.status_requests // rounds, 1)
        bare_seconds = status_seconds = 0.0
        for _ in range(rounds):
            bare_seconds += timed("/bench/bare", {}, per_round)
            status_seconds += timed(status_path, headers, per_round)
        profiler = cProfile.Profile()
        profiler.enable()
        timed(status_path, headers, per_round)
        profiler.disable()

        status_rate = rounds * per_round / status_seconds
        bare_rate = rounds * per_round / bare_seconds

        # The same pair behind a real server: gunicorn (one gthread worker, one thread, keep-alive) running the
        # production entry point ``web.wsgi`` plus the bare route, one sequential HTTP/1.1 client.
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "--worker-class", "gthread", "--threads", "1", "--keep-alive", "60", "--log-level", "warning",
             "bench_wsgi:app"],
            cwd=REPOSITORY,
            env=env,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

        def server_answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False

        wait_until(server_answers, 60, "gunicorn to listen")
        http_timed = http_timer(port)
        http_timed("/bench/bare", {}, 200)
        http_timed(status_path, headers, 200)
        http_bare_seconds = http_status_seconds = 0.0
        for _ in range(rounds):
            http_bare_seconds += http_timed("/bench/bare", {}, per_round)
            http_status_seconds += http_timed(status_path, headers, per_round)
        http_status_rate = rounds * per_round / http_status_seconds
        http_bare_rate = rounds * per_round / http_bare_seconds
        http_ratio = http_status_rate / http_bare_rate
        api_ratio = status_rate / bare_rate
        total_jobs = args.jobs * args.rounds
        noop_total = sum(result.noop_seconds for result in results)
        pipeline_total = sum(result.pipeline_seconds for result in results)
        ratios = [result.ratio for result in results]
        pipeline_ratio = statistics.median(ratios)
        print(
            f"workers: 1 process x concurrency {args.concurrency}; {args.rounds} rounds of {args.jobs} jobs per side; "
            f"broker prefix {prefix}"
        )
        print(f"machine before: {load_before}")
        print(f"machine after:  {load_average()}")
        print(
            f"{'round':>5} {'no-op/s':>9} {'pipeline/s':>11} {'ratio':>6}   "
            "create jobs (API ms/request, ms queued, ms running)"
        )
        for index, result in enumerate(results, 1):
            print(
                f"{index:>5} {args.jobs / result.noop_seconds:9.1f} {args.jobs / result.pipeline_seconds:11.1f} "
                f"{result.ratio:6.2f}   {1000 * result.submit_seconds / args.jobs:.1f}, "
                f"{1000 * result.queued:.1f}, {1000 * result.running:.1f}"
            )
        print(f"{'':32}{'per second':>12}   (all rounds together)")
        print(f"{'bare Celery no-op round trip':32}{total_jobs / noop_total:12.1f}")
        print(f"{'pipeline API->PG->Celery->k8s':32}{total_jobs / pipeline_total:12.1f}")
        print(f"{'  pipeline ratio, all rounds':32}{noop_total / pipeline_total:12.2f}")
        print(f"{'  pipeline ratio, median round':32}{pipeline_ratio:12.2f}   {verdict(pipeline_ratio, PIPELINE_GOAL)}")
        print(cpu_table("the no-op round trips", noop_cpu, total_jobs, noop_total))
        print(cpu_table("the pipeline", pipeline_cpu, total_jobs, pipeline_total))
        print("API, sequential client, in-process (Flask test client, no HTTP):")
        print(f"{'  bare Flask endpoint':32}{bare_rate:12.1f}")
        print(f"{'  GET .../status':32}{status_rate:12.1f}")
        print(f"{'  API ratio':32}{api_ratio:12.2f}   {verdict(api_ratio, API_GOAL)}")
        print("API, sequential client, over HTTP (gunicorn gthread, 1 worker x 1 thread, keep-alive):")
        print(f"{'  bare Flask endpoint':32}{http_bare_rate:12.1f}")
        print(f"{'  GET .../status':32}{http_status_rate:12.1f}")
        print(f"{'  API ratio':32}{http_ratio:12.2f}   {verdict(http_ratio, API_GOAL)}")
        report = io.StringIO()
        stats = pstats.Stats(profiler, stream=report)
        stats.sort_stats("cumulative").print_stats(
            r"(web|workers|models)/|flask_smorest|marshmallow|sqlalchemy/orm/session|psycopg/cursor|werkzeug/test", 24
        )
        stats.sort_stats("tottime").print_stats(12)
        print(
            f"\nwhere GET .../status spends its time (cProfile of {per_round} more in-process requests; "
            "cumulative, then own time):"
        )
        print("\n".join(line for line in report.getvalue().splitlines() if line.strip())[:12000])
        return 0
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        if cluster.poll() is None:
            cluster.terminate()
            cluster.wait(timeout=30)
        try:
            import redis as redis_module

            redis_client = redis_module.Redis.from_url(os.environ["REDIS_URL"])
            stale = list(redis_client.scan_iter(match=f"{prefix}:*"))
            if stale:
                redis_client.delete(*stale)
        finally:
            from models.db import dispose_engine

            dispose_engine()
            with admin_engine.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            admin_engine.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
