"""Deployment operations against Kubernetes, level-based and idempotent.

Each ``execute_*`` reads the desired state from Postgres and the actual state from the cluster and
acts on the difference, so a retry, or a redelivery after a worker was killed mid-way, converges on the
same result: create treats AlreadyExists as "adopt and patch to desired", delete treats NotFound as
done, patches are computed from the job (not from "now") so repeating one changes nothing.

Jobs end once the cluster has accepted the change; the status poller then follows the rollout
(CREATING/RESTARTING/SCALING -> RUNNING or FAILED) without holding a worker slot while models load.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import case, func, select, update

from models import (
    FINISHED_POD_PHASES,
    Deployment,
    DeploymentStatus,
    GpuReservation,
    Job,
    PodAllocation,
    ScalingEvent,
    ScalingEventStatus,
)
from models.db import session_scope
from settings import get_settings
from workers import admission
from workers.cluster_errors import PermanentClusterError, TransientClusterError
from workers.domain import AdmissionError
from workers.job_lock import ClaimedJob
from workers.job_runner import Outcome
from workers.jobs import DeploymentChange, DeploymentRow
from workers.k8s import KubeClients, get_clients
from workers.kube_calls import STRATEGIC_MERGE_PATCH, get, namespace_path, object_path, send
from workers.manifests import (
    DEPLOYMENT_ID_LABEL,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    RESTARTED_AT_ANNOTATION,
    build_deployment,
    build_pod_disruption_budget,
    build_service,
)

logger = logging.getLogger(__name__)


def deployment_of(job: ClaimedJob) -> DeploymentRow:
    """The claimed job's deployment, as its claim read it (no further query, no connection held during cluster
    calls); a job whose deployment does not exist fails at once (permanent)."""
    if job.deployment is None:
        raise PermanentClusterError("deployment_not_found", f"deployment {job.target_id} does not exist")
    return job.deployment


def manifests_for(deployment: DeploymentRow) -> dict[str, dict[str, Any]]:
    return {
        "deployment": build_deployment(deployment, get_settings()),
        "service": build_service(deployment),
        "pdb": build_pod_disruption_budget(deployment),
    }


# ------------------------------------------------------------------------------------------- apply
def ensure_namespace(clients: KubeClients, namespace: str) -> None:
    """Create the namespace if missing (a cluster that forbids it answers 403: a permanent error).

    Remembered per process once it exists, so steady-state creates skip the extra call."""
    if namespace in clients.namespaces_ready:
        return
    if get(clients, namespace_path(namespace)) is None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        try:
            send(clients, "POST", namespace_path(), body)
        except TransientClusterError as error:
            if error.status != 409:  # AlreadyExists from a racing worker is success
                raise
    clients.namespaces_ready.add(namespace)


def _is_ours(existing: dict[str, Any], deployment_id: str) -> bool:
    """Whether a cluster object carries our labels for this deployment (created by it, or adopted)."""
    labels = (existing.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE and labels.get(DEPLOYMENT_ID_LABEL) == deployment_id


def _check_ours(existing: dict[str, Any], desired: dict[str, Any]) -> None:
    if not _is_ours(existing, desired["metadata"]["labels"][DEPLOYMENT_ID_LABEL]):
        kind = desired["kind"]
        name = desired["metadata"]["name"]
        raise PermanentClusterError(
            "name_conflict",
            f"{kind} {name} already exists in the cluster and is not managed by this deployment",
            status=409,
        )


def _apply(clients: KubeClients, kind: str, desired: dict[str, Any], *, namespace_recreated: bool = False) -> str:
    """Create ``desired``; if it already exists and is ours, patch it to desired (adopt). Returns the action."""
    namespace = desired["metadata"]["namespace"]
    name = desired["metadata"]["name"]
    # Create first: the common case costs one call; AlreadyExists (a retry, a redelivery after a crash)
    # falls through to adopting the existing object.
    try:
        send(clients, "POST", object_path(kind, namespace), desired)
        return "created"
    except TransientClusterError as error:
        if error.status != 409:
            raise
    except PermanentClusterError as error:
        if error.status != 404 or namespace_recreated:
            raise
        # The namespace we remembered was deleted: make sure it exists again and try once more (another worker
        # may be doing the same: ensure_namespace takes AlreadyExists as success).
        clients.namespaces_ready.discard(namespace)
        ensure_namespace(clients, namespace)
        return _apply(clients, kind, desired, namespace_recreated=True)
    existing = get(clients, object_path(kind, namespace, name))
    if existing is None:
        # Deleted between our create and read: let the retry contract try again.
        raise TransientClusterError("cluster_conflict", f"{kind} {name} vanished while being adopted", status=409)
    _check_ours(existing, desired)
    body = {"metadata": {"labels": desired["metadata"]["labels"]}, "spec": desired["spec"]}
    if kind == "deployment":
        # Adopting must not undo a restart or a scale that happened since: keep the live replica count
        # and template annotations; everything else is forced back to desired.
        body["spec"] = dict(desired["spec"])
        live_annotations = ((existing.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations")
        if live_annotations:
            body["spec"]["template"] = {
                **desired["spec"]["template"],
                "metadata": {**desired["spec"]["template"]["metadata"], "annotations": live_annotations},
            }
    if kind == "service":
        body["spec"] = {key: value for key, value in desired["spec"].items() if key != "clusterIP"}
    send(clients, "PATCH", object_path(kind, namespace, name), body, content_type=STRATEGIC_MERGE_PATCH)
    return "adopted"


def _apply_all(clients: KubeClients, manifests: dict[str, dict[str, Any]]) -> dict[str, str]:
    """:func:`_apply` each manifest in turn (Deployment, Service, PDB), the first failure raised.

    One after the other, not side by side: threads would save two API round trips per create (milliseconds,
    next to a model load of minutes) but cost ~15% more worker CPU per create (measured: 3.15 vs 2.69 ms, thread
    hand-offs and GIL switches), and a worker host busy with many jobs is short of CPU, not of waiting time."""
    return {kind: _apply(clients, kind, manifest) for kind, manifest in manifests.items()}


_WAITING_TO_BE_CREATED = Deployment.status.in_((DeploymentStatus.PENDING, DeploymentStatus.FAILED))
_CREATING_AFTER_APPLY = (
    ("status", case((_WAITING_TO_BE_CREATED, DeploymentStatus.CREATING), else_=Deployment.status)),
    ("status_reason", case((_WAITING_TO_BE_CREATED, None), else_=Deployment.status_reason)),
    ("status_message", case((_WAITING_TO_BE_CREATED, None), else_=Deployment.status_message)),
)


def execute_create(job: ClaimedJob) -> Outcome:
    """Apply Deployment, Service and PDB; mark the deployment CREATING; the status poller takes over."""
    deployment = deployment_of(job)
    if deployment.status in (DeploymentStatus.DELETING, DeploymentStatus.DELETED):
        return Outcome({"skipped": f"deployment is {deployment.status}"})
    clients = get_clients()
    ensure_namespace(clients, deployment.k8s_namespace)
    actions = _apply_all(clients, manifests_for(deployment))
    # CREATING from the moment the job succeeds: written by the statement that ends the job, never alone.
    creating = DeploymentChange(deployment.id, _CREATING_AFTER_APPLY)
    result = {
        "deployment_id": str(deployment.id),
        "k8s_name": deployment.k8s_name,
        "namespace": deployment.k8s_namespace,
        "actions": actions,
        "observe": True,
    }
    return Outcome(result, change=creating)


def fail_create(job_id: uuid.UUID | str, error: dict[str, Any]) -> None:
    """A create that cannot succeed: FAILED with the reason, GPUs given back (nothing will run)."""
    _mark_failed(job_id, error, release_gpus=True)


# ------------------------------------------------------------------------------------------ delete
def execute_delete(job: ClaimedJob) -> dict[str, Any]:
    """Remove Deployment, Service and PDB (NotFound = already gone), release the GPUs, mark DELETED."""
    deployment = deployment_of(job)
    clients = get_clients()
    name, namespace = deployment.k8s_name, deployment.k8s_namespace
    removed = {
        kind: _delete_if_ours(clients, object_path(kind, namespace, name), str(deployment.id))
        for kind in ("deployment", "service", "pdb")
    }
    with session_scope() as session:
        freed = admission.release(session, deployment.id)
        session.execute(
            update(Deployment)
            .where(Deployment.id == deployment.id)
            .values(
                status=DeploymentStatus.DELETED,
                status_reason=None,
                status_message=None,
                replicas_ready=0,
                endpoint=None,  # no Service answers there any more (the name may soon be another's)
                deleted_at=func.coalesce(Deployment.deleted_at, func.now()),
            )
        )
        session.execute(
            update(PodAllocation)
            .where(PodAllocation.deployment_id == deployment.id, PodAllocation.terminated_at.is_(None))
            .values(terminated_at=func.now())
        )
    return {"deployment_id": str(deployment.id), "removed": removed, "gpus_released": freed}


def _delete_if_ours(clients: KubeClients, path: str, deployment_id: str) -> str:
    """Delete the object at ``path`` if it is this deployment's: "deleted", "absent" (none there) or "foreign".

    An object of that name that is not ours is left alone: a create that failed with ``name_conflict`` never
    owned it, and deleting by name alone would remove someone else's workload. The delete is conditional on the
    uid read here, so an object replaced in between is not deleted either (the conflict is retried: read again)."""
    existing = get(clients, path)
    if existing is None:
        return "absent"
    if not _is_ours(existing, deployment_id):
        return "foreign"
    options = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "propagationPolicy": "Background",
        "preconditions": {"uid": existing["metadata"]["uid"]},
    }
    try:
        send(clients, "DELETE", path, options)
    except PermanentClusterError as error:
        if error.status != 404:
            raise
        return "absent"
    return "deleted"


def fail_delete(job_id: uuid.UUID | str, error: dict[str, Any]) -> uuid.UUID | None:
    """The cluster refused the delete: the job carries the error, and the deployment, still there (or partly
    removed), gets back the status it had (a restart in progress stays RESTARTING, so it still ends), with
    ``delete_failed`` until the next observation; returns its id, for the caller to observe it again at once,
    which tells what is left. Marking it FAILED showed a serving deployment as failed, and refused restarts."""
    with session_scope() as session:
        found = _failed_job_target(session, job_id)
        if found is None:
            return None
        job, deployment_id = found
        try:
            before = DeploymentStatus(str((job.params or {}).get("status_before")))
        except ValueError:  # a job from before the status was recorded
            before = DeploymentStatus.RUNNING
        if before == DeploymentStatus.DELETING:
            before = DeploymentStatus.RUNNING
        reverted = session.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id, Deployment.status == DeploymentStatus.DELETING)
            .values(status=before, status_reason="delete_failed", status_message=error.get("message"))
            .returning(Deployment.id)
        ).first()
    return deployment_id if reverted is not None else None


# ----------------------------------------------------------------------------------------- restart
def restart_patch(job: ClaimedJob) -> dict[str, Any]:
    """The restart's Deployment patch. The annotation value comes from the job, so a retried patch is a
    no-op instead of a second rollout. One replica: surge one extra pod (maxUnavailable 0) so the only
    replica stays up; its GPUs were admitted when the restart was requested."""
    spec: dict[str, Any] = {
        "template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: str(uuid.UUID(job.job_id))}}},
    }
    if job.params.get("surge"):
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    return {"spec": spec}


def execute_restart(job: ClaimedJob) -> dict[str, Any]:
    deployment = deployment_of(job)
    if deployment.status in (DeploymentStatus.DELETING, DeploymentStatus.DELETED):
        return {"skipped": f"deployment is {deployment.status}"}
    clients = get_clients()
    path = object_path("deployment", deployment.k8s_namespace, deployment.k8s_name)
    if get(clients, path) is None:
        raise PermanentClusterError(
            "deployment_missing", f"Deployment {deployment.k8s_name} does not exist in the cluster", status=404
        )
    send(clients, "PATCH", path, restart_patch(job), content_type=STRATEGIC_MERGE_PATCH)
    return {
        "deployment_id": str(deployment.id),
        "restarted_at": str(uuid.UUID(job.job_id)),
        "surge": bool(job.params.get("surge")),
        "observe": True,
    }


def finish_restart_rollout(clients: KubeClients, deployment: Deployment) -> None:
    """After a surged single-replica restart: put the no-surge strategy back (needed so a GPU-full cluster
    cannot deadlock the next rollout) and give the temporary replica's GPUs back."""
    desired_strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    send(
        clients,
        "PATCH",
        object_path("deployment", deployment.k8s_namespace, deployment.k8s_name),
        {"spec": {"strategy": desired_strategy}},
        content_type=STRATEGIC_MERGE_PATCH,
    )


