"""The resource tracker sweep: inventory, utilization, drift between reservations and pods, cleanup.

Built on :mod:`workers.inventory` (its paginated node and pod lists, and its row shapes: nodes ->
``gpu_nodes``, pods -> ``pod_allocations``; written here as one array-based statement per table), it adds:
- utilization: CPU/memory per pod from ``metrics.k8s.io``; GPU utilization and memory from Prometheus
  (DCGM exporter), rolled up per node and per pod by the queries themselves; vLLM queue depth and
  KV-cache use per pod.
  A metrics source that is down is reported and skipped; the rest of the sweep still runs;
- drift: per deployment and node, GPUs reserved by admission vs GPUs the cluster actually allocated to
  its pods; flagged in the summary and a gauge. When only the placement differs (same totals) on a settled
  deployment, the reservations are moved to where the pods really run, so admission's free-GPU count
  stays true;
- cleanup: our pods that ended (Failed/Succeeded) are deleted from the cluster and their rows closed.

Calls per run are constant: the inventory's two paginated lists, metrics.k8s.io's pod list, four
Prometheus queries (the three sources read side by side on their own threads); writes are a fixed set
of set-based statements (each pod row written once, with its usage). Kubernetes down -> skip, say so, write nothing.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, text
from sqlalchemy.orm import Session

from models import FINISHED_POD_PHASES, SCHEMA, Deployment, SweepName
from settings import get_settings
from workers import admission, inventory, k8s
from workers.cluster_errors import ClusterError, call, is_status
from workers.manifests import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from workers.prometheus_client import PrometheusUnavailableError, client_from_settings
from workers.sweep_lock import DEFAULT_KEY_PREFIX, lock_key_prefix, run_locked
from workers.sweep_metrics import SweepReport, observed_sweep, summary_in_new_session

LOCK_TTL_SECONDS = 300.0
# Prometheus does the roll-ups: the sweep asks for the figures it stores (per node, per pod), not for every
# per-GPU series. At 1,000 nodes that is ~13,000 small series instead of 16,000 per-GPU series with ten labels
# each plus 18,000 vLLM series with six: a fraction of the bytes to encode, send and decode.
NODE_GPU_UTIL_QUERY = "avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL)"
POD_GPU_UTIL_QUERY = 'avg by (namespace, pod) (DCGM_FI_DEV_GPU_UTIL{pod!=""})'
POD_GPU_MEMORY_QUERY = 'sum by (namespace, pod) (DCGM_FI_DEV_FB_USED{pod!=""})'
# One series per pod and family already; the aggregation only drops the labels the sweep does not read.
VLLM_QUERY = (
    "max by (__name__, namespace, pod) "
    '({__name__=~"vllm:num_requests_waiting|vllm:num_requests_running|vllm:gpu_cache_usage_perc"})'
)
PROMETHEUS_QUERIES = (NODE_GPU_UTIL_QUERY, POD_GPU_UTIL_QUERY, POD_GPU_MEMORY_QUERY, VLLM_QUERY)
_VLLM_KEYS = {
    "vllm:num_requests_waiting": "requests_waiting",
    "vllm:num_requests_running": "requests_running",
    "vllm:gpu_cache_usage_perc": "kv_cache_usage",
}


@dataclass
class Utilization:
    """Figures per node and per pod ``(namespace, name)``; a source that failed leaves its part empty."""

    node_gpu_util: dict[str, float] = field(default_factory=dict)
    pod_gpu_util: dict[tuple[str, str], float] = field(default_factory=dict)
    pod_metrics: dict[tuple[str, str], dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    pod_usage: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    prometheus_ok: bool = False
    metrics_server_ok: bool = False


def _pod_key(sample: Any) -> tuple[str, str]:
    return sample.labels.get("namespace", ""), sample.labels.get("pod", "")


def read_prometheus(prometheus: Any, utilization: Utilization) -> None:
    """Four instant queries, each already rolled up by Prometheus: GPU utilization per node and per pod,
    GPU memory per pod, and the vLLM figures per pod. A NaN (no usable sample) is left out."""
    node_util, pod_util, pod_memory, vllm = (prometheus.query(query) for query in PROMETHEUS_QUERIES)
    utilization.node_gpu_util = {
        sample.labels["Hostname"]: sample.value
        for sample in node_util if sample.labels.get("Hostname") and not math.isnan(sample.value)
    }
    utilization.pod_gpu_util = {
        _pod_key(sample): sample.value
        for sample in pod_util if sample.labels.get("pod") and not math.isnan(sample.value)
    }
    for sample in pod_memory:
        if sample.labels.get("pod") and not math.isnan(sample.value):
            utilization.pod_metrics[_pod_key(sample)]["gpu_memory_used_mib"] = sample.value
    for sample in vllm:
        key = _VLLM_KEYS.get(sample.labels.get("__name__", ""))
        if key and sample.labels.get("pod") and not math.isnan(sample.value):
            utilization.pod_metrics[_pod_key(sample)][key] = sample.value
    utilization.prometheus_ok = True


def read_metrics_server(clients: Any, utilization: Utilization) -> None:
    """CPU/memory per pod from metrics.k8s.io: the pod list only (the sweep stores no per-node usage)."""
    from kubernetes import client as k8s_client

    # The same quantity parsing as the admin API's usage view (admin_queries.resource_metrics), whose node
    # list this sweep would only throw away.
    from workers.admin_queries.resource_usage import _cpu_millicores, _memory_bytes

    custom = k8s_client.CustomObjectsApi(clients.api_client)
    listed = cast(dict[str, Any], call(
        custom.list_cluster_custom_object, "metrics.k8s.io", "v1beta1", "pods", _request_timeout=clients.request_timeout
    ))
    usage: dict[tuple[str, str], dict[str, int]] = {}
    for item in listed.get("items") or []:
        containers = item.get("containers") or []
        usage[(item["metadata"].get("namespace", ""), item["metadata"]["name"])] = {
            "cpu_millicores": round(sum(_cpu_millicores(c["usage"].get("cpu", "0")) for c in containers)),
            "memory_bytes": sum(_memory_bytes(c["usage"].get("memory", "0")) for c in containers),
        }
    utilization.pod_usage = usage
    utilization.metrics_server_ok = True


# ------------------------------------------------------------------------------- inventory writes
# The same rows as ``inventory.apply_snapshot`` builds, written as one set-based statement per table, with
# the rows sent as one JSON document (``jsonb_to_recordset``): one round trip whatever the cluster size, no
# statement with tens of thousands of bind parameters, and no per-element array quoting in the driver
# (escaping the quotes of 3,000 JSON label/taint/condition texts inside a text[] cost more than the write).
# The key lists of the "mark what vanished" statements travel as JSON arrays for the same reason.
_NODE_COLUMNS = (
    "name", "uid", "internal_ip", "hostname", "gpu_product", "gpu_memory_mb", "gpu_capacity", "gpu_allocatable",
    "gpu_allocated", "cpu_capacity_millicores", "cpu_allocatable_millicores", "memory_capacity_bytes",
    "memory_allocatable_bytes", "ready_status", "unschedulable", "taints", "labels", "conditions",
)
_UPSERT_NODES = text(
    f"""
    INSERT INTO {SCHEMA}.gpu_nodes ({", ".join(_NODE_COLUMNS)}, present, last_seen_at)
    SELECT {", ".join(f"v.{column}" for column in _NODE_COLUMNS)}, true, :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(
        name text, uid text, internal_ip text, hostname text, gpu_product text, gpu_memory_mb int, gpu_capacity int,
        gpu_allocatable int, gpu_allocated int, cpu_capacity_millicores bigint, cpu_allocatable_millicores bigint,
        memory_capacity_bytes bigint, memory_allocatable_bytes bigint, ready_status text, unschedulable boolean,
        taints jsonb, labels jsonb, conditions jsonb
    )
    ORDER BY v.name
    ON CONFLICT (name) DO UPDATE SET
        uid = EXCLUDED.uid, internal_ip = EXCLUDED.internal_ip, hostname = EXCLUDED.hostname,
        gpu_product = EXCLUDED.gpu_product, gpu_memory_mb = EXCLUDED.gpu_memory_mb,
        gpu_capacity = EXCLUDED.gpu_capacity, gpu_allocatable = EXCLUDED.gpu_allocatable,
        gpu_allocated = EXCLUDED.gpu_allocated, cpu_capacity_millicores = EXCLUDED.cpu_capacity_millicores,
        cpu_allocatable_millicores = EXCLUDED.cpu_allocatable_millicores,
        memory_capacity_bytes = EXCLUDED.memory_capacity_bytes,
        memory_allocatable_bytes = EXCLUDED.memory_allocatable_bytes, ready_status = EXCLUDED.ready_status,
        unschedulable = EXCLUDED.unschedulable, taints = EXCLUDED.taints, labels = EXCLUDED.labels,
        conditions = EXCLUDED.conditions, present = true, last_seen_at = EXCLUDED.last_seen_at
    """  # noqa: S608 - SCHEMA is a validated identifier (settings.DB_SCHEMA); column names are constants
)
_MARK_MISSING_NODES = text(
    f"""
    UPDATE {SCHEMA}.gpu_nodes SET present = false, gpu_allocated = 0
    WHERE present AND name NOT IN (SELECT jsonb_array_elements_text(CAST(:names AS jsonb)))
    """  # noqa: S608 - SCHEMA is a validated identifier; values are bound
)
_POD_COLUMNS = (
    "pod_uid", "namespace", "pod_name", "deployment_id", "tenant_id", "node_name", "gpus", "phase", "ready",
    "restarts", "reason", "message", "started_at",
)
# The pod rows carry this sweep's usage figures too (one write per pod, not an upsert then an UPDATE). A pod
# the metrics sources said nothing about keeps its previous figures: CPU/memory through COALESCE, GPU
# utilization and the model-server figures unless Prometheus answered (:gpu_known) and the row has figures.
_P = f"{SCHEMA}.pod_allocations"
_HAS_FIGURES = (
    "(EXCLUDED.cpu_usage_millicores IS NOT NULL OR EXCLUDED.gpu_utilization IS NOT NULL"
    " OR EXCLUDED.metrics <> '{}'::jsonb)"
)
_UPSERT_POD_ROWS = text(
    f"""
    INSERT INTO {_P} (id, {", ".join(_POD_COLUMNS)}, cpu_usage_millicores, memory_usage_bytes,
                      gpu_utilization, metrics, observed_at, terminated_at)
    SELECT gen_random_uuid(), {", ".join(f"v.{column}" for column in _POD_COLUMNS)}, v.cpu, v.memory,
           v.gpu, COALESCE(v.metrics, '{{}}'::jsonb), :now, NULL
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(
        pod_uid text, namespace text, pod_name text, deployment_id uuid, tenant_id text, node_name text, gpus int,
        phase text, ready boolean, restarts int, reason text, message text, started_at timestamptz,
        cpu int, memory bigint, gpu float8, metrics jsonb
    )
    ORDER BY v.namespace, v.pod_name
    ON CONFLICT (pod_uid) DO UPDATE SET
        deployment_id = EXCLUDED.deployment_id, tenant_id = EXCLUDED.tenant_id, node_name = EXCLUDED.node_name,
        gpus = EXCLUDED.gpus, phase = EXCLUDED.phase, ready = EXCLUDED.ready, restarts = EXCLUDED.restarts,
        reason = EXCLUDED.reason, message = EXCLUDED.message, started_at = EXCLUDED.started_at,
        observed_at = EXCLUDED.observed_at, terminated_at = NULL,
        cpu_usage_millicores = COALESCE(EXCLUDED.cpu_usage_millicores, {_P}.cpu_usage_millicores),
        memory_usage_bytes = COALESCE(EXCLUDED.memory_usage_bytes, {_P}.memory_usage_bytes),
        gpu_utilization = CASE WHEN :gpu_known AND {_HAS_FIGURES}
                               THEN EXCLUDED.gpu_utilization ELSE {_P}.gpu_utilization END,
        metrics = CASE WHEN :gpu_known AND {_HAS_FIGURES} THEN EXCLUDED.metrics ELSE {_P}.metrics END
    """  # noqa: S608 - SCHEMA is a validated identifier; column names are constants
)
_CLOSE_MISSING_PODS = text(
    f"""
    UPDATE {SCHEMA}.pod_allocations SET terminated_at = now()
    WHERE terminated_at IS NULL AND pod_uid NOT IN (SELECT jsonb_array_elements_text(CAST(:uids AS jsonb)))
    """  # noqa: S608 - SCHEMA is a validated identifier; values are bound
)


def _columns(rows: list[dict[str, Any]], key: str) -> list[Any]:
    return [row[key] for row in rows]


def _json_default(value: Any) -> Any:
    """Datetimes as ISO 8601 (which timestamptz parses); ``json`` calls this only for what it cannot encode."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json_rows(rows: list[dict[str, Any]]) -> str:
    """Rows as the JSON array ``jsonb_to_recordset`` reads (it ignores keys its column list does not name)."""
    return json.dumps(rows, default=_json_default)


