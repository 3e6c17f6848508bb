"""`python -m embedded` (what `make run` starts) as a user runs it: the CI check of the embedded run.

Start the supervisor on a temporary data directory and free ports, read the banner, create a deployment
through the API with the printed token, see it RUNNING, check Flower answers, delete it, see it DELETED,
Ctrl-C (SIGINT): exit code 0 and no child left. Start again on the same data directory: the deployment row
is still there, and the first run's token still works (the JWT secret is kept).

On failure the test prints the supervisor's output and the end of every child's log (``<data dir>/logs``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BANNER_TIMEOUT_SECONDS = 240
RUNNING_TIMEOUT_SECONDS = 240
DELETED_TIMEOUT_SECONDS = 180
STOP_TIMEOUT_SECONDS = 90
# Variables that would make the embedded run use this machine's servers instead of its own.
# (CELERY_CONFIG_MODULE: other end-to-end tests point Celery at an isolated config through it.)
REPLACING_VARIABLES = (
    "DATABASE_URL", "REDIS_URL", "KUBECONFIG", "K8S_CONTEXT", "JWT_SECRET", "PORT", "FLOWER_PORT",
    "CELERY_CONFIG_MODULE",
)

pytestmark = pytest.mark.timeout(900)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EmbeddedRun:
    """One `python -m embedded` process; its merged stdout/stderr is collected by a reader thread."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        environment = {key: value for key, value in os.environ.items() if key not in REPLACING_VARIABLES}
        environment.update(
            EMBEDDED_DATA_DIR=str(data_dir),
            PORT=str(_free_port()),
            FLOWER_PORT=str(_free_port()),
            PYTHONUNBUFFERED="1",
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "embedded"],
            cwd=REPO,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_banner(self) -> dict[str, str]:
        """The API URL, Flower URL and tokens, once the banner is printed."""
        deadline = time.monotonic() + BANNER_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            text = self.output
            admin = re.search(r"export ADMIN_TOKEN=(\S+)", text)
            if admin:
                return {
                    "api": re.search(r"^ API\s+(http\S+)", text, re.MULTILINE)[1],
                    "flower": re.search(r"^ Flower\s+(http\S+)", text, re.MULTILINE)[1],
                    "token": re.search(r"export TOKEN=(\S+)", text)[1],
                    "admin_token": admin[1],
                }
            if self.process.poll() is not None:
                pytest.fail(f"python -m embedded exited with {self.process.returncode} before the banner")
            time.sleep(0.5)
        pytest.fail(f"no banner after {BANNER_TIMEOUT_SECONDS}s")

    def interrupt(self) -> int:
        """Ctrl-C, as a terminal sends it; the exit code."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        finally:
            self._reader.join(timeout=10)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self._reader.join(timeout=10)

    def children(self) -> list[dict[str, Any]]:
        return json.loads((self.data_dir / "embedded-children.json").read_text())


def _alive(pid: int) -> bool:
    """Running and not a zombie (an exited child waiting to be reaped by init counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _api(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _poll_status(base: str, token: str, deployment_id: str, wanted: str, timeout: float) -> dict[str, Any]:
    """Poll the deployment until its status is ``wanted``; FAILED on the way fails the test at once."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        code, last = _api("GET", f"{base}/internal/deployments/{deployment_id}", token)
        assert code == 200, last
        if last["status"] == wanted:
            return last
        assert last["status"] != "FAILED", last
        time.sleep(1)
    pytest.fail(f"deployment {deployment_id} not {wanted} after {timeout}s; last status: {last}")


def _report(run: EmbeddedRun | None) -> str:
    """Everything needed to diagnose a failure: the supervisor's output and each child's log tail."""
    if run is None:
        return ""
    parts = [f"--- python -m embedded output ---\n{run.output}"]
    for log in sorted((run.data_dir / "logs").glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        parts.append(f"--- {log.name} (last 60 lines) ---\n" + "\n".join(lines[-60:]))
    return "\n".join(parts)


def _stop_and_check_every_child_exited(run: EmbeddedRun) -> None:
    children = run.children()
    assert {child["name"] for child in children} >= {"api", "worker", "beat", "flower", "postgres", "redis", "kubesim"}
    assert run.interrupt() == 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(child["pid"]) for child in children):
        time.sleep(0.2)
    assert [child["name"] for child in children if _alive(child["pid"])] == []
    assert "all processes stopped" in run.output


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """The run's data directory, outside pytest's temporary tree: as root, the embedded Postgres runs as an
    unprivileged user that must traverse every parent directory, and pytest resets its own tree to 0700
    whenever another session starts."""
    root = Path(tempfile.mkdtemp(prefix="embedded-e2e-"))
    try:
        yield root / "run"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_make_run_serves_a_deployment_end_to_end_and_keeps_its_data(data_dir: Path):
    run: EmbeddedRun | None = None
    try:
        run = EmbeddedRun(data_dir)
        banner = run.wait_for_banner()
        api, token = banner["api"], banner["token"]

        code, created = _api(
            "POST",
            f"{api}/internal/deployments/create",
            token,
            {"model_id": "Qwen/Qwen2.5-0.5B-Instruct", "replicas": 1, "gpus_per_replica": 1, "name": "e2e-qwen"},
        )
        assert code == 202, created
        deployment_id = created["deployment_id"]
        running = _poll_status(api, token, deployment_id, "RUNNING", RUNNING_TIMEOUT_SECONDS)
        assert running["replicas_ready"] == 1, running
        code, status = _api("GET", f"{api}/internal/deployments/{deployment_id}/status", token)
        assert code == 200, status
        assert status["status"] == "RUNNING", status
        assert status["replicas"] == {"desired": 1, "ready": 1}, status
        assert [pod["phase"] for pod in status["pods"]] == ["Running"], status
        code, job = _api("GET", f"{api}/internal/jobs/{created['job_id']}", token)
        assert code == 200, job
        assert job["type"] == "deployment.create", job
        assert job["state"] not in ("FAILED", "CANCELLED"), job

        with urllib.request.urlopen(f"{banner['flower']}/healthcheck", timeout=30) as response:
            assert response.status == 200
            assert response.read().strip() == b"OK"

        code, deleting = _api("DELETE", f"{api}/internal/deployments/{deployment_id}", token)
        assert code == 202, deleting
        _poll_status(api, token, deployment_id, "DELETED", DELETED_TIMEOUT_SECONDS)

        _stop_and_check_every_child_exited(run)
        assert (data_dir / "secret").exists()
        assert (data_dir / "kubesim-state.json").exists()  # the simulated cluster is kept too

        run = EmbeddedRun(data_dir)
        second_banner = run.wait_for_banner()
        # The first run's token still works: the secret was kept, not regenerated.
        code, kept = _api("GET", f"{second_banner['api']}/internal/deployments/{deployment_id}", token)
        assert code == 200, kept
        assert kept["id"] == deployment_id
        assert kept["status"] == "DELETED"

        _stop_and_check_every_child_exited(run)
    except BaseException:
        sys.stdout.write(_report(run) + "\n")
        raise
    finally:
        if run is not None:
            run.kill()