def fail_restart(job_id: uuid.UUID | str, error: dict[str, Any]) -> None:
    """The pods were not touched (or the patch was refused): release the surge, back to RUNNING, re-observe."""
    with session_scope() as session:
        found = _failed_job_target(session, job_id)
        if found is None:
            return
        job, deployment_id = found
        admission.release(session, deployment_id, job_id=job.id)
        session.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id, Deployment.status == DeploymentStatus.RESTARTING)
            .values(
                status=DeploymentStatus.RUNNING, status_reason="restart_failed", status_message=error.get("message")
            )
        )


# ------------------------------------------------------------------------------------------- scale
def execute_scale(job: ClaimedJob) -> dict[str, Any]:
    deployment = deployment_of(job)
    if deployment.status in (DeploymentStatus.DELETING, DeploymentStatus.DELETED):
        return {"skipped": f"deployment is {deployment.status}"}
    replicas = int(job.params.get("replicas_after", deployment.replicas_desired))
    clients = get_clients()
    send(
        clients,
        "PATCH",
        object_path("deployment", deployment.k8s_namespace, deployment.k8s_name) + "/scale",
        {"spec": {"replicas": replicas}},
        content_type=STRATEGIC_MERGE_PATCH,
    )
    with session_scope() as session:
        session.execute(
            update(ScalingEvent)
            .where(ScalingEvent.job_id == uuid.UUID(job.job_id))
            .values(status=ScalingEventStatus.SUCCEEDED)
        )
    return {"deployment_id": str(deployment.id), "replicas": replicas, "observe": True}


