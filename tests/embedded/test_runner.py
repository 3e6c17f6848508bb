"""`python -m embedded` start-up failures: clear message, non-zero exit, nothing left running."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run_embedded(tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "KUBECONFIG", "K8S_CONTEXT", "JWT_SECRET", "PORT")
    }
    environment.update(EMBEDDED_DATA_DIR=str(tmp_path / "run"), **overrides)
    return subprocess.run(
        [sys.executable, "-m", "embedded"], cwd=REPO, env=environment, capture_output=True, text=True, timeout=120,
        check=False,
    )


def test_a_bad_setting_exits_2_before_starting_anything(tmp_path: Path):
    result = _run_embedded(tmp_path, PORT="eighty")

    assert result.returncode == 2
    assert "configuration error: PORT must be a TCP port number" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_bad_service_setting_is_caught_too(tmp_path: Path):
    result = _run_embedded(tmp_path, LOG_LEVEL="LOUD")

    assert result.returncode == 2
    assert "LOG_LEVEL must be one of" in result.stderr


def test_a_busy_api_port_exits_1_with_the_variable_to_change(tmp_path: Path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy_port = listener.getsockname()[1]
        result = _run_embedded(tmp_path, PORT=str(busy_port))

    assert result.returncode == 1
    assert f"port {busy_port} on 127.0.0.1 is not available" in result.stderr
    assert "set PORT to another port" in result.stderr
    assert "all processes stopped" in result.stderr
    # Checked before any data service started: no Postgres was initialised for nothing.
    assert not (tmp_path / "run" / "postgres").exists()
