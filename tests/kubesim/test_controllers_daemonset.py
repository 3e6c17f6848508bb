"""The optional DaemonSet controller: the NVIDIA device plugin on every GPU node, skipped by drains."""

from __future__ import annotations

import subprocess
import time

import pytest

from kubesim.cluster import SimCluster
from kubesim.sim import Simulation
from tests.kubesim.conftest import Kubectl
from tests.kubesim.test_controllers_support import deployment, deployment_ready, is_ready


def _daemon_pods(sim):
    return [p for p in sim.store.list("pods", "kube-system")[0]
            if p["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"]


def test_device_plugin_runs_once_per_gpu_node_and_follows_node_changes():
    sim = Simulation(nodes="2xnvidia-l40s:8,1xcpu:0", seed=2, with_daemonsets=True)
    sim.start()
    try:
        sim.settle()
        pods = _daemon_pods(sim)
        assert sorted(p["spec"]["nodeName"] for p in pods) == ["l40s-0", "l40s-1"]
        sim.advance(200)
        assert all(is_ready(p) for p in _daemon_pods(sim))
        status = sim.store.get("daemonsets", "kube-system", "nvidia-device-plugin-daemonset")["status"]
        assert (status["desiredNumberScheduled"], status["currentNumberScheduled"], status["numberReady"]) == \
            (2, 2, 2)
        sim.add_nodes("1xnvidia-h100-80gb:8")
        sim.settle()
        assert sorted(p["spec"]["nodeName"] for p in _daemon_pods(sim)) == ["h100-80gb-0", "l40s-0", "l40s-1"]
        sim.remove_node("l40s-1")
        sim.settle()
        assert sorted(p["spec"]["nodeName"] for p in _daemon_pods(sim)) == ["h100-80gb-0", "l40s-0"]
        assert sim.errors == []
    finally:
        sim.stop()


@pytest.fixture
def daemon_cluster(tmp_path):
    with SimCluster(nodes="2xnvidia-l40s:8", seed=5, with_daemonsets=True) as cluster:
        cluster.kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        yield cluster


def test_kubectl_drain_ignores_daemonset_pods_and_evicts_the_rest(daemon_cluster, tmp_path):
    sim = daemon_cluster.sim
    sim.store.create("deployments", deployment("model", replicas=1, gpus=4))
    assert sim.run_until(lambda: deployment_ready(sim, "model"), timeout=600)
    node = next(p for p in sim.store.list("pods", "default")[0])["spec"]["nodeName"]
    (tmp_path / "cache").mkdir()
    kubectl = Kubectl(daemon_cluster.kubeconfig, tmp_path / "cache")
    drain = subprocess.Popen(
        [kubectl.binary, "--kubeconfig", str(kubectl.kubeconfig), "drain", node, "--ignore-daemonsets",
         "--timeout=60s"], env=kubectl.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while drain.poll() is None and time.monotonic() < deadline:
            daemon_cluster.advance(2)
            time.sleep(0.1)
        out, err = drain.communicate(timeout=30)
    finally:
        if drain.poll() is None:
            drain.kill()
    assert drain.returncode == 0, err
    assert "Ignoring DaemonSet-managed Pods" in err or "ignoring DaemonSet-managed Pods" in err
    assert f"node/{node} drained" in out
    daemon_on_node = [p for p in _daemon_pods(sim) if p["spec"]["nodeName"] == node]
    assert len(daemon_on_node) == 1
    assert not daemon_on_node[0]["metadata"].get("deletionTimestamp")
    model_pods = sim.store.list("pods", "default")[0]
    assert all(p["spec"].get("nodeName") != node for p in model_pods)