def add_pod_usage(pod_rows: list[dict[str, Any]], utilization: Utilization) -> int:
    """Put this sweep's usage figures on the pod rows (``cpu``, ``memory``, ``gpu``, ``metrics``; NULLs and
    ``{}`` where a source said nothing, which the upsert reads as "keep the stored figures"). Returns the
    number of rows that carry figures."""
    with_figures = 0
    for row in pod_rows:
        key = (row["namespace"], row["pod_name"])
        usage = utilization.pod_usage.get(key) if utilization.metrics_server_ok else None
        gpu = utilization.pod_gpu_util.get(key) if utilization.prometheus_ok else None
        metrics = utilization.pod_metrics.get(key, {}) if utilization.prometheus_ok else {}
        row["cpu"] = usage["cpu_millicores"] if usage else None
        row["memory"] = usage["memory_bytes"] if usage else None
        row["gpu"] = None if gpu is None else round(gpu, 2)
        row["metrics"] = {name: round(value, 4) for name, value in metrics.items()}
        if usage is not None or gpu is not None or metrics:
            with_figures += 1
    return with_figures


def known_deployment_ids(session: Session) -> set[str]:
    return {str(value) for value in session.execute(select(Deployment.id)).scalars()}


def write_nodes(
    session: Session, snapshot: inventory.InventorySnapshot, allocated: dict[str, int], now: datetime
) -> tuple[int, int]:
    """Upsert the node rows (with the GPUs their pods hold) and mark the vanished ones: (seen, missing)."""
    node_rows = [inventory.node_row(node, now) for node in snapshot.nodes if (node.get("metadata") or {}).get("name")]
    for row in node_rows:
        row["gpu_allocated"] = allocated.get(row["name"], 0)
    session.execute(_UPSERT_NODES, {"now": now, "rows": _json_rows(node_rows)})
    marked = session.execute(_MARK_MISSING_NODES, {"names": json.dumps(_columns(node_rows, "name"))})
    return len(node_rows), int(cast(CursorResult, marked).rowcount or 0)


