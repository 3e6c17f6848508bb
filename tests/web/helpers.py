"""Request bodies and small assertions shared by the API tests."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from models import Deployment, DeploymentStatus, Job, JobState


def create_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_id": "meta-llama/Llama-3.1-8B-Instruct",
        "replicas": 1,
        "gpus_per_replica": 1,
        "gpu_type": "nvidia-l40s",
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


def error_code(response: Any) -> str:
    """The machine-readable code of an error response (asserting the envelope shape on the way)."""
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]["code"]


def settle(engine: Engine, job_id: str, deployment_status: DeploymentStatus = DeploymentStatus.RUNNING) -> None:
    """Play the worker's part: finish the job and set the deployment's observed status."""
    with Session(engine) as session:
        job = session.get(Job, uuid.UUID(job_id))
        job.state = JobState.SUCCEEDED
        session.get(Deployment, uuid.UUID(job.target_id)).status = deployment_status
        session.commit()
