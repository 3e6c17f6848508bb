"""Cluster inventory -> Postgres: GpuNode rows from the node list, PodAllocation rows from the pod list.

The core of the resource tracker sweep (which adds utilization and drift checks on top) and what
admission reads, so it also runs once when a worker starts. Cost is constant in calls and statements:
one paginated node list, one paginated pod list, and a few set-based writes (multi-row upserts and
bulk updates), whatever the number of nodes or pods.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import FINISHED_POD_PHASES, Deployment, GpuNode, PodAllocation
from workers.k8s import KubeClients, get_clients
from workers.kube_calls import list_pages
from workers.manifests import (
    DEPLOYMENT_ID_LABEL,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    TENANT_LABEL,
)
from workers.observe import pod_columns, pod_view

GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
_BATCH = 1000


@dataclass
class InventorySnapshot:
    """What one pair of list calls returned, as plain dicts (no DB needed to build it)."""

    nodes: list[dict[str, Any]]
    pods: list[dict[str, Any]]


@dataclass
class InventoryResult:
    nodes_seen: int
    nodes_missing: int
    pods_seen: int
    pods_terminated: int
    list_calls: int


def _quantity_millicores(value: str | None) -> int:
    if not value:
        return 0
    value = str(value)
    if value.endswith("m"):
        return int(float(value[:-1]))
    return int(float(value) * 1000)


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def _quantity_bytes(value: str | None) -> int:
    if not value:
        return 0
    value = str(value)
    for suffix, factor in {**_BINARY, **_DECIMAL}.items():
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * factor)
    return int(float(value))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def fetch(clients: KubeClients) -> tuple[InventorySnapshot, int]:
    """List every node and every pod (paginated). Returns the snapshot and the number of list pages fetched.

    The pod list, by far the larger, runs on a second thread while this one lists the nodes: the API
    server encodes one while the client decodes the other. Each list counts its own pages.
    """
    pages = {"nodes": 0, "pods": 0}

    def listed(kind: str, function: Any) -> list[dict[str, Any]]:
        def count_page() -> None:
            pages[kind] += 1

        return list(list_pages(clients, function, on_page=count_page))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="inventory-pods") as pool:
        pods = pool.submit(listed, "pods", clients.core.list_pod_for_all_namespaces)
        nodes = listed("nodes", clients.core.list_node)
        snapshot = InventorySnapshot(nodes=nodes, pods=pods.result())  # re-raises the pod list's error here
    return snapshot, pages["nodes"] + pages["pods"]


def node_row(node: dict[str, Any], now: datetime) -> dict[str, Any]:
    metadata = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    labels = metadata.get("labels") or {}
    capacity = status.get("capacity") or {}
    allocatable = status.get("allocatable") or {}
    ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    ready_status = {"True": "Ready", "False": "NotReady"}.get(str(ready.get("status")), "Unknown")
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return {
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "internal_ip": addresses.get("InternalIP"),
        "hostname": addresses.get("Hostname") or labels.get("kubernetes.io/hostname"),
        "gpu_product": labels.get(GPU_PRODUCT_LABEL),
        "gpu_memory_mb": _int(labels.get(GPU_MEMORY_LABEL)) or None,
        "gpu_capacity": _int(capacity.get(GPU_RESOURCE)),
        "gpu_allocatable": _int(allocatable.get(GPU_RESOURCE)),
        "gpu_allocated": 0,
        "cpu_capacity_millicores": _quantity_millicores(capacity.get("cpu")),
        "cpu_allocatable_millicores": _quantity_millicores(allocatable.get("cpu")),
        "memory_capacity_bytes": _quantity_bytes(capacity.get("memory")),
        "memory_allocatable_bytes": _quantity_bytes(allocatable.get("memory")),
        "ready_status": ready_status,
        "unschedulable": bool(spec.get("unschedulable")),
        "taints": spec.get("taints") or [],
        "labels": labels,
        "conditions": status.get("conditions") or [],
        "present": True,
        "last_seen_at": now,
    }


def pod_allocation_rows(
    pods: list[dict[str, Any]], known_deployments: set[str]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The pods worth a ``pod_allocations`` row (GPU pods, and ours), as column values, and the GPUs that
    unfinished pods hold per node. Shared by this sync and the resource tracker's sweep."""
    rows: list[dict[str, Any]] = []
    allocated: dict[str, int] = defaultdict(int)
    for pod in pods:
        view = pod_view(pod)
        labels = (pod.get("metadata") or {}).get("labels") or {}
        ours = labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE and labels.get(DEPLOYMENT_ID_LABEL) in known_deployments
        if view.gpus == 0 and not ours:
            continue  # pods without GPUs do not affect placement
        if view.node and view.phase not in FINISHED_POD_PHASES:
            allocated[view.node] += view.gpus
        rows.append({
            **pod_columns(view),
            # A pod carrying our labels for a deployment this database does not know (another install) is
            # counted as foreign, so its GPUs are still subtracted by admission.
            "deployment_id": labels[DEPLOYMENT_ID_LABEL] if ours else None,
            "tenant_id": labels.get(TENANT_LABEL) if ours else None,
            "started_at": view.started_at,
        })
    return rows, allocated


