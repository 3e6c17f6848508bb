"""The DaemonSet controller: one pod per eligible node, placed through the scheduler.

As kube-controller-manager does since 1.12, each daemon pod gets a required node affinity on
`metadata.name` for its node and the scheduler binds it; daemon pods tolerate the not-ready,
unreachable, pressure and unschedulable taints, so they survive node trouble and drains must skip
them (`kubectl drain --ignore-daemonsets`).

`Simulation(with_daemonsets=True)` (the CLI's `--with-daemonsets`) installs the NVIDIA device plugin
DaemonSet in kube-system, selecting nodes labelled `nvidia.com/gpu.present=true`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from kubesim import errors
from kubesim.controllers.common import (
    Controller,
    Obj,
    controller_keys,
    create_owned_pod,
    is_active,
    is_deleting,
    is_pod_available,
    is_pod_ready,
    own_keys,
    templated_pod_metadata,
    write_status,
)
from kubesim.controllers.scheduler import NodeInfo, static_verdict
from kubesim.store import WatchEvent, clone

DAEMON_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]

DEVICE_PLUGIN = {
    "metadata": {"name": "nvidia-device-plugin-daemonset", "namespace": "kube-system",
                 "labels": {"app.kubernetes.io/name": "nvidia-device-plugin"}},
    "spec": {
        "selector": {"matchLabels": {"name": "nvidia-device-plugin-ds"}},
        "updateStrategy": {"type": "RollingUpdate"},
        "template": {
            "metadata": {"labels": {"name": "nvidia-device-plugin-ds"}},
            "spec": {
                "priorityClassName": "system-node-critical",
                "nodeSelector": {"nvidia.com/gpu.present": "true"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [{
                    "name": "nvidia-device-plugin-ctr",
                    "image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.0",
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                }],
            },
        },
    },
}


class DaemonSetController(Controller):
    name = "daemonset"
    ignores_own_writes = True
    resync_plural = "daemonsets"

    def keys_for(self, event: WatchEvent) -> Iterable[Hashable]:
        if event.plural == "daemonsets":
            return own_keys(event)
        if event.plural == "pods":
            return controller_keys(event, "DaemonSet")
        if event.plural == "nodes" and event.type in ("ADDED", "DELETED"):
            return self.resync_keys()
        return ()

    def reconcile(self, key: Hashable) -> None:
        namespace, name = key  # type: ignore[misc]
        with self.store.lock:
            ds = self.store.try_get("daemonsets", namespace, name)
            if ds is None or is_deleting(ds):
                return
            uid = ds["metadata"]["uid"]
            owned = self.sim.owners.controlled(uid, "pods")
            by_node: dict[str, list[Obj]] = {}
            for pod in owned:
                if is_active(pod):
                    by_node.setdefault(_target_node(pod), []).append(pod)
            template_pod = {"spec": dict((ds["spec"].get("template") or {}).get("spec") or {})}
            template_pod["spec"]["tolerations"] = self._tolerations(ds)
            wanted = []
            for node in self.store.list("nodes")[0]:
                info = NodeInfo(node)
                info.unschedulable = False  # daemon pods tolerate cordons
                if static_verdict(template_pod, info) is None:
                    wanted.append(node["metadata"]["name"])
            for node_name in wanted:
                if node_name not in by_node:
                    self._create_pod(ds, node_name)
            for node_name, pods in by_node.items():
                extra = pods[1:] if node_name in wanted else pods
                for pod in extra:
                    try:
                        self.store.delete("pods", namespace, pod["metadata"]["name"])
                    except errors.ApiError:
                        continue
            self._update_status(ds, wanted)

    def _tolerations(self, ds: Obj) -> list[Obj]:
        tolerations = list(((ds["spec"].get("template") or {}).get("spec") or {}).get("tolerations") or [])
        for toleration in DAEMON_TOLERATIONS:
            if toleration not in tolerations:
                tolerations.append(dict(toleration))
        return tolerations

    def _create_pod(self, ds: Obj, node_name: str) -> None:
        spec = clone((ds["spec"].get("template") or {}).get("spec") or {})
        spec["tolerations"] = self._tolerations(ds)
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [node_name]}]}]}}}
        create_owned_pod(self.sim, ds, {"metadata": templated_pod_metadata(ds), "spec": spec}, "daemonset-controller")

    def _update_status(self, ds: Obj, wanted: list[str]) -> None:
        uid = ds["metadata"]["uid"]
        pods = [p for p in self.sim.owners.controlled(uid, "pods") if is_active(p)]
        scheduled = [p for p in pods if p["spec"].get("nodeName")]
        ready = [p for p in scheduled if is_pod_ready(p)]
        min_ready = int(ds["spec"].get("minReadySeconds") or 0)
        available = [p for p in ready if is_pod_available(p, min_ready, self.sim.clock.now())]
        status = {
            "currentNumberScheduled": len([p for p in scheduled if p["spec"]["nodeName"] in wanted]),
            "desiredNumberScheduled": len(wanted),
            "numberMisscheduled": len([p for p in scheduled if p["spec"]["nodeName"] not in wanted]),
            "numberReady": len(ready),
            "numberAvailable": len(available),
            "numberUnavailable": max(0, len(wanted) - len(available)),
            "updatedNumberScheduled": len(scheduled),
            "observedGeneration": ds["metadata"].get("generation", 1),
        }
        write_status(self.store, "daemonsets", ds, status, omit_if_zero=("numberAvailable", "numberUnavailable"))


def _target_node(pod: Obj) -> str:
    """The node a daemon pod is for: its binding, or the node its affinity pins it to."""
    if pod["spec"].get("nodeName"):
        return pod["spec"]["nodeName"]
    terms = ((((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {})
              .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or [])
    for term in terms:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("values"):
                return field["values"][0]
    return ""


def install_device_plugin(store: Any) -> None:
    if store.try_get("daemonsets", "kube-system", DEVICE_PLUGIN["metadata"]["name"]) is None:
        store.create("daemonsets", clone(DEVICE_PLUGIN))
