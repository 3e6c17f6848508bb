"""Controllers that make the store behave like a cluster; `build_controllers` wires them in event order.

The owner index comes first so that every later controller sees dependents of the event's object.
"""

from __future__ import annotations

from typing import Any

from kubesim.controllers.daemonset import DaemonSetController
from kubesim.controllers.deployment import DeploymentController
from kubesim.controllers.endpoints import EndpointsController
from kubesim.controllers.gc import GarbageCollector
from kubesim.controllers.kubelet import Kubelet
from kubesim.controllers.namespace import NamespaceController
from kubesim.controllers.node_lifecycle import NodeLifecycleController
from kubesim.controllers.owners import OwnerIndex
from kubesim.controllers.pdb import DisruptionController
from kubesim.controllers.replicaset import ReplicaSetController
from kubesim.controllers.scheduler import Scheduler


def build_controllers(sim: Any) -> list[Any]:
    return [
        OwnerIndex(sim),
        NodeLifecycleController(sim),
        Scheduler(sim),
        Kubelet(sim),
        ReplicaSetController(sim),
        DeploymentController(sim),
        DaemonSetController(sim),
        DisruptionController(sim),
        EndpointsController(sim),
        GarbageCollector(sim),
        NamespaceController(sim),
    ]