def write_pods(session: Session, pod_rows: list[dict[str, Any]], utilization: Utilization, now: datetime) -> int:
    """Upsert the pod rows with this sweep's usage figures and close the vanished ones; returns how many
    rows closed."""
    session.execute(
        _UPSERT_POD_ROWS, {"now": now, "rows": _json_rows(pod_rows), "gpu_known": utilization.prometheus_ok}
    )
    closed = session.execute(_CLOSE_MISSING_PODS, {"uids": json.dumps(_columns(pod_rows, "pod_uid"))})
    return int(cast(CursorResult, closed).rowcount or 0)


# ------------------------------------------------------------------------------------------ writes
_UPDATE_NODE_UTIL = text(
    f"""
    UPDATE {SCHEMA}.gpu_nodes AS n SET gpu_utilization = v.util
    FROM unnest(CAST(:names AS text[]), CAST(:utils AS float8[])) AS v(name, util)
    WHERE n.name = v.name AND n.gpu_utilization IS DISTINCT FROM v.util
    """  # noqa: S608 - SCHEMA is a validated identifier (settings.DB_SCHEMA); values are bound
)
_CLOSE_CLEANED_PODS = text(
    f"""
    UPDATE {SCHEMA}.pod_allocations SET terminated_at = now(), ready = false
    WHERE terminated_at IS NULL AND pod_uid IN (SELECT unnest(CAST(:uids AS text[])))
    """  # noqa: S608 - SCHEMA is a validated identifier; values are bound
)
# Reserved vs allocated GPUs per (deployment, node), for deployments that are not mid-operation: two
# single-table aggregates and the eligible deployments, matched up in Python. One statement joining them
# (a FULL JOIN on the pair, then deployments on COALESCE of its keys) is at the planner's mercy: with stale
# statistics (a freshly filled table, before autovacuum's ANALYZE) it chose a nested loop that re-ran the
# full join once per deployment, 5 s at 2,000 deployments. Plain aggregates have no such plan.
_DRIFT_SIDES = text(
    f"""
    SELECT 'reserved' AS side, deployment_id, node_name, sum(gpus) AS gpus, sum(replicas) AS replicas
    FROM {SCHEMA}.gpu_reservations WHERE released_at IS NULL GROUP BY deployment_id, node_name
    UNION ALL
    SELECT 'allocated', deployment_id, node_name, sum(gpus), count(*)
    FROM {SCHEMA}.pod_allocations
    WHERE deployment_id IS NOT NULL AND terminated_at IS NULL AND node_name IS NOT NULL
      AND phase NOT IN ('Failed', 'Succeeded')
    GROUP BY deployment_id, node_name
    """  # noqa: S608 - SCHEMA is a validated identifier
)
# Settled deployments no job is changing, FAILED ones included: crash-looping pods hold GPUs where they run as
# much as a RUNNING deployment's. Not a rollout in progress (RESTARTING, SCALING, CREATING): its job has ended
# but its pods are still moving, and a single-replica restart's surge rows (found by their job when it ends)
# must not be rewritten under it.
_DRIFT_DEPLOYMENTS = text(
    f"""
    SELECT d.id, d.gpu_type, d.tenant_id FROM {SCHEMA}.deployments d
    WHERE d.deleted_at IS NULL AND d.status IN ('RUNNING', 'STOPPED', 'DEGRADED', 'FAILED')
      AND NOT EXISTS (
          SELECT 1 FROM {SCHEMA}.jobs j
          WHERE j.id = d.active_job_id AND j.state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
      )
    """  # noqa: S608 - SCHEMA is a validated identifier
)


