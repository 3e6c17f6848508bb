"""GPU nodes: the inventory view, and drain / cordon / uncordon as jobs."""

from __future__ import annotations

from typing import Any

from flask import jsonify
from flask.views import MethodView

from models import JobType
from web.admin.common import admin_blueprint, commit_and_accept
from web.admin.jobs.schemas import AdminJobSchema, SubmittedAdminJobSchema
from web.admin.nodes.schemas import (
    CordonRequestSchema,
    DrainImpactSchema,
    DrainRequestSchema,
    NodePageSchema,
    NodeQueryArgsSchema,
    NodeSchema,
)
from web.auth import requested_by
from web.database import request_session
from web.errors import ApiError
from web.extensions import takes_no_body
from web.idempotency import IDEMPOTENCY_KEY_PARAMETER, fingerprint, idempotency_key
from workers import admin_queries, cluster_errors, drain, node_ops
from workers.domain import NotFoundError

blp = admin_blueprint("AdminNodes", __name__, "/infrastructure/nodes", "GPU nodes: inventory, drain, cordon")

NODE_NAME = "<string(maxlength=253):node_id>"
_CHANGE_DOC = {"parameters": [IDEMPOTENCY_KEY_PARAMETER]}


@blp.route("")
class AdminNodes(MethodView):
    @blp.arguments(NodeQueryArgsSchema, location="query")
    @blp.response(200, NodePageSchema)
    def get(self, args: dict[str, Any]):
        """List GPU nodes: GPUs, CPU/memory, readiness, cordon, taints, deployments and pods, last observed"""
        items, next_cursor = admin_queries.list_nodes(request_session(), **args)
        return {"items": items, "next_cursor": next_cursor}


@blp.route(f"/{NODE_NAME}")
class AdminNodeById(MethodView):
    @blp.response(200, NodeSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, node_id: str):
        """Get one GPU node"""
        view = admin_queries.node_detail(request_session(), node_id)
        if view is None:
            raise NotFoundError("node_not_found", f"no GPU node named {node_id!r}", {"node": node_id})
        return view


def _submit(node_id: str, job_type: JobType, params: dict[str, Any], operation: str, body: dict[str, Any]):
    session = request_session()
    submission: dict[str, Any] = {
        "node_name": node_id,
        "requested_by": requested_by(),
        "idempotency_key": idempotency_key(),
        "fingerprint": fingerprint(operation, node_id, body),
    }
    if job_type == JobType.NODE_DRAIN:
        submitted = drain.request_drain(session, options=drain.DrainOptions(**params), **submission)
    else:
        submitted = node_ops.request_node_job(session, job_type=job_type, params=params, **submission)
    return commit_and_accept(submitted)


def _cluster_unavailable(error: cluster_errors.ClusterError) -> ApiError:
    if error.status == 404:
        return ApiError(404, "node_not_found", f"the cluster has no node for this request: {error.message}")
    return ApiError(
        503,
        "cluster_unavailable",
        f"the cluster did not answer the dry run: {error.message}",
        {"cluster_error": error.code},
    )


@blp.route(f"/{NODE_NAME}/drain")
class AdminNodeDrain(MethodView):
    @blp.arguments(DrainRequestSchema)
    @blp.response(202, SubmittedAdminJobSchema)
    @blp.alt_response(200, schema=DrainImpactSchema, description="dry_run: the impact, nothing changed")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    @blp.doc(**_CHANGE_DOC)
    def post(self, body: dict[str, Any], node_id: str):
        """Drain a node make-before-break (202 job), or report the impact (dry_run, 200)"""
        params = {key: value for key, value in body.items() if key != "dry_run"}
        if body["dry_run"]:
            session = request_session()
            try:
                impact = drain.plan_impact(session, node_id, drain.DrainOptions(**params))
            except cluster_errors.ClusterError as error:
                raise _cluster_unavailable(error) from error
            finally:
                session.rollback()  # the dry run reserved and cordoned inside its transaction only
            # A Response bypasses the 202 schema: the dry run answers with its own shape.
            response = jsonify(DrainImpactSchema().dump(impact))
            response.status_code = 200
            return response
        return _submit(node_id, JobType.NODE_DRAIN, params, "node.drain", body)

    @blp.response(202, AdminJobSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @takes_no_body
    def delete(self, node_id: str):
        """Cancel the node's running drain (same as POST /admin/v1/jobs/{job_id}/cancel)"""
        session = request_session()
        node_ops.find_node(session, node_id)  # an unknown node is node_not_found, not "no drain"
        job = node_ops.active_node_job(session, node_id, JobType.NODE_DRAIN)
        if job is None:
            raise NotFoundError("no_active_drain", f"node {node_id} has no drain in progress", {"node": node_id})
        job = drain.request_cancel(session, job.id)
        session.commit()
        return job


@blp.route(f"/{NODE_NAME}/cordon")
class AdminNodeCordon(MethodView):
    @blp.arguments(CordonRequestSchema)
    @blp.response(202, SubmittedAdminJobSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.doc(**_CHANGE_DOC)
    def post(self, body: dict[str, Any], node_id: str):
        """Cordon a node (job): no new pods are scheduled on it; who and why are recorded"""
        return _submit(node_id, JobType.NODE_CORDON, body, "node.cordon", body)


@blp.route(f"/{NODE_NAME}/uncordon")
class AdminNodeUncordon(MethodView):
    @blp.arguments(CordonRequestSchema)
    @blp.response(202, SubmittedAdminJobSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    @blp.doc(**_CHANGE_DOC)
    def post(self, body: dict[str, Any], node_id: str):
        """Uncordon a node (job); refused while a drain of the node runs"""
        return _submit(node_id, JobType.NODE_UNCORDON, body, "node.uncordon", body)