def apply_snapshot(session: Session, snapshot: InventorySnapshot) -> InventoryResult:
    """Write the snapshot: upsert nodes and pods, mark vanished ones, recount allocated GPUs per node."""
    now = datetime.now(UTC)
    known_deployments = {str(value) for value in session.execute(select(Deployment.id)).scalars()}
    listed, allocated = pod_allocation_rows(snapshot.pods, known_deployments)
    pod_rows = [
        {
            **row,
            "id": uuid.uuid4(),
            "deployment_id": uuid.UUID(row["deployment_id"]) if row["deployment_id"] else None,
            "observed_at": now,
            "terminated_at": None,
        }
        for row in listed
    ]
    node_rows = [node_row(node, now) for node in snapshot.nodes if (node.get("metadata") or {}).get("name")]
    for row in node_rows:
        row["gpu_allocated"] = allocated.get(row["name"], 0)
    for start in range(0, len(node_rows), _BATCH):
        statement = insert(GpuNode).values(node_rows[start : start + _BATCH])
        excluded = statement.excluded
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[GpuNode.name],
                # cordoned_by / cordon_reason / gpu_utilization / first_seen_at belong to other writers.
                set_={key: getattr(excluded, key) for key in node_rows[0] if key not in ("name",)},
            )
        )
    seen_nodes = [row["name"] for row in node_rows]
    missing_result = session.execute(
        update(GpuNode)
        .where(GpuNode.present.is_(True), GpuNode.name.not_in(seen_nodes or [""]))
        .values(present=False, gpu_allocated=0)
    )
    missing = int(getattr(missing_result, "rowcount", 0) or 0)
    for start in range(0, len(pod_rows), _BATCH):
        statement = insert(PodAllocation).values(pod_rows[start : start + _BATCH])
        excluded = statement.excluded
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[PodAllocation.pod_uid],
                set_={
                    key: getattr(excluded, key)
                    for key in pod_rows[0]
                    if key not in ("id", "pod_uid", "namespace", "pod_name")
                },
            )
        )
    seen_pods = [row["pod_uid"] for row in pod_rows]
    terminated_result = session.execute(
        update(PodAllocation)
        .where(PodAllocation.terminated_at.is_(None), PodAllocation.pod_uid.not_in(seen_pods or [""]))
        .values(terminated_at=func.now())
    )
    terminated = int(getattr(terminated_result, "rowcount", 0) or 0)
    return InventoryResult(
        nodes_seen=len(node_rows),
        nodes_missing=int(missing or 0),
        pods_seen=len(pod_rows),
        pods_terminated=int(terminated or 0),
        list_calls=0,
    )


def sync_inventory(session: Session, clients: KubeClients | None = None) -> InventoryResult:
    """List the cluster and write it into ``session`` (the caller commits)."""
    snapshot, calls = fetch(clients or get_clients())
    result = apply_snapshot(session, snapshot)
    result.list_calls = calls
    return result


def run_inventory_sweep() -> dict[str, Any]:
    """One inventory pass in its own transaction (the cluster is read before the transaction opens)."""
    from models.db import session_scope

    snapshot, calls = fetch(get_clients())
    with session_scope() as session:
        result = apply_snapshot(session, snapshot)
    result.list_calls = calls
    return {
        "nodes": result.nodes_seen,
        "nodes_missing": result.nodes_missing,
        "pods": result.pods_seen,
        "pods_terminated": result.pods_terminated,
        "list_calls": result.list_calls,
    }