def drift_rows(session: Session) -> list[dict[str, Any]]:
    """Per settled deployment and node: GPUs reserved, GPUs and replicas allocated (0 for a missing side),
    ordered by deployment and node."""
    eligible = {row.id: row for row in session.execute(_DRIFT_DEPLOYMENTS)}
    pairs: dict[tuple[Any, str | None], dict[str, Any]] = {}
    for side, deployment_id, node_name, gpus, replicas in session.execute(_DRIFT_SIDES):
        deployment = eligible.get(deployment_id)
        if deployment is None:
            continue
        entry = pairs.setdefault((deployment_id, node_name), {
            "deployment_id": deployment_id, "node_name": node_name, "reserved": 0, "allocated": 0,
            "allocated_replicas": 0, "gpu_type": deployment.gpu_type, "tenant_id": deployment.tenant_id,
        })
        if side == "reserved":
            entry["reserved"] = int(gpus)
        else:
            entry["allocated"], entry["allocated_replicas"] = int(gpus), int(replicas)
    return [pairs[key] for key in sorted(pairs, key=lambda key: (key[0], key[1] is None, key[1] or ""))]


_RELEASE_FOR_REALIGN = text(
    f"""
    UPDATE {SCHEMA}.gpu_reservations SET released_at = now()
    WHERE released_at IS NULL AND deployment_id IN (SELECT unnest(CAST(:ids AS uuid[])))
    """  # noqa: S608 - SCHEMA is a validated identifier; values are bound
)
_RESERVE_ACTUAL = text(
    f"""
    INSERT INTO {SCHEMA}.gpu_reservations
        (id, deployment_id, tenant_id, node_name, gpu_type, gpus, replicas, created_at)
    SELECT gen_random_uuid(), v.deployment_id, v.tenant_id, v.node_name, v.gpu_type, v.gpus, v.replicas, now()
    FROM unnest(
        CAST(:ids AS uuid[]), CAST(:tenants AS text[]), CAST(:nodes AS text[]), CAST(:types AS text[]),
        CAST(:gpus AS int[]), CAST(:replicas AS int[])
    ) AS v(deployment_id, tenant_id, node_name, gpu_type, gpus, replicas)
    """  # noqa: S608 - SCHEMA is a validated identifier; values are bound
)


