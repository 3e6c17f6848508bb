"""Models: set the replica count of the deployment serving a model (any tenant)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from web.admin.common import admin_blueprint, commit_and_accept
from web.admin.jobs.schemas import SubmittedAdminJobSchema
from web.admin.models.schemas import ModelScaleRequestSchema
from web.auth import requested_by
from web.database import request_session
from web.idempotency import IDEMPOTENCY_KEY_PARAMETER, fingerprint, idempotency_key
from workers import admin_queries, requests
from workers.domain import AdmissionError

blp = admin_blueprint("AdminModels", __name__, "/models", "Manual scaling of model deployments")


# model_id is a Hugging Face id ("org/name"): the path converter keeps its slash.
@blp.route("/<path:model_id>/scale")
class AdminModelScale(MethodView):
    @blp.arguments(ModelScaleRequestSchema)
    @blp.response(202, SubmittedAdminJobSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    @blp.doc(parameters=[IDEMPOTENCY_KEY_PARAMETER])
    def post(self, body: dict[str, Any], model_id: str):
        """Scale a model's deployment (202 job); scale-ups pass GPU admission and the tenant's quota"""
        session = request_session()
        deployment = admin_queries.deployment_for_model(session, model_id, body["deployment_id"])
        try:
            submitted = requests.request_scale(
                session,
                tenant_id=None,
                deployment_id=deployment.id,
                replicas=body["replicas"],
                reason=body["reason"],
                requested_by=requested_by(),
                trigger="manual",
                idempotency_key=idempotency_key(),
                fingerprint=fingerprint("model.scale", model_id, {**body, "deployment_id": str(deployment.id)}),
                inputs={"source": "admin_api", "model_id": model_id},
            )
        except AdmissionError as error:
            # The refusal is part of the audit trail too ("every scale writes a scaling_events row").
            session.rollback()
            admin_queries.record_blocked_scale(
                session,
                deployment.id,
                replicas=body["replicas"],
                reason=body["reason"],
                actor=requested_by(),
                error=error,
            )
            session.commit()
            raise
        return commit_and_accept(submitted, deployment_id=deployment.id)
