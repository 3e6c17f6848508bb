"""`SimCluster`: a Simulation plus its API server on loopback, started in daemon threads.

    with SimCluster(nodes="2xnvidia-l40s:8", seed=7) as cluster:
        cluster.write_kubeconfig(tmp_path / "kubeconfig")
        ...                     # official client or kubectl against cluster.url
        cluster.advance(120)    # virtual clock: two minutes of model loading in milliseconds
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubesim.clock import ScaledClock, VirtualClock
from kubesim.sim import Simulation

KUBECONFIG_TOKEN = "kubesim-token"  # noqa: S105 (a fixed, documented token for a loopback simulator)


def kubeconfig_text(url: str, token: str = KUBECONFIG_TOKEN) -> str:
    """A kubeconfig that both `kubernetes.config.load_kube_config` and kubectl accept."""
    return (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        "- name: kubesim\n"
        "  cluster:\n"
        f"    server: {url}\n"
        "users:\n"
        "- name: kubesim\n"
        "  user:\n"
        f"    token: {token}\n"
        "contexts:\n"
        "- name: kubesim\n"
        "  context:\n"
        "    cluster: kubesim\n"
        "    user: kubesim\n"
        "    namespace: default\n"
        "current-context: kubesim\n"
        "preferences: {}\n"
    )


class SimCluster:
    """A running simulated cluster: `url`, `sim`, `store`, `server`, `faults` once started."""

    def __init__(
        self,
        nodes: str = "2xnvidia-l40s:8",
        seed: int = 0,
        virtual_clock: bool = True,
        speed: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        with_daemonsets: bool = False,
    ) -> None:
        clock = VirtualClock() if virtual_clock else ScaledClock(speed)
        self.sim = Simulation(nodes=nodes, seed=seed, clock=clock, with_daemonsets=with_daemonsets)
        self.store = self.sim.store
        self.host, self.port = host, port
        self.server: Any = None
        self.faults: Any = None
        self.url = ""
        self._serve_thread: threading.Thread | None = None

    def start(self) -> SimCluster:
        from kubesim.faults import FaultInjector
        from kubesim.server import make_server

        self.sim.start()
        self.faults = FaultInjector(seed=self.sim.seed)
        try:
            self.server = make_server(self.sim, self.host, self.port, self.faults)
        except Exception:
            self.sim.stop()  # e.g. the port is taken: do not leave a controller thread behind
            raise
        self.url = self.server.url
        # A short poll interval makes stop() (server.shutdown) return promptly in test teardown.
        self._serve_thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                              name="kubesim-api", daemon=True)
        self._serve_thread.start()
        self.sim.settle()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self._serve_thread is not None:
            self._serve_thread.join(timeout=10)
            self._serve_thread = None
        self.sim.stop()

    def __enter__(self) -> SimCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> Path:
        if not self.url:
            raise RuntimeError("start the cluster before writing its kubeconfig")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(kubeconfig_text(self.url))
        return target

    def advance(self, seconds: float) -> None:
        self.sim.advance(seconds)

    def settle(self, timeout: float = 10.0) -> None:
        self.sim.settle(timeout)

    def run_until(self, predicate: Callable[[], bool], timeout: float, step: float = 1.0) -> bool:
        return self.sim.run_until(predicate, timeout, step)
