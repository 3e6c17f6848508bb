"""Job status endpoint."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from web.database import read_session
from web.internal.common import internal_blueprint
from web.internal.jobs.schemas import JobSchema
from web.tenancy import current_tenant_id
from workers import queries

blp = internal_blueprint("Jobs", __name__, "/jobs", "Asynchronous operations: state, attempts, progress, error")


@blp.route("/<resource_id:job_id>")
class JobById(MethodView):
    @blp.response(200, JobSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, job_id: uuid.UUID | str):
        """Get a job's state, type, target, attempts, progress, error and timestamps"""
        return queries.get_job(read_session(), current_tenant_id(), job_id)
