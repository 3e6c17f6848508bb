"""Admin jobs: read any job, cancel a drain."""

from __future__ import annotations

import uuid

from flask.views import MethodView

from web.admin.common import admin_blueprint
from web.admin.jobs.schemas import AdminJobSchema
from web.database import request_session
from web.extensions import takes_no_body
from workers import drain, queries

blp = admin_blueprint("AdminJobs", __name__, "/jobs", "Jobs of every tenant and node jobs; cancel a drain")


@blp.route("/<resource_id:job_id>")
class AdminJobById(MethodView):
    @blp.response(200, AdminJobSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, job_id: uuid.UUID | str):
        """Get any job: state, progress (a drain's phase, pods, what it waits on), error, timestamps"""
        return queries.get_job(request_session(), None, job_id)


@blp.route("/<resource_id:job_id>/cancel")
class AdminJobCancel(MethodView):
    @blp.response(202, AdminJobSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    @takes_no_body
    def post(self, job_id: uuid.UUID | str):
        """Cancel a drain: it stops at its next step, withdraws its surges and leaves the node cordoned"""
        session = request_session()
        job = drain.request_cancel(session, job_id)
        session.commit()
        return job
