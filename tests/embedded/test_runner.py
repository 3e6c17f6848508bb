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


def test_ctrl_c_during_start_up_stops_what_was_started_and_exits_0(data_root: Path):
    import json
    import signal
    import time

    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "KUBECONFIG", "K8S_CONTEXT", "JWT_SECRET")
    }
    environment.update(EMBEDDED_DATA_DIR=str(data_root / "run"), PORT="0", FLOWER_PORT="0")
    runner = subprocess.Popen(
        [sys.executable, "-m", "embedded"], cwd=REPO, env=environment, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert runner.stderr is not None
        seen = []
        for line in runner.stderr:  # Postgres and Redis are up once kubesim is being started
            seen.append(line)
            if "starting kubesim" in line:
                break
        assert any("starting kubesim" in line for line in seen), seen
        runner.send_signal(signal.SIGINT)
        _, rest = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()

    assert runner.returncode == 0, rest
    assert "stop requested during start-up" in rest
    assert "all processes stopped" in rest
    children = json.loads((data_root / "run" / "embedded-children.json").read_text())
    assert {"postgres", "redis"} <= {child["name"] for child in children}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{child['pid']}").exists() for child in children):
        time.sleep(0.1)
    assert [child["name"] for child in children if Path(f"/proc/{child['pid']}").exists()] == []