def fail_scale(job_id: uuid.UUID | str, error: dict[str, Any]) -> None:
    """The cluster never took the new replica count: the scaling event is FAILED, and the deployment goes back to
    the count it had, with its GPUs. The request had already written the new count and admitted (scale-up) or
    released (scale-down) reservations; left so, the service believed in replicas that never ran, or counted the
    GPUs of replicas still running as free, for good."""
    with session_scope() as session:
        session.execute(
            update(ScalingEvent)
            .where(ScalingEvent.job_id == uuid.UUID(str(job_id)))
            .values(
                status=ScalingEventStatus.FAILED,
                inputs=ScalingEvent.inputs.op("||")(func.jsonb_build_object("error", error.get("message", ""))),
            )
        )
        found = _failed_job_target(session, job_id)
        if found is None:
            return
        job, deployment_id = found
        before, after = job.params.get("replicas_before"), job.params.get("replicas_after")
        deployment = session.get(Deployment, deployment_id, with_for_update=True)
        if deployment is None or before is None or deployment.replicas_desired != after:
            return  # gone, or a newer change has set another count since: that one stands
        if after > before:
            admission.release(session, deployment.id, job_id=job.id)
        elif after < before:
            _reserve_running_again(session, deployment, before)
        deployment.replicas_desired = before
        if deployment.status == DeploymentStatus.SCALING:
            deployment.status = DeploymentStatus.RUNNING if before > 0 else DeploymentStatus.STOPPED
        deployment.status_reason = "scale_failed"
        deployment.status_message = error.get("message")


