"""kubesim: a simulated GPU Kubernetes cluster served over the real Kubernetes REST API.

`SimCluster` (kubesim.cluster) starts one in-process for tests; `python -m kubesim` serves one for
interactive use. kubesim stands alone: it imports nothing from the service's packages.
"""

from __future__ import annotations

__all__ = ["SimCluster", "Simulation"]


def __getattr__(name: str) -> object:
    # Lazy, so `import kubesim.store` stays cheap and free of import cycles.
    if name == "SimCluster":
        from kubesim.cluster import SimCluster

        return SimCluster
    if name == "Simulation":
        from kubesim.sim import Simulation

        return Simulation
    raise AttributeError(name)
