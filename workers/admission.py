"""GPU admission: decide whether replicas fit (capacity and tenant quota) and record the promise.

Free GPUs per node = allocatable (present, Ready, schedulable GpuNode rows)
                     - GPUs of live pods that are NOT ours (PodAllocation.deployment_id IS NULL)
                     - active GpuReservation rows on the node (ours, whether or not their pods exist yet).
Our own pods are represented by their reservations, so they are not subtracted twice.

Concurrency: every admission first takes one transaction-scoped advisory lock. The decision reads
many rows and its danger is a row that does not exist yet (another request's reservation being
inserted): row locks cannot cover that phantom, and SERIALIZABLE would abort racing requests with
serialization failures that each caller must retry. Admission is a few short queries, so making it
one-at-a-time cluster-wide costs milliseconds and makes over-commit impossible. The lock is released
when the caller's transaction commits or rolls back, i.e. only once the reservations are visible.

Round trips: while the lock is held every other admission waits, so the work under it is kept to the
minimum: the lock is taken once per transaction (:func:`lock` remembers it), and everything a decision
reads (GPU types, quota and use, free GPUs per node, and optionally whether a name is taken) is ONE
statement, :func:`read_admission_state`, run after the lock so its snapshot includes every reservation
committed before the lock was granted; the lock and that read travel in one round trip.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, String, and_, bindparam, func, select, update
from sqlalchemy.orm import Session

from models import FINISHED_POD_PHASES, Deployment, GpuNode, GpuReservation, PodAllocation, Tenant
from models.driver_sql import DriverStatement, pipeline
from settings import get_settings
from workers.domain import AdmissionError, InvalidRequestError
from workers.placement import Placement, place_replicas

# Arbitrary constant naming "the admission lock" among the database's advisory locks.
ADMISSION_LOCK_KEY = 0x6F72636841444D  # "orchADM"


_LOCKED_IN = "admission_lock_held_in"
_LOCK = DriverStatement(lambda: select(func.pg_advisory_xact_lock(bindparam("lock_key", type_=BigInteger))))


def _current_transaction(session: Session) -> Any:
    # A savepoint rolled back also gives up locks taken inside it, so the innermost transaction is the one
    # that holds (or does not hold) the lock.
    return session.get_nested_transaction() or session.get_transaction()


def _holds_lock(session: Session) -> bool:
    transaction = _current_transaction(session)
    return transaction is not None and session.info.get(_LOCKED_IN) is transaction


def lock(session: Session) -> None:
    """Take the cluster-wide admission lock until the end of the caller's transaction (see module doc).

    Idempotent within one transaction: a second call in the same transaction costs no round trip."""
    if _holds_lock(session):
        return
    _LOCK.execute(session, {"lock_key": ADMISSION_LOCK_KEY}).fetchone()
    session.info[_LOCKED_IN] = _current_transaction(session)


@dataclass(frozen=True)
class Capacity:
    """Free GPUs per node, grouped by GPU type, plus the biggest node of each type (allocatable)."""

    free_by_type: dict[str, dict[str, int]]
    max_node_gpus_by_type: dict[str, int]

    def free_total(self, gpu_type: str) -> int:
        return sum(self.free_by_type.get(gpu_type, {}).values())

    def largest_block(self, gpu_type: str) -> int:
        return max(self.free_by_type.get(gpu_type, {}).values(), default=0)


# --------------------------------------------------------------------------- what a decision reads
_SCHEDULABLE_NODE = (
    GpuNode.present.is_(True),
    GpuNode.ready_status == "Ready",
    GpuNode.unschedulable.is_(False),
    GpuNode.gpu_product.is_not(None),
    GpuNode.gpu_allocatable > 0,
)
_FOREIGN_LIVE_POD = (
    PodAllocation.deployment_id.is_(None),
    PodAllocation.terminated_at.is_(None),
    PodAllocation.node_name.is_not(None),
    PodAllocation.phase.not_in(FINISHED_POD_PHASES),
)


def _foreign_gpus_by_node() -> Any:
    return (
        select(PodAllocation.node_name, func.sum(PodAllocation.gpus).label("gpus"))
        .where(*_FOREIGN_LIVE_POD)
        .group_by(PodAllocation.node_name)
    )


def _reserved_gpus_by_node() -> Any:
    return (
        select(GpuReservation.node_name, func.sum(GpuReservation.gpus).label("gpus"))
        .where(GpuReservation.released_at.is_(None))
        .group_by(GpuReservation.node_name)
    )


def _known_gpu_types_query() -> Any:
    return (
        select(GpuNode.gpu_product, func.max(GpuNode.gpu_allocatable).label("largest"))
        .where(GpuNode.present.is_(True), GpuNode.gpu_product.is_not(None))
        .group_by(GpuNode.gpu_product)
    )


def _tenant_used_query(tenant_id: Any) -> Any:
    """GPUs the tenant holds against its quota: each deployment's active reservations, up to its desired replicas.

    The cap leaves out every surge the platform adds on its own (a single-replica restart's extra replica, a
    drain's or a recovery's replacements, admitted with ``check_quota=False``) while it overlaps the replicas
    it replaces, and whichever rows are left once those go count in full: use never depends on which rows a
    move released. A scale or a create changes the desired count and the reservations in one transaction."""
    reserved = (
        select(GpuReservation.deployment_id, func.sum(GpuReservation.gpus).label("gpus"))
        .where(GpuReservation.tenant_id == tenant_id, GpuReservation.released_at.is_(None))
        .group_by(GpuReservation.deployment_id)
        .subquery("reserved_by_deployment")
    )
    wanted = Deployment.replicas_desired * Deployment.gpus_per_replica
    return select(func.coalesce(func.sum(func.least(reserved.c.gpus, wanted)), 0)).join_from(
        reserved, Deployment, Deployment.id == reserved.c.deployment_id
    )


def _capacity_from_rows(rows: Any) -> Capacity:
    """``rows`` of (node name, GPU product, allocatable, foreign pods' GPUs, reserved GPUs)."""
    free_by_type: dict[str, dict[str, int]] = defaultdict(dict)
    max_node: dict[str, int] = defaultdict(int)
    for name, gpu_product, allocatable, foreign, reserved in rows:
        product = str(gpu_product)  # the queries exclude NULL products
        free = int(allocatable) - int(foreign or 0) - int(reserved or 0)
        free_by_type[product][name] = max(free, 0)
        max_node[product] = max(max_node[product], int(allocatable))
    return Capacity(free_by_type=dict(free_by_type), max_node_gpus_by_type=dict(max_node))


def current_capacity(session: Session) -> Capacity:
    """Free GPUs per schedulable node, from GpuNode, foreign PodAllocation and active reservation rows."""
    nodes = session.execute(
        select(GpuNode.name, GpuNode.gpu_product, GpuNode.gpu_allocatable).where(*_SCHEDULABLE_NODE)
    ).all()
    foreign = dict(session.execute(_foreign_gpus_by_node()).all())
    reserved = dict(session.execute(_reserved_gpus_by_node()).all())
    return _capacity_from_rows(
        (name, product, allocatable, foreign.get(name), reserved.get(name)) for name, product, allocatable in nodes
    )


def known_gpu_types(session: Session) -> dict[str, int]:
    """GPU products of present nodes (any state) -> the largest allocatable count of one node."""
    rows = session.execute(_known_gpu_types_query()).all()
    return {str(product): int(largest) for product, largest in rows}


def tenant_quota(session: Session, tenant_id: str) -> tuple[int, int]:
    """(quota, GPUs the tenant holds against it: see :func:`_tenant_used_query`)."""
    explicit = session.execute(select(Tenant.gpu_quota).where(Tenant.id == tenant_id)).scalar_one_or_none()
    quota = explicit if explicit is not None else get_settings().default_tenant_gpu_quota
    used = session.execute(_tenant_used_query(tenant_id)).scalar_one()
    return int(quota), int(used)


@dataclass(frozen=True)
class AdmissionState:
    """Everything one admission decision reads, from one statement (see :func:`read_admission_state`)."""

    known_gpu_types: dict[str, int]
    quota: int
    used: int
    capacity: Capacity
    name_taken_by: uuid.UUID | None = None
    k8s_name_taken: bool = False


def read_admission_state(
    session: Session, tenant_id: str, *, name: str | None = None, k8s_name: tuple[str, str] | None = None
) -> AdmissionState:
    """Take the admission lock (if this transaction does not hold it yet), then read GPU types, the tenant's
    quota and use, free GPUs per node, (if ``name`` is given) the live deployment of the tenant already called
    ``name``, and (if ``k8s_name``, a (namespace, name) pair, is given) whether a live deployment of any tenant
    owns that cluster object name: the reads of :func:`known_gpu_types`, :func:`tenant_quota` and
    :func:`current_capacity` as ONE statement.

    The lock and the read leave in one round trip (with the transaction's BEGIN, if it is the first): queued
    in a pipeline, Postgres still runs them one after the other, so the read's snapshot is taken once the lock
    is granted and includes every reservation committed before."""
    namespace, object_name = k8s_name if k8s_name is not None else (None, None)
    parameters = {
        "state_tenant_id": tenant_id,
        "state_name": name,
        "state_k8s_namespace": namespace,
        "state_k8s_name": object_name,
    }
    if _holds_lock(session):
        row = _ADMISSION_STATE.execute(session, parameters).fetchone()
    else:
        with pipeline(session):
            _LOCK.execute(session, {"lock_key": ADMISSION_LOCK_KEY})
            row = _ADMISSION_STATE.execute(session, parameters).fetchone()
        session.info[_LOCKED_IN] = _current_transaction(session)
    if row is None:  # one row whatever the tables hold: every column is a scalar subquery
        raise RuntimeError("the admission read returned no row")
    explicit_quota, used, taken_by, k8s_name_taken, node_rows, foreign, reserved, known_types = row
    foreign, reserved = foreign or {}, reserved or {}
    quota = explicit_quota if explicit_quota is not None else get_settings().default_tenant_gpu_quota
    return AdmissionState(
        known_gpu_types={str(product): int(largest) for product, largest in (known_types or {}).items()},
        quota=int(quota),
        used=int(used),
        capacity=_capacity_from_rows(
            (node, product, allocatable, foreign.get(node), reserved.get(node))
            for node, product, allocatable in node_rows or []
        ),
        name_taken_by=taken_by if taken_by is None or isinstance(taken_by, uuid.UUID) else uuid.UUID(str(taken_by)),
        k8s_name_taken=bool(k8s_name_taken),
    )


def _admission_state_statement() -> Any:
    """The statement of :func:`read_admission_state`, compiled once as ``_ADMISSION_STATE``: its inputs are bind
    parameters (a NULL ``state_name`` matches no deployment, so the name check answers "not taken")."""
    tenant_id = bindparam("state_tenant_id", type_=String)
    # Nodes, foreign pods' GPUs by node and reserved GPUs by node are three separate aggregates, joined in
    # Python by node name: each is one scan whatever the plan, where joining them in SQL left the plan to row
    # estimates, and with the statistics of a young table (a few hundred reservations, not yet analyzed) the
    # planner re-ran the reservations' aggregate once per node, 6 ms under the lock every admission waits on.
    nodes = (
        select(func.jsonb_build_array(GpuNode.name, GpuNode.gpu_product, GpuNode.gpu_allocatable).label("node"))
        .where(*_SCHEDULABLE_NODE)
        .subquery("schedulable_nodes")
    )
    foreign = _foreign_gpus_by_node().subquery("foreign_gpus")
    reserved = _reserved_gpus_by_node().subquery("reserved_gpus")
    known = _known_gpu_types_query().subquery("known_types")
    taken = (
        select(Deployment.id)
        .where(
            Deployment.tenant_id == tenant_id,
            Deployment.name == bindparam("state_name", type_=String),
            Deployment.deleted_at.is_(None),
        )
        .limit(1)
        .scalar_subquery()
    )
    # Another tenant's deployment may already own the cluster object name (``foo-bar`` + ``baz`` and ``foo`` +
    # ``bar-baz`` both make ``foo-bar-baz``): the caller then picks the disambiguated name.
    k8s_name_taken = (
        select(Deployment.id)
        .where(
            Deployment.k8s_namespace == bindparam("state_k8s_namespace", type_=String),
            Deployment.k8s_name == bindparam("state_k8s_name", type_=String),
            Deployment.deleted_at.is_(None),
        )
        .exists()
    )
    return select(
        select(Tenant.gpu_quota).where(Tenant.id == tenant_id).scalar_subquery(),
        _tenant_used_query(tenant_id).scalar_subquery(),
        taken,
        k8s_name_taken,
        select(func.jsonb_agg(nodes.c.node)).scalar_subquery(),
        select(func.jsonb_object_agg(foreign.c.node_name, foreign.c.gpus)).scalar_subquery(),
        select(func.jsonb_object_agg(reserved.c.node_name, reserved.c.gpus)).scalar_subquery(),
        select(func.jsonb_object_agg(known.c.gpu_product, known.c.largest)).scalar_subquery(),
    )


_ADMISSION_STATE = DriverStatement(_admission_state_statement)


def validate_shape(session: Session, gpu_type: str, gpus_per_replica: int) -> None:
    """Refuse (422) a GPU type no node has, or more GPUs per replica than any node of the type holds."""
    check_shape(known_gpu_types(session), gpu_type, gpus_per_replica)


def check_shape(known: dict[str, int], gpu_type: str, gpus_per_replica: int) -> None:
    """:func:`validate_shape` on already read GPU types (product -> largest node)."""
    if not known:
        raise InvalidRequestError(
            "no_gpu_inventory",
            "no GPU nodes are known yet: the resource tracker has not synced the cluster (is a worker running?)",
            {"field": "gpu_type", "gpu_type": gpu_type, "known_gpu_types": []},
        )
    if gpu_type not in known:
        raise InvalidRequestError(
            "unknown_gpu_type",
            f"no node offers GPU type {gpu_type!r}",
            {"field": "gpu_type", "gpu_type": gpu_type, "known_gpu_types": sorted(known)},
        )
    if gpus_per_replica > known[gpu_type]:
        raise InvalidRequestError(
            "gpus_per_replica_too_large",
            f"gpus_per_replica {gpus_per_replica} exceeds the largest {gpu_type} node ({known[gpu_type]} GPUs); "
            "a replica's GPUs must be on one node",
            {"field": "gpus_per_replica", "gpu_type": gpu_type, "max_gpus_per_node": known[gpu_type]},
        )


def admit(
    session: Session,
    *,
    tenant_id: str,
    deployment_id: uuid.UUID,
    job_id: uuid.UUID | None,
    gpu_type: str,
    gpus_per_replica: int,
    replicas: int,
    check_quota: bool = True,
    state: AdmissionState | None = None,
) -> Placement:
    """Reserve GPUs for ``replicas`` more replicas or raise :class:`AdmissionError`; writes GpuReservation rows.

    Runs inside the caller's transaction and takes the admission lock (idempotent within a transaction).
    ``check_quota=False`` for platform-initiated surges (a single-replica restart, a drain's or a recovery's
    replacements), which the tenant did not ask for; their rows never count against the quota either, as long as
    they overlap what they replace (:func:`_tenant_used_query`). ``state`` is what the caller
    already read with :func:`read_admission_state` under the lock in this transaction (saves the read).
    """
    placement = decide(
        session,
        tenant_id=tenant_id,
        gpu_type=gpu_type,
        gpus_per_replica=gpus_per_replica,
        replicas=replicas,
        check_quota=check_quota,
        state=state,
    )
    rows = reservation_rows(
        placement,
        tenant_id=tenant_id,
        deployment_id=deployment_id,
        job_id=job_id,
        gpu_type=gpu_type,
        gpus_per_replica=gpus_per_replica,
    )
    session.add_all([GpuReservation(**row) for row in rows])  # one INSERT at the flush
    session.flush()
    return placement


def admit_replicas(
    session: Session,
    deployment: Any,
    *,
    replicas: int,
    job_id: uuid.UUID | None = None,
    check_quota: bool = True,
) -> Placement:
    """:func:`admit` for ``replicas`` more replicas of an existing deployment (its tenant, GPU type and size)."""
    return admit(
        session,
        tenant_id=deployment.tenant_id,
        deployment_id=deployment.id,
        job_id=job_id,
        gpu_type=deployment.gpu_type,
        gpus_per_replica=deployment.gpus_per_replica,
        replicas=replicas,
        check_quota=check_quota,
    )


def decide(
    session: Session,
    *,
    tenant_id: str,
    gpu_type: str,
    gpus_per_replica: int,
    replicas: int,
    check_quota: bool = True,
    state: AdmissionState | None = None,
) -> Placement:
    """The decision half of :func:`admit`: takes the lock, returns where the replicas go or raises
    :class:`AdmissionError`; writes nothing. Write its :func:`reservation_rows` in the same transaction."""
    if state is None:
        state = read_admission_state(session, tenant_id)  # takes the lock
    else:
        lock(session)  # a state read under the lock in this transaction: no round trip
    check_shape(state.known_gpu_types, gpu_type, gpus_per_replica)
    requested = replicas * gpus_per_replica
    if check_quota:
        quota, used = state.quota, state.used
        if used + requested > quota:
            raise AdmissionError(
                "quota_exceeded",
                f"tenant {tenant_id} would hold {used + requested} GPUs, over its quota of {quota}",
                {"quota": quota, "used": used, "requested": requested},
            )
    capacity = state.capacity
    placement = place_replicas(capacity.free_by_type.get(gpu_type, {}), replicas, gpus_per_replica)
    if placement.shortfall is not None:
        raise AdmissionError(
            "insufficient_gpu",
            f"{replicas} new replica(s) x {gpus_per_replica} {gpu_type} GPU(s) do not fit: "
            f"{capacity.free_total(gpu_type)} free, largest block {capacity.largest_block(gpu_type)} on one node",
            insufficient_details(capacity, gpu_type, gpus_per_replica, replicas),
        )
    return placement


def reservation_rows(
    placement: Placement,
    *,
    tenant_id: str,
    deployment_id: uuid.UUID,
    job_id: uuid.UUID | None,
    gpu_type: str,
    gpus_per_replica: int,
) -> list[dict[str, Any]]:
    """The GpuReservation rows :func:`admit` writes for ``placement``, one per node, as column values (every
    column but ``created_at``), for a caller that writes them in a statement of its own."""
    return [
        {
            "id": uuid.uuid4(),
            "deployment_id": deployment_id,
            "tenant_id": tenant_id,
            "job_id": job_id,
            "node_name": node_name,
            "gpu_type": gpu_type,
            "gpus": node_replicas * gpus_per_replica,
            "replicas": node_replicas,
            "released_at": None,
        }
        for node_name, node_replicas in sorted(placement.replicas_by_node.items())
    ]


def insufficient_details(capacity: Capacity, gpu_type: str, gpus_per_replica: int, replicas: int) -> dict[str, Any]:
    return {
        "gpu_type": gpu_type,
        "requested_per_replica": gpus_per_replica,
        "replicas": replicas,
        "free_total": capacity.free_total(gpu_type),
        "largest_block": {kind: capacity.largest_block(kind) for kind in sorted(capacity.free_by_type)},
        "free_by_type": {kind: capacity.free_total(kind) for kind in sorted(capacity.free_by_type)},
    }


def release(session: Session, deployment_id: uuid.UUID, *, job_id: uuid.UUID | None = None) -> int:
    """Release the deployment's active reservations (only those written by ``job_id`` if given); returns GPUs freed."""
    conditions = [GpuReservation.deployment_id == deployment_id, GpuReservation.released_at.is_(None)]
    if job_id is not None:
        conditions.append(GpuReservation.job_id == job_id)
    freed = session.execute(
        update(GpuReservation).where(and_(*conditions)).values(released_at=func.now()).returning(GpuReservation.gpus)
    ).scalars()
    return sum(freed)


def reserve_where_running(session: Session, deployment: Any, replicas_by_node: dict[str, int]) -> None:
    """Replace the deployment's active reservations with one row per node its replicas run on.

    Admission picks nodes, but the scheduler places the pods: once a change settles, this makes the ledger say
    where the GPUs really are (so the next admission counts the right nodes' free GPUs), under the admission
    lock so a concurrent admission sees the old rows or the new ones, never neither."""
    lock(session)
    release(session, deployment.id)
    session.add_all([
        GpuReservation(
            deployment_id=deployment.id,
            tenant_id=deployment.tenant_id,
            node_name=node_name,
            gpu_type=deployment.gpu_type,
            gpus=replicas * deployment.gpus_per_replica,
            replicas=replicas,
        )
        for node_name, replicas in sorted(replicas_by_node.items())
    ])
    session.flush()


def release_replicas(
    session: Session,
    deployment_id: uuid.UUID,
    count: int,
    *,
    node_name: str | None = None,
    job_id: uuid.UUID | None = None,
) -> int:
    """Give back ``count`` replicas' worth of reservations (scale-down); returns replicas released.

    ``node_name`` / ``job_id`` limit it to the reservations on one node or written by one job (a drain
    moving replicas off a node). Otherwise which pod Kubernetes removes is not known here, so the nodes
    holding the fewest replicas are released first (their GPUs become whole blocks again soonest); the
    resource tracker later reconciles any drift between reservations and where pods actually run.
    """
    if count <= 0:
        return 0
    conditions = [GpuReservation.deployment_id == deployment_id, GpuReservation.released_at.is_(None)]
    if node_name is not None:
        conditions.append(GpuReservation.node_name == node_name)
    if job_id is not None:
        conditions.append(GpuReservation.job_id == job_id)
    rows = session.scalars(
        select(GpuReservation)
        .where(and_(*conditions))
        .order_by(GpuReservation.replicas, GpuReservation.node_name)
        .with_for_update()
    ).all()
    remaining = count
    for row in rows:
        if remaining == 0:
            break
        take = min(row.replicas, remaining)
        remaining -= take
        per_replica = row.gpus // row.replicas
        row.released_at = func.now()
        if take < row.replicas:
            # Keep history intact: the old row is released and a smaller one carries the rest.
            session.add(
                GpuReservation(
                    deployment_id=row.deployment_id,
                    tenant_id=row.tenant_id,
                    job_id=row.job_id,
                    node_name=row.node_name,
                    gpu_type=row.gpu_type,
                    gpus=(row.replicas - take) * per_replica,
                    replicas=row.replicas - take,
                )
            )
    session.flush()
    return count - remaining
