"""`python -m kubesim`: starts, writes a kubeconfig, serves the client and kubectl, exits 0 on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import kubernetes
import pytest

from tests.kubesim.conftest import kubectl_binary

READY_PREFIX = "kubesim ready: "


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], str, Path]:
    kubeconfig = tmp_path / "kubeconfig.yaml"
    process = subprocess.Popen(
        [sys.executable, "-m", "kubesim", "--port", "0", "--nodes", "2xnvidia-l40s:8,1xnvidia-h100-80gb:8",
         "--kubeconfig", str(kubeconfig), "--seed", "3", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith(READY_PREFIX):
        process.kill()
        pytest.fail(f"no ready line: {line!r} {process.stderr.read() if process.stderr else ''}")
    url, _, path = line[len(READY_PREFIX):].strip().partition(" kubeconfig=")
    assert Path(path) == kubeconfig
    return process, url, kubeconfig


def _stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()


def test_cli_serves_client_and_kubectl_then_exits_cleanly_on_sigterm(tmp_path):
    process, url, kubeconfig = _start(tmp_path, "--speed", "60")
    try:
        assert url.startswith("http://127.0.0.1:")
        assert f"server: {url}" in kubeconfig.read_text()
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        nodes = kubernetes.client.CoreV1Api(api).list_node().items
        assert sorted(n.metadata.name for n in nodes) == ["h100-80gb-0", "l40s-0", "l40s-1"]
        assert nodes[0].metadata.labels["nvidia.com/gpu.product"] == "nvidia-h100-80gb"
        api.close()
        env = {**os.environ, "KUBECACHEDIR": str(tmp_path / "cache")}
        result = subprocess.run([kubectl_binary(), "--kubeconfig", str(kubeconfig), "get", "nodes"],
                                capture_output=True, text=True, env=env, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert "l40s-0" in result.stdout
        assert "Ready" in result.stdout
    finally:
        code = _stop(process)
    assert code == 0


def test_cli_virtual_clock_is_driven_by_the_admin_api(tmp_path):
    from kubesim.admin_client import SimAdminClient

    process, url, _ = _start(tmp_path, "--virtual")
    try:
        admin = SimAdminClient(url)
        before = admin.clock()
        assert before["virtual"] is True
        admin.advance(30)
        assert admin.clock()["now"] - before["now"] == pytest.approx(30)
    finally:
        assert _stop(process) == 0


@pytest.mark.parametrize("args", [
    ["--nodes", "lots-of-gpus"], ["--speed", "0"], ["--port", "99999"],
])
def test_cli_rejects_bad_arguments(tmp_path, args):
    result = subprocess.run(
        [sys.executable, "-m", "kubesim", "--kubeconfig", str(tmp_path / "kc"), *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 2
    assert "error" in result.stderr


def test_cli_state_file_keeps_the_cluster_across_a_restart(tmp_path):
    state = tmp_path / "state.json"
    process, _, kubeconfig = _start(tmp_path, "--speed", "200", "--state", str(state))
    try:
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": "kept"}})
        core.create_namespaced_pod("kept", {
            "metadata": {"name": "survivor"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        })
        api.close()
    finally:
        assert _stop(process) == 0
    assert state.exists()

    process, _, kubeconfig = _start(tmp_path, "--speed", "200", "--state", str(state))
    try:
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        pod = kubernetes.client.CoreV1Api(api).read_namespaced_pod("survivor", "kept")
        assert pod.metadata.namespace == "kept"
        api.close()
    finally:
        assert _stop(process) == 0