def write_node_utilization(session: Session, utilization: Utilization) -> None:
    """GPU utilization per node, from Prometheus (nodes it has no figure for keep theirs)."""
    if utilization.prometheus_ok:
        names = sorted(utilization.node_gpu_util)
        session.execute(
            _UPDATE_NODE_UTIL,
            {"names": names, "utils": [round(utilization.node_gpu_util[name], 2) for name in names]},
        )


@dataclass
class DriftReport:
    entries: list[dict[str, Any]] = field(default_factory=list)
    deployments: set[str] = field(default_factory=set)
    realigned: list[str] = field(default_factory=list)


def reconcile_drift(session: Session) -> DriftReport:
    """Flag reserved-vs-allocated mismatches; move reservations of settled deployments to their real nodes.

    Only a pure placement difference is realigned (the deployment's total reserved GPUs equal its
    allocated ones): admission promised the right amount and the scheduler merely picked other nodes.
    A difference in totals (pods missing, or extra ones) is only flagged, since a rollout, a pending
    pod or a node failure can explain it and the health monitor owns those.
    """
    report = DriftReport()
    by_deployment: dict[Any, list[Mapping[str, Any]]] = defaultdict(list)
    for row in drift_rows(session):
        by_deployment[row["deployment_id"]].append(row)
    realign: list[Any] = []
    for deployment_id, entries in by_deployment.items():
        mismatched = [entry for entry in entries if entry["reserved"] != entry["allocated"]]
        if not mismatched:
            continue
        report.deployments.add(str(deployment_id))
        for entry in mismatched:
            report.entries.append({
                "deployment_id": str(deployment_id), "node": entry["node_name"],
                "reserved_gpus": int(entry["reserved"]), "allocated_gpus": int(entry["allocated"]),
            })
        if sum(e["reserved"] for e in entries) == sum(e["allocated"] for e in entries):
            realign.append(deployment_id)
    if realign:
        # Under the admission lock: an admission running now must see either the old rows or the new ones.
        admission.lock(session)
        new_rows = [entry for deployment_id in realign for entry in by_deployment[deployment_id] if entry["allocated"]]
        session.execute(_RELEASE_FOR_REALIGN, {"ids": [str(d) for d in realign]})
        session.execute(
            _RESERVE_ACTUAL,
            {
                "ids": [str(e["deployment_id"]) for e in new_rows],
                "tenants": [e["tenant_id"] for e in new_rows],
                "nodes": [e["node_name"] for e in new_rows],
                "types": [e["gpu_type"] for e in new_rows],
                "gpus": [int(e["allocated"]) for e in new_rows],
                "replicas": [int(e["allocated_replicas"]) for e in new_rows],
            },
        )
        report.realigned = [str(d) for d in realign]
    return report