def _reserve_running_again(session: Any, deployment: Deployment, replicas: int) -> None:
    """After a scale-down the cluster refused: reserve the replicas it still runs where its pod rows say they run
    (else wherever admission finds room, without the quota check: they are the tenant's replicas already)."""
    running: dict[str, int] = {}
    for node_name in session.scalars(
        select(PodAllocation.node_name).where(
            PodAllocation.deployment_id == deployment.id,
            PodAllocation.terminated_at.is_(None),
            PodAllocation.node_name.is_not(None),
            PodAllocation.phase.not_in(FINISHED_POD_PHASES),
        )
    ):
        running[node_name] = running.get(node_name, 0) + 1
    if sum(running.values()) == replicas:
        admission.reserve_where_running(session, deployment, running)
        return
    held = session.scalar(
        select(func.coalesce(func.sum(GpuReservation.replicas), 0)).where(
            GpuReservation.deployment_id == deployment.id, GpuReservation.released_at.is_(None)
        )
    )
    missing = replicas - int(held or 0)
    if missing > 0:
        try:
            admission.admit_replicas(session, deployment, replicas=missing, check_quota=False)
        except AdmissionError:
            # Their GPUs went to another admission meanwhile: the resource tracker flags the mismatch.
            logger.warning("could not reserve the replicas of a failed scale-down again",
                           extra={"deployment_id": str(deployment.id), "replicas": missing})


# ----------------------------------------------------------------------------------------- helpers
def _failed_job_target(session: Any, job_id: uuid.UUID | str) -> tuple[Job, uuid.UUID] | None:
    """The failed job and its deployment's id; None when either is missing (a malformed target id: the job
    failed with deployment_not_found, and there is no deployment to mark)."""
    job = session.get(Job, uuid.UUID(str(job_id)))
    if job is None:
        return None
    try:
        return job, uuid.UUID(job.target_id)
    except ValueError:
        return None


def _mark_failed(job_id: uuid.UUID | str, error: dict[str, Any], *, release_gpus: bool) -> None:
    with session_scope() as session:
        found = _failed_job_target(session, job_id)
        if found is None:
            return
        _, deployment_id = found
        if release_gpus:
            admission.release(session, deployment_id)
        values: dict[str, Any] = {
            "status": DeploymentStatus.FAILED,
            "status_reason": str(error.get("code", "failed"))[:128],
            "status_message": error.get("message"),
        }
        if error.get("code") == "name_conflict":
            values["endpoint"] = None  # the Service of that name is someone else's: its address is not ours
        session.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id, Deployment.status != DeploymentStatus.DELETED)
            .values(**values)
        )
