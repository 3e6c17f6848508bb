"""The Endpoints controller: a Service's selector → the IPs of its ready (and not-ready) pods.

Services without a selector are left alone (their Endpoints are managed by hand, as on a cluster);
deleting a Service deletes the Endpoints of the same name.
Terminating pods drop out at once; pods that are not Ready go to `notReadyAddresses` unless the
Service sets `publishNotReadyAddresses`. Named target ports are resolved from each pod's containers.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from kubesim import errors
from kubesim.controllers.common import Controller, Obj, is_deleting, is_pod_ready, is_terminal, key_of
from kubesim.selectors import SelectorIndex
from kubesim.store import WatchEvent


class EndpointsController(Controller):
    name = "endpoints"
    ignores_own_writes = True
    resync_plural = "services"

    def reset(self) -> None:
        # The Services that select a pod, found without testing every Service of the namespace per pod event.
        self._services = SelectorIndex(_selector_selects)
        for service in self.store.list("services")[0]:
            self._index(service, deleted=False)

    def keys_for(self, event: WatchEvent) -> Iterable[Hashable]:
        if event.plural == "services":
            self._index(event.obj, deleted=event.type == "DELETED")
            return (key_of(event.obj),)
        if event.plural == "pods":
            return self._services.matching(event.namespace, event.obj["metadata"].get("labels") or {})
        return ()

    def _index(self, service: Obj, deleted: bool) -> None:
        selector = (service.get("spec") or {}).get("selector")
        if deleted or not selector:
            self._services.remove(key_of(service))  # an empty selector selects no pod
        else:
            self._services.put(key_of(service), selector, selector)

    def reconcile(self, key: Hashable) -> None:
        namespace, name = key  # type: ignore[misc]
        with self.store.lock:
            service = self.store.try_get("services", namespace, name)
            current = self.store.try_get("endpoints", namespace, name)
            if service is None or is_deleting(service):
                if current is not None:  # as the real controller does, whoever wrote them
                    self.store.delete("endpoints", namespace, name)
                return
            if not (service.get("spec") or {}).get("selector"):
                return  # selector-less Service: Endpoints are the user's
            subsets = self._subsets(service)
            labels = dict(service["metadata"].get("labels") or {})
            if (service.get("spec") or {}).get("clusterIP") == "None":
                labels["service.kubernetes.io/headless"] = ""
            if current is None:
                body: Obj = {"metadata": {"name": name, "namespace": namespace, "labels": labels}}
                if subsets:
                    body["subsets"] = subsets
                try:
                    self.store.create("endpoints", body)
                except errors.ApiError:
                    return
                return
            if current.get("subsets", []) != subsets or (current["metadata"].get("labels") or {}) != labels:
                metadata = dict(current["metadata"], labels=labels) if labels else {
                    k: v for k, v in current["metadata"].items() if k != "labels"}
                new = dict(current, metadata=metadata)
                if subsets:
                    new["subsets"] = subsets
                else:
                    new.pop("subsets", None)
                self.store.write("endpoints", current, new)

    def _subsets(self, service: Obj) -> list[Obj]:
        spec = service.get("spec") or {}
        publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
        pods = self.store.pods_with_labels(service["metadata"]["namespace"], spec["selector"])
        ready, not_ready = [], []
        for pod in pods:
            status = pod.get("status") or {}
            if is_terminal(pod) or is_deleting(pod) or not status.get("podIP"):
                continue
            address = {"ip": status["podIP"], "nodeName": pod["spec"].get("nodeName"),
                       "targetRef": {"kind": "Pod", "namespace": pod["metadata"]["namespace"],
                                     "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}}
            (ready if is_pod_ready(pod) or publish_not_ready else not_ready).append(address)
        if not ready and not not_ready:
            return []
        ports = []
        for port in spec.get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            if isinstance(target, str) and not target.isdigit():
                target = _named_port(pods, target)
                if target is None:
                    continue
            entry = {"port": int(target), "protocol": port.get("protocol", "TCP")}
            if port.get("name"):
                entry["name"] = port["name"]
            ports.append(entry)
        subset: Obj = {}
        if ready:
            subset["addresses"] = sorted(ready, key=lambda a: a["ip"])
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
        if ports:
            subset["ports"] = ports
        return [subset]


def _selector_selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _named_port(pods: list[Obj], name: str) -> int | None:
    for pod in pods:
        for container in pod["spec"].get("containers") or []:
            for port in container.get("ports") or []:
                if port.get("name") == name and port.get("containerPort"):
                    return int(port["containerPort"])
    return None