def cleanup_finished_pods(clients: Any, pods: list[dict[str, Any]], report: SweepReport) -> list[str]:
    """Delete our pods that ended (Failed/Succeeded): they hold no GPU but clutter the cluster and the views."""
    deleted: list[str] = []
    finished = 0
    for pod in pods:
        metadata = pod.get("metadata") or {}
        labels = metadata.get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
            continue
        if (pod.get("status") or {}).get("phase") not in FINISHED_POD_PHASES or metadata.get("deletionTimestamp"):
            continue
        finished += 1
        try:
            call(clients.core.delete_namespaced_pod, metadata["name"], metadata["namespace"], **clients.timeout)
        except ClusterError as error:
            if not is_status(error, 404):
                report.error(error.code, f"deleting finished pod {metadata['name']}: {error.message}")
                continue
        deleted.append(str(metadata.get("uid")))
    report.saw("finished_pods", finished)
    return deleted


# ------------------------------------------------------------------------------------------ the sweep
def run_resource_tracker(
    session: Session,
    *,
    now: float | None = None,
    clients: Any | None = None,
    prometheus: Any | None = None,
    redis_client: Any | None = None,
    key_prefix: str = DEFAULT_KEY_PREFIX,
) -> SweepReport:
    """One resource-tracker sweep (see the module doc). ``prometheus`` defaults to PROMETHEUS_URL's client."""
    with observed_sweep(session, SweepName.RESOURCE_TRACKER.value) as report:
        ran = run_locked(
            report, SweepName.RESOURCE_TRACKER.value, LOCK_TTL_SECONDS,
            lambda: _sweep(session, report, clients or k8s.get_clients(), prometheus),
            client=redis_client, key_prefix=key_prefix,
        )
        if not ran:
            return report
        report.details["observed_at"] = datetime.fromtimestamp(now if now is not None else time.time(), UTC).isoformat()
    return report


