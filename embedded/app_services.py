"""The service's own processes in the embedded run: migrations, API, Celery worker, beat, Flower; and tokens.

All of them are started with the same commands the Procfile uses, so the embedded run exercises exactly what
a deployment runs — only the URLs in their environment point at the embedded data services.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from embedded.config import EmbeddedConfig
from embedded.processes import ManagedProcess, ProcessGroup
from embedded.readiness import NotReadyError, http_ok, wait_until_ready

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
CELERY_APP = "workers.celery_app"
WSGI_APP = "web.wsgi:app"
GUNICORN_CONFIG = "python:web.gunicorn_config"  # metrics of every API worker added up
JOB_QUEUES = "jobs,sweeps"
DEMO_TENANT = "demo"
# Tokens printed by the banner last a week: long enough for a working session across restarts.
BANNER_TOKEN_TTL_SECONDS = 7 * 24 * 3600


def service_environment(
    base: Mapping[str, str],
    *,
    database_url: str,
    redis_url: str,
    kubeconfig: Path | None,
    jwt_secret: str,
    api_port: int,
) -> dict[str, str]:
    """The environment every service process gets: the caller's, plus the resolved URLs and the secret."""
    environment = dict(base)
    python_path = [str(REPOSITORY_ROOT)]
    if environment.get("PYTHONPATH"):
        python_path.append(environment["PYTHONPATH"])
    environment.update(
        PYTHONUNBUFFERED="1",  # log lines reach the log files as they happen
        PYTHONPATH=os.pathsep.join(python_path),
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        JWT_SECRET=jwt_secret,
        PORT=str(api_port),
    )
    if kubeconfig is not None:
        environment["KUBECONFIG"] = str(kubeconfig)
    return environment


def point_metrics_at_cluster(environment: dict[str, str], kubesim_url: str) -> None:
    """Give the services kubesim's Prometheus-compatible query API as PROMETHEUS_URL, unless one is set.

    The autoscaler and the GPU-utilization view read DCGM and vLLM series from PROMETHEUS_URL; without it
    the embedded run answered ``metrics_available: false`` and never autoscaled.
    """
    if not environment.get("PROMETHEUS_URL", "").strip():
        environment["PROMETHEUS_URL"] = f"{kubesim_url.rstrip('/')}/prometheus"


def run_migrations(group: ProcessGroup, config: EmbeddedConfig, env: Mapping[str, str]) -> None:
    """Bring the database schema up to date (``python -m models.migrate``) before anything uses it."""
    group.run_once(
        "migrate",
        [sys.executable, "-m", "models.migrate"],
        env=env,
        cwd=REPOSITORY_ROOT,
        timeout_seconds=config.start_timeout_seconds,
    )


def start_api(group: ProcessGroup, config: EmbeddedConfig, env: Mapping[str, str], port: int) -> str:
    """Start gunicorn serving the Flask app; return its base URL once ``/health`` answers."""
    child = group.start(
        "api",
        [
            sys.executable, "-m", "gunicorn", WSGI_APP,
            "--config", GUNICORN_CONFIG,
            "--bind", f"{config.bind_host}:{port}",
            "--workers", str(config.api_workers),
            "--threads", "4",
            # Ctrl-C should not wait gunicorn's default 30 s for idle keep-alive connections.
            "--graceful-timeout", "5",
            "--access-logfile", "-",
        ],
        env=env,
        cwd=REPOSITORY_ROOT,
    )
    base_url = f"http://{config.bind_host}:{port}"
    wait_until_ready(group, "the API", http_ok(f"{base_url}/health"), timeout_seconds=config.start_timeout_seconds,
                     child=child)
    return base_url


def start_worker(group: ProcessGroup, config: EmbeddedConfig, env: Mapping[str, str]) -> ManagedProcess:
    """A Celery worker consuming both queues. SIGTERM is Celery's warm shutdown: running tasks finish first."""
    return group.start(
        "worker",
        [
            sys.executable, "-m", "celery", "-A", CELERY_APP, "worker",
            "--queues", JOB_QUEUES,
            "--concurrency", str(config.worker_concurrency),
            "--hostname", "embedded@%h",
            "--loglevel", "INFO",
        ],
        env=env,
        cwd=REPOSITORY_ROOT,
    )


def start_beat(group: ProcessGroup, config: EmbeddedConfig, env: Mapping[str, str]) -> ManagedProcess:
    """Celery beat, the single scheduler of the sweeps; its schedule state lives in the data directory."""
    return group.start(
        "beat",
        [
            sys.executable, "-m", "celery", "-A", CELERY_APP, "beat",
            "--schedule", str(config.beat_schedule_path),
            "--loglevel", "INFO",
        ],
        env=env,
        cwd=REPOSITORY_ROOT,
    )


def start_flower(group: ProcessGroup, config: EmbeddedConfig, env: Mapping[str, str], port: int) -> str:
    """Flower, the Celery dashboard; return its URL once ``/healthcheck`` answers."""
    child = group.start(
        "flower",
        [
            sys.executable, "-m", "celery", "-A", CELERY_APP, "flower",
            f"--address={config.bind_host}",
            f"--port={port}",
        ],
        env=env,
        cwd=REPOSITORY_ROOT,
        # Flower (tornado) stops on SIGINT without a traceback; SIGTERM works too, but logs as a crash.
        stop_signal=signal.SIGINT,
    )
    base_url = f"http://{config.bind_host}:{port}"
    wait_until_ready(group, "Flower", http_ok(f"{base_url}/healthcheck"),
                     timeout_seconds=config.start_timeout_seconds, child=child)
    return base_url


def wait_for_cluster_inventory(
    group: ProcessGroup, config: EmbeddedConfig, api_url: str, token: str, worker: ManagedProcess
) -> int:
    """Wait until the worker's first inventory sweep has recorded free GPUs; return how many.

    Admission counts GPUs from the node rows that sweep writes, so a create sent before it would be refused
    with ``insufficient_gpu`` although the cluster is empty. Only used with the embedded cluster, which
    always has free GPUs at start; a real cluster may legitimately be full.
    """
    url = f"{api_url}/internal/resources/available"

    def free_gpus_recorded() -> int:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback URL we built
            body = json.loads(response.read())
        free = sum(gpu_type.get("free_total", 0) for gpu_type in body.get("gpu_types", {}).values())
        if free <= 0:
            raise NotReadyError("no free GPUs recorded yet (the worker's first resource-tracker sweep)")
        return free

    return wait_until_ready(
        group, "the GPU inventory", free_gpus_recorded, timeout_seconds=config.start_timeout_seconds, child=worker
    )


def mint_token(env: Mapping[str, str], *, tenant: str, scope: str, subject: str) -> str:
    """A bearer token from the documented command, ``python -m web.tokens``, signed with the run's secret."""
    completed = subprocess.run(  # noqa: S603 - fixed argv
        [
            sys.executable, "-m", "web.tokens",
            "--tenant", tenant,
            "--scope", scope,
            "--sub", subject,
            "--ttl", str(BANNER_TOKEN_TTL_SECONDS),
        ],
        env=dict(env),
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        # Its own session: a Ctrl-C in the terminal is the supervisor's to handle, not a reason to fail here.
        start_new_session=True,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"python -m web.tokens failed ({completed.returncode}): {completed.stderr.strip()}")
    token = completed.stdout.strip().splitlines()[-1] if completed.stdout.strip() else ""
    if not token:
        raise RuntimeError("python -m web.tokens printed no token")
    return token
