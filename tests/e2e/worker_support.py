"""Real Celery processes for end-to-end tests, isolated from every other run sharing the Redis server.

Each :class:`CeleryProcesses` picks a unique broker key prefix and writes a Celery config module that
imports the project's ``celeryconfig`` and adds that prefix (plus any broker options the test needs, such
as a short visibility timeout), so workers started here, the sender the test publishes through and the
sweep locks (which live under the broker prefix) never meet another run's keys. The processes are
configured only through the environment, exactly as deployed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

import settings as settings_module
from kubesim.cluster import SimCluster
from workers import k8s
from workers.queues import Queues

REPOSITORY = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float, interval: float = 0.2) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def cluster_for_this_process(
    work_dir: Path, monkeypatch: pytest.MonkeyPatch, **cluster_options: Any
) -> Iterator[tuple[SimCluster, Path]]:
    """A real-time SimCluster that this process's Kubernetes client (and settings) point at, and its kubeconfig.

    The cached settings and client are dropped on the way in and out, so neither leaks into other tests.
    """
    with SimCluster(virtual_clock=False, **cluster_options) as cluster:
        kubeconfig = cluster.write_kubeconfig(work_dir / "kubeconfig")
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        settings_module.get_settings.cache_clear()
        k8s.reset_client()
        try:
            yield cluster, kubeconfig
        finally:
            k8s.reset_client()
            settings_module.get_settings.cache_clear()


class CeleryProcesses:
    """A private broker prefix with its config module, a sender publishing under it, and the processes started."""

    def __init__(self, label: str, work_dir: Path, redis_url: str, broker_options: dict[str, Any]) -> None:
        self.prefix = f"{label}-{uuid.uuid4().hex[:10]}"
        self.work_dir = work_dir
        self.redis_url = redis_url
        self.config_dir = work_dir / "config"
        self.config_dir.mkdir()
        self.config_module = f"celeryconfig_{self.prefix.replace('-', '_')}"
        options = {**broker_options, "global_keyprefix": f"{self.prefix}:"}
        (self.config_dir / f"{self.config_module}.py").write_text(
            f"from celeryconfig import *  # noqa: F403\nbroker_transport_options = {options!r}\n"
        )
        self.sender = Celery(f"{label}-sender", broker=redis_url, set_as_current=False)
        self.sender.conf.broker_transport_options = {"global_keyprefix": f"{self.prefix}:"}
        self.sender.conf.task_serializer = "json"
        self.env: dict[str, str] = {}
        self.processes: list[subprocess.Popen] = []

    def configure(self, database_url: str, kubeconfig: Path, **settings: str) -> None:
        """The environment every process gets: this run's database, cluster and Celery config, plus ``settings``."""
        self.env = dict(os.environ)
        self.env.update(
            DATABASE_URL=database_url,
            KUBECONFIG=str(kubeconfig),
            CELERY_CONFIG_MODULE=self.config_module,
            PYTHONPATH=os.pathsep.join([str(self.config_dir), str(REPOSITORY)]),
            **settings,
        )

    def start(self, name: str, *arguments: str) -> subprocess.Popen:
        """``celery -A workers.celery_app <arguments>`` in its own process group, logging to ``<name>-<n>.log``."""
        log = (self.work_dir / f"{name}-{len(self.processes)}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", *arguments],
            cwd=REPOSITORY, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.processes.append(process)
        return process

    def start_worker(self) -> subprocess.Popen:
        """A worker on every queue, with a hostname of its own so several can run side by side."""
        return self.start(
            "worker", "worker", "--queues", ",".join(Queues.all()), "--concurrency", "2",
            "--hostname", f"{self.prefix}-{len(self.processes)}@%h",
            "--without-mingle", "--without-gossip", "--loglevel", "INFO",
        )

    def wait_for_worker(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sender.control.inspect(timeout=1).ping():
                return
        raise AssertionError("the worker did not start")

    @staticmethod
    def kill(process: subprocess.Popen) -> None:
        """SIGKILL the process and its pool children: no warm shutdown, no chance to ack or requeue."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def close(self) -> None:
        """Stop every process (warm shutdown first), close the sender and delete this run's Redis keys."""
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=5)
        self.sender.close()
        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"{self.prefix}:*"))
        if keys:
            client.delete(*keys)