def read_utilization(clients: Any, prometheus: Any | None) -> tuple[Utilization, dict[str, str], list[tuple[str, str]]]:
    """Both metrics sources, side by side on two threads (each waits on its own server); each one that fails
    is noted (source -> state, errors) and simply left out. They fill disjoint fields of the result."""
    utilization = Utilization()

    def metrics_server() -> None:
        read_metrics_server(clients, utilization)

    def prometheus_source() -> None:
        read_prometheus(prometheus or client_from_settings(get_settings().prometheus_url), utilization)

    sources: dict[str, str] = {}
    errors: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="resource-tracker-source") as pool:
        futures = {"metrics_server": pool.submit(metrics_server), "prometheus": pool.submit(prometheus_source)}
        for source, future in futures.items():
            try:
                future.result()
                sources[source] = "ok"
            except ClusterError as error:
                sources[source] = f"unavailable: {error.message}"
                errors.append((f"{source}_unavailable", error.message))
            except PrometheusUnavailableError as error:
                sources[source] = f"unavailable: {error.reason}"
                errors.append((f"{source}_unavailable", error.reason))
    return utilization, sources, errors


def _sweep(session: Session, report: SweepReport, clients: Any, prometheus: Any | None) -> None:
    # The metrics are read on a second thread while this one lists and writes the inventory: the servers
    # compute them (thousands of series at 1,000 nodes) while the database takes the inventory, instead of
    # one after the other. Nothing here shares a connection between the threads.
    # The metrics are read on a second thread while this one lists the inventory and writes the nodes, so
    # the servers compute them (thousands of series at 1,000 nodes) meanwhile. The pods are written once,
    # with their usage, when both are in. Nothing here shares a connection between the threads.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="resource-tracker-metrics") as pool:
        metrics = pool.submit(read_utilization, clients, prometheus)
        try:
            snapshot, list_pages_fetched = inventory.fetch(clients)
        except ClusterError as error:
            report.error(error.code, error.message)
            report.skip(f"kubernetes_unavailable: {error.message}")
            return
        now = datetime.now(UTC)
        pod_rows, allocated = inventory.pod_allocation_rows(snapshot.pods, known_deployment_ids(session))
        nodes_seen, nodes_missing = write_nodes(session, snapshot, allocated, now)
        utilization, sources, errors = metrics.result()
    report.acted("pod_usage_updated", add_pod_usage(pod_rows, utilization))
    pods_closed = write_pods(session, pod_rows, utilization, now)
    write_node_utilization(session, utilization)
    report.saw("list_pages", list_pages_fetched)
    report.saw("nodes", nodes_seen)
    report.saw("pods", len(pod_rows))
    report.acted("nodes_marked_missing", nodes_missing)
    report.acted("pod_rows_closed", pods_closed)
    for code, message in errors:
        report.error(code, message)
    report.details["metrics_sources"] = sources

    drift = reconcile_drift(session)
    report.details["drift"] = drift.entries
    report.saw("drifted_deployments", len(drift.deployments))
    report.acted("reservations_realigned", len(drift.realigned))

    cleaned = cleanup_finished_pods(clients, snapshot.pods, report)
    if cleaned:
        session.execute(_CLOSE_CLEANED_PODS, {"uids": cleaned})
    report.acted("finished_pods_deleted", len(cleaned))
    session.commit()


def resource_tracker_sweep() -> dict[str, Any]:
    """The ``sweeps.resource_tracker`` task's body: one run in a fresh session; returns the run's summary."""
    return summary_in_new_session(run_resource_tracker, key_prefix=lock_key_prefix())
