"""A small stdlib client for kubesim's /_sim/ admin API, for tests and tools in other processes.

    admin = SimAdminClient("http://127.0.0.1:PORT")
    admin.advance(120)
    admin.fail_node("h100-80gb-0", mode="Unknown")
    fault_id = admin.add_fault({"resource": "pods", "verb": "list", "count": 4, "action": {"status": 500}})
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode


class SimAdminError(Exception):
    """The admin API answered with an error status; `body` is its decoded JSON (or text)."""

    def __init__(self, status: int, body: Any) -> None:
        message = body.get("error") or body.get("message") if isinstance(body, dict) else body
        super().__init__(f"kubesim admin API returned {status}: {message}")
        self.status = status
        self.body = body


class SimAdminClient:
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
        url = f"{self.base_url}/_sim{path}"
        if query:
            url += "?" + urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method,  # noqa: S310 (http URL by construction)
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                decoded: Any = json.loads(raw)
            except ValueError:
                decoded = raw.decode("utf-8", "replace")
            raise SimAdminError(exc.code, decoded) from None

    # clock
    def clock(self) -> dict[str, Any]:
        return self._call("GET", "/clock")

    def now(self) -> float:
        return float(self.clock()["now"])

    def advance(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "/clock/advance", {"seconds": seconds})

    def settle(self, timeout: float = 10.0) -> None:
        self._call("POST", "/settle", {"timeout": timeout})

    # nodes
    def add_nodes(self, spec: str) -> list[str]:
        return self._call("POST", "/nodes", {"spec": spec})["nodes"]

    def remove_node(self, name: str) -> None:
        self._call("DELETE", f"/nodes/{quote(name, safe='')}")

    def fail_node(self, name: str, mode: str = "NotReady") -> None:
        self._call("POST", f"/nodes/{quote(name, safe='')}/fail", {"mode": mode})

    def recover_node(self, name: str) -> None:
        self._call("POST", f"/nodes/{quote(name, safe='')}/recover", {})

    def set_node_gpus(self, name: str, allocatable: int) -> None:
        self._call("POST", f"/nodes/{quote(name, safe='')}/gpus", {"allocatable": allocatable})

    # load
    def set_load(self, namespace: str, deployment: str, load: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", f"/load/{quote(namespace, safe='')}/{quote(deployment, safe='')}", load)

    def loads(self) -> list[dict[str, Any]]:
        return self._call("GET", "/load")["loads"]

    # pod behaviours
    def add_pod_behavior(self, behavior: dict[str, Any]) -> str:
        return self._call("POST", "/pod-behaviors", behavior)["id"]

    def pod_behaviors(self) -> list[dict[str, Any]]:
        return self._call("GET", "/pod-behaviors")["behaviors"]

    def remove_pod_behavior(self, behavior_id: str) -> None:
        self._call("DELETE", f"/pod-behaviors/{quote(behavior_id, safe='')}")

    def clear_pod_behaviors(self) -> None:
        self._call("DELETE", "/pod-behaviors")

    # faults
    def add_fault(self, rule: dict[str, Any]) -> str:
        return self._call("POST", "/faults", rule)["id"]

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "/faults")["faults"]

    def remove_fault(self, fault_id: str) -> None:
        self._call("DELETE", f"/faults/{quote(fault_id, safe='')}")

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    # request log
    def requests(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        query = {k: v for k, v in (("method", method), ("path", path)) if v}
        return self._call("GET", "/requests", query=query)["requests"]

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    # metrics switch, snapshots
    def set_metrics_available(self, available: bool) -> None:
        self._call("POST", "/metrics", {"available": available})

    def snapshot(self) -> dict[str, Any]:
        return self._call("GET", "/snapshot")

    def restore(self, snapshot: dict[str, Any]) -> None:
        self._call("POST", "/restore", snapshot)

    def reset(self) -> None:
        self._call("POST", "/reset", {})
