"""Pipeline benchmark: the whole stack vs bare Celery, and the status endpoint vs a bare Flask endpoint.

    python -m bench.pipeline [--jobs 40] [--concurrency 2] [--status-requests 2000]

Everything runs side by side in one process tree on the same broker (Redis, under a unique key prefix),
the same worker process and the same concurrency:
- pipeline: POST /internal/deployments/create (Flask test client of ``web.app.create_app()``) -> Postgres ->
  Celery -> kubesim, until every create job is SUCCEEDED; vs N no-op Celery tasks sent and completed.
- API: GET /internal/deployments/{id}/status (auth, tenant check, three small queries) vs a bare Flask
  endpoint registered on the same app.
Goals: pipeline ratio >= 0.25, API ratio >= 0.5. A cProfile of the status requests shows where API time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

NOOP_MODULE = '''
import os

import redis

from workers.celery_app import app

_counter = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.task(name="bench.noop", acks_late=True, ignore_result=True, soft_time_limit=20, time_limit=30, queue="jobs")
def noop(counter_key):
    """Does nothing but count itself, so the sender can see the round trip end."""
    _counter.incr(counter_key)
'''


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def sweep_finished(get_sessionmaker) -> bool:
    from models import SweepRun

    with get_sessionmaker()() as session:
        run = session.get(SweepRun, "resource_tracker")
        return run is not None and run.last_finished_at is not None and run.last_status != "running"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--status-requests", type=int, default=2000)
    args = parser.parse_args(argv)

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
    os.environ.update(
        DATABASE_URL=database_url,
        CELERY_CONFIG_MODULE=config_module,
        JWT_SECRET=secrets.token_hex(32),
        STATUS_POLL_INTERVAL_SECONDS="2",
    )
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    sys.path.insert(0, str(workdir))

    worker = None
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
            "8xnvidia-l40s:8",
            "--kubeconfig",
            str(kubeconfig),
            "--speed",
            "50",
            "--seed",
            "1",
        ],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        ready_line = cluster.stdout.readline()
        if "kubesim ready" not in ready_line:
            raise SystemExit(f"kubesim did not start: {ready_line!r}")
        os.environ["KUBECONFIG"] = str(kubeconfig)
        import redis

        from models import Job, JobState
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
        wait_until(lambda: int(counter.get(warm_key) or 0) >= 1, 60, "the worker to start")
        # The worker syncs the inventory when it starts; let that finish so it does not skew either side.
        wait_until(lambda: sweep_finished(get_sessionmaker), 120, "the start-up inventory sweep")

        # --- bare Celery round trip ---------------------------------------------------------------------------
        key = f"{prefix}:noop"
        started = time.perf_counter()
        for _ in range(args.jobs):
            celery_app.send_task("bench.noop", args=[key], queue="jobs")
        wait_until(lambda: int(counter.get(key) or 0) >= args.jobs, 300, "no-op tasks")
        noop_seconds = time.perf_counter() - started

        # --- the pipeline ---------------------------------------------------------------------------------------
        flask_app = create_app()
        flask_app.add_url_rule("/bench/bare", "bench_bare", lambda: {"ok": True})
        client = flask_app.test_client()
        token = mint_token(settings, subject="bench", scopes=["internal"], tenant_id="bench")
        headers = {"Authorization": f"Bearer {token}"}
        job_ids = []
        started = time.perf_counter()
        for index in range(args.jobs):
            response = client.post(
                "/internal/deployments/create",
                json={"model_id": "org/bench-model", "replicas": 1, "gpus_per_replica": 1, "name": f"bench-{index}"},
                headers=headers,
            )
            if response.status_code != 202:
                raise SystemExit(f"create answered {response.status_code}: {response.get_json()}")
            job_ids.append(uuid.UUID(response.get_json()["job_id"]))
        submit_seconds = time.perf_counter() - started

        def all_succeeded() -> bool:
            with get_sessionmaker()() as session:
                done = session.execute(
                    select(func.count()).where(Job.id.in_(job_ids), Job.state == JobState.SUCCEEDED)
                ).scalar_one()
            return done >= args.jobs

        wait_until(all_succeeded, 600, "create jobs")
        pipeline_seconds = time.perf_counter() - started
        deployment_id = response.get_json()["deployment_id"]

        # --- API: status vs bare --------------------------------------------------------------------------------
        # Measured with the worker and the simulated cluster stopped, so both endpoints see the same idle machine.
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        cluster.terminate()
        cluster.wait(timeout=30)

        def timed(path: str, request_headers: dict[str, str]) -> float:
            begin = time.perf_counter()
            for _ in range(args.status_requests):
                answer = client.get(path, headers=request_headers)
                if answer.status_code != 200:
                    raise SystemExit(f"{path} answered {answer.status_code}")
            return time.perf_counter() - begin

        timed("/bench/bare", {})  # warm-up
        bare_seconds = timed("/bench/bare", {})
        status_path = f"/internal/deployments/{deployment_id}/status"
        profiler = cProfile.Profile()
        profiler.enable()
        status_seconds = timed(status_path, headers)
        profiler.disable()

        pipeline_rate = args.jobs / pipeline_seconds
        noop_rate = args.jobs / noop_seconds
        status_rate = args.status_requests / status_seconds
        bare_rate = args.status_requests / bare_seconds
        print(f"workers: 1 process x concurrency {args.concurrency}; jobs: {args.jobs}; broker prefix {prefix}")
        print(f"{'':32}{'per second':>12}")
        print(f"{'bare Celery no-op round trip':32}{noop_rate:12.1f}")
        print(f"{'pipeline API->PG->Celery->k8s':32}{pipeline_rate:12.1f}   (API submit phase {submit_seconds:.2f}s)")
        print(f"{'  ratio (goal >= 0.25)':32}{pipeline_rate / noop_rate:12.2f}")
        print(f"{'bare Flask endpoint':32}{bare_rate:12.1f}")
        print(f"{'GET .../status':32}{status_rate:12.1f}")
        print(f"{'  ratio (goal >= 0.5)':32}{status_rate / bare_rate:12.2f}")
        report = io.StringIO()
        pstats.Stats(profiler, stream=report).sort_stats("tottime").print_stats(14)
        print("\nwhere GET .../status spends its time (cProfile, by own time):")
        print("\n".join(report.getvalue().splitlines()[:40]))
        return 0
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
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
