"""Deployment endpoints: create, list, read, status, restart, delete.

Request flow for changes: validate (schema) -> authorize (blueprint hook: token scope + tenant) ->
``workers.requests.request_*`` (business rules, GPU admission, rows; no commit) -> commit -> enqueue.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from flask import current_app, request
from flask.views import MethodView

from models.db import get_engine
from web.auth import requested_by
from web.database import read_session, request_session
from web.extensions import not_json_error, takes_no_body
from web.idempotency import IDEMPOTENCY_KEY_PARAMETER, fingerprint, idempotency_key
from web.internal.common import internal_blueprint
from web.internal.deployments.schemas import (
    DeploymentCreateSchema,
    DeploymentPageSchema,
    DeploymentQueryArgsSchema,
    DeploymentSchema,
    DeploymentStatusSchema,
    SubmittedJobSchema,
)
from web.submission import accepted_response, commit_and_enqueue
from web.tenancy import current_tenant_id
from workers import queries, requests
from workers.requests import CreateDeploymentSpec, Submitted

blp = internal_blueprint("Deployments", __name__, "/deployments", "vLLM model deployments on the GPU cluster")

_CHANGE_RESPONSES = {"parameters": [IDEMPOTENCY_KEY_PARAMETER]}
LOCATION_HEADER = {"Location": {"description": "URL of the job to poll", "schema": {"type": "string"}}}


@blp.before_request
def require_json_body() -> None:
    """A create needs a body: none at all is the same 415 as one that is not JSON (see web.extensions)."""
    if request.method == "POST" and request.endpoint == "Deployments.DeploymentCreate" and not request.is_json:
        raise not_json_error()


def _spec_from_body(body: dict[str, Any]) -> CreateDeploymentSpec:
    autoscaling = body.get("autoscaling") or {}
    return CreateDeploymentSpec(
        model_id=body["model_id"],
        replicas=body["replicas"],
        gpus_per_replica=body["gpus_per_replica"],
        name=body.get("name"),
        gpu_type=body.get("gpu_type"),
        max_model_len=body.get("max_model_len"),
        dtype=body.get("dtype"),
        vllm_args=body["vllm_args"],
        autoscaling_enabled=autoscaling.get("enabled", False),
        min_replicas=autoscaling.get("min_replicas"),
        max_replicas=autoscaling.get("max_replicas"),
        target_gpu_utilization=autoscaling.get("target_gpu_utilization"),
        autoscaling_targets=autoscaling.get("targets", {}),
    )


def _submit_change(request_change: Callable[..., Submitted], operation: str, deployment_id: uuid.UUID | str):
    """Submit a bodyless change of one deployment (delete, restart): write the job, commit, enqueue, 202."""
    submitted = request_change(
        request_session(),
        tenant_id=current_tenant_id(),
        deployment_id=deployment_id,
        requested_by=requested_by(),
        idempotency_key=idempotency_key(),
        fingerprint=fingerprint(operation, str(deployment_id), None),
    )
    commit_and_enqueue(submitted)
    return accepted_response(submitted)


@blp.route("/create")
class DeploymentCreate(MethodView):
    @blp.arguments(DeploymentCreateSchema)
    @blp.response(202, SubmittedJobSchema, headers=LOCATION_HEADER)
    @blp.alt_response(400, response="BAD_REQUEST")
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.doc(**_CHANGE_RESPONSES)
    def post(self, body: dict[str, Any]):
        """Create a deployment (admitted against free GPUs and the tenant's quota)"""
        tenant_id = current_tenant_id()
        submitted = requests.request_create(
            request_session(),
            tenant_id=tenant_id,
            spec=_spec_from_body(body),
            requested_by=requested_by(),
            idempotency_key=idempotency_key(),
            fingerprint=fingerprint("deployment.create", None, body),
        )
        commit_and_enqueue(submitted)
        return accepted_response(submitted)


@blp.route("")
class Deployments(MethodView):
    @blp.arguments(DeploymentQueryArgsSchema, location="query")
    @blp.response(200, DeploymentPageSchema)
    def get(self, args: dict[str, Any]):
        """List the tenant's deployments, filtered, newest first, one cursor page at a time"""
        items, next_cursor = queries.list_deployments(read_session(), current_tenant_id(), **args)
        return {"items": items, "next_cursor": next_cursor}


@blp.route("/<resource_id('create'):deployment_id>")
class DeploymentById(MethodView):
    @blp.response(200, DeploymentSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, deployment_id: uuid.UUID | str):
        """Get a deployment's desired shape and last observed state"""
        return queries.get_deployment(read_session(), current_tenant_id(), deployment_id)

    @blp.response(202, SubmittedJobSchema, headers=LOCATION_HEADER)
    @blp.alt_response(400, response="BAD_REQUEST")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    @blp.doc(**_CHANGE_RESPONSES)
    @takes_no_body
    def delete(self, deployment_id: uuid.UUID | str):
        """Delete a deployment: its Deployment, Service and PodDisruptionBudget, and release its GPUs"""
        return _submit_change(requests.request_delete, "deployment.delete", deployment_id)


@blp.route("/<resource_id('create'):deployment_id>/status")
class DeploymentStatusById(MethodView):
    @blp.response(200, DeploymentStatusSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, deployment_id: uuid.UUID | str):
        """Get status, reason, replicas, endpoint, pods, last observation time and the job in flight"""
        view = queries.read_deployment_status(get_engine(), current_tenant_id(), deployment_id)
        # Clients poll this: the view already holds exactly the schema's fields as JSON-ready values (the app's
        # JSON provider writes the datetime as ISO 8601, as the schema would), so it is sent as it is instead of
        # paying for a marshmallow dump. The schema above still documents it, and a test holds the two equal.
        return current_app.json.response(view)


@blp.route("/<resource_id('create'):deployment_id>/restart")
class DeploymentRestart(MethodView):
    @blp.response(202, SubmittedJobSchema, headers=LOCATION_HEADER)
    @blp.alt_response(400, response="BAD_REQUEST")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    @blp.doc(**_CHANGE_RESPONSES)
    @takes_no_body
    def post(self, deployment_id: uuid.UUID | str):
        """Restart a deployment's pods, one at a time (never all replicas down at once)

        A single-replica deployment is restarted with one temporary extra replica, so it is never down. Its
        GPUs are admitted like a scale-up (409 `insufficient_gpu` when no node of its GPU type has room) but
        not counted against the tenant's quota: a tenant using all of its quota can still restart. They are
        given back when the rollout ends.

        409 codes: `deployment_busy` (another operation is in progress), `invalid_state` (not RUNNING or
        DEGRADED), `nothing_to_restart` (STOPPED: scaled to 0 replicas), `insufficient_gpu` (no room for the
        extra replica).
        """
        return _submit_change(requests.request_restart, "deployment.restart", deployment_id)
