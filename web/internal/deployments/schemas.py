"""Deployment schemas: the create body, list filters, and the representations returned.

Shape rules live here (what Kubernetes and vLLM would reject), business rules in ``workers``
(capacity, quota, names taken). Everything a client can get wrong about the shape is a 422 with the
offending field named, before any database work.
"""

from __future__ import annotations

import math
import re
from typing import Any

import marshmallow as ma
from marshmallow import validate

from models import DeploymentStatus
from web.extensions import QueryInteger, Schema, StrictBoolean, StrictInteger
from workers.autoscaler import GPU_UTILIZATION, KV_CACHE_USAGE, TARGET_ALIASES
from workers.domain import InvalidRequestError
from workers.requests import MAX_REPLICAS
from workers.vllm_args import validate_vllm_args

# Hugging Face repo ids: "name" or "org/name"; each part starts and ends with an alphanumeric, may hold
# '-', '_' and '.', at most 96 characters, and never '--' or '..' (the Hub refuses those).
HF_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
HF_MODEL_ID_PATTERN = re.compile(rf"^(?:{HF_PART}/)?{HF_PART}\Z")
# DNS-1035 label (Service names). 40 characters, not 63, leaves room for the suffixes the workers derive
# (tenant prefix, "-pdb", pod hashes) while keeping every derived name a valid label.
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?\Z")
NAME_MAX_LENGTH = 40
# A Kubernetes label value (the GPU product label, e.g. "nvidia-l40s" or "NVIDIA-A100-SXM4-80GB").
LABEL_VALUE_PATTERN = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z")
GPUS_PER_REPLICA_CHOICES = (1, 2, 4, 8)
MAX_MODEL_LEN = 1_048_576
VLLM_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
# Highest meaningful target per metric (queue depth has none); kv_cache_usage above 1 is read as a percent.
_TARGET_MAXIMUM = {GPU_UTILIZATION: 100.0, KV_CACHE_USAGE: 100.0}


def _check_model_id(value: str) -> None:
    if len(value) > 193 or not HF_MODEL_ID_PATTERN.match(value) or "--" in value or ".." in value:
        raise ma.ValidationError(
            "Must be a Hugging Face model id such as 'meta-llama/Llama-3.1-8B-Instruct': 'org/name' or 'name', "
            "letters, digits, '-', '_', '.', each part at most 96 characters, no '--' or '..'."
        )


def _check_name(value: str) -> None:
    if len(value) > NAME_MAX_LENGTH or not NAME_PATTERN.match(value):
        raise ma.ValidationError(
            f"Must be a DNS-1035 label of at most {NAME_MAX_LENGTH} characters: lowercase letters, digits "
            "and '-', starting with a letter and ending with a letter or digit."
        )


def _check_gpu_type(value: str) -> None:
    if not LABEL_VALUE_PATTERN.match(value):
        raise ma.ValidationError(
            "Must be a GPU product label value (e.g. 'nvidia-l40s'): at most 63 characters, alphanumerics, "
            "'-', '_', '.', starting and ending with an alphanumeric."
        )


class AutoscalingSchema(Schema):
    enabled = StrictBoolean(load_default=False)
    min_replicas = StrictInteger(validate=validate.Range(1, MAX_REPLICAS))
    max_replicas = StrictInteger(validate=validate.Range(1, MAX_REPLICAS))
    target_gpu_utilization = StrictInteger(
        validate=validate.Range(1, 100), metadata={"description": "Percent GPU utilisation to aim for"}
    )
    targets = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.Float(allow_nan=False),
        load_default=dict,
        metadata={
            "description": "Per-metric targets, e.g. {\"queue_depth\": 5, \"kv_cache_usage\": 0.8}. Names: "
            + ", ".join(sorted(TARGET_ALIASES))
            + ". gpu_utilization is a percent (above 0, at most 100); queue_depth is waiting requests per replica "
            "(above 0); kv_cache_usage is a fraction (above 0, at most 1) or a percent (above 1, at most 100)."
        },
    )

    @ma.validates("targets")
    def check_targets(self, targets: dict[str, float], **_kwargs: Any) -> None:
        """An unknown name or a value out of its metric's range would be stored, then skipped by the autoscaler
        without a word: refused here instead, naming it."""
        problems = {}
        named: dict[str, str] = {}
        for name, value in targets.items():
            metric = TARGET_ALIASES.get(name)
            if metric is not None and metric in named:
                problems[name] = f"Names the same metric as {named[metric]!r}: give one."
                continue
            if metric is not None:
                named[metric] = name
            if metric is None:
                problems[name] = f"Unknown target; use one of {', '.join(sorted(TARGET_ALIASES))}."
            elif not 0 < value <= _TARGET_MAXIMUM.get(metric, math.inf):
                highest = _TARGET_MAXIMUM.get(metric)
                problems[name] = "Must be above 0" + (f" and at most {highest:g}." if highest else ".")
        if problems:
            raise ma.ValidationError(problems)

    @ma.validates_schema
    def check_bounds(self, data: dict[str, Any], **_kwargs: Any) -> None:
        low, high = data.get("min_replicas"), data.get("max_replicas")
        if low is not None and high is not None and low > high:
            raise ma.ValidationError("min_replicas must not exceed max_replicas.", "min_replicas")
        gpu_targets = [name for name in data.get("targets") or {} if TARGET_ALIASES.get(name) == GPU_UTILIZATION]
        if data.get("target_gpu_utilization") is not None and gpu_targets:
            raise ma.ValidationError(
                f"Give the GPU utilization target once: target_gpu_utilization or targets.{gpu_targets[0]}.",
                "targets",
            )


class DeploymentCreateSchema(Schema):
    """Body of ``POST /internal/deployments/create``."""

    model_id = ma.fields.String(
        required=True, validate=_check_model_id, metadata={"example": "meta-llama/Llama-3.1-8B-Instruct"}
    )
    replicas = StrictInteger(load_default=1, validate=validate.Range(1, MAX_REPLICAS))
    gpus_per_replica = StrictInteger(
        load_default=1,
        validate=validate.OneOf(GPUS_PER_REPLICA_CHOICES),
        metadata={"description": "GPUs per replica; becomes vLLM's --tensor-parallel-size"},
    )
    name = ma.fields.String(
        validate=_check_name, metadata={"description": "DNS-1035 label; derived from model_id when omitted"}
    )
    gpu_type = ma.fields.String(
        validate=_check_gpu_type, metadata={"description": "GPU product label value; the default GPU type if omitted"}
    )
    max_model_len = StrictInteger(validate=validate.Range(1, MAX_MODEL_LEN))
    dtype = ma.fields.String(validate=validate.OneOf(VLLM_DTYPES))
    vllm_args = ma.fields.List(
        ma.fields.String(validate=validate.Length(1, 256)),
        load_default=list,
        validate=validate.Length(max=64),
        metadata={"description": "Extra vLLM server arguments from an allow-list, e.g. ['--enable-prefix-caching']"},
    )
    autoscaling = ma.fields.Nested(AutoscalingSchema)

    @ma.validates("vllm_args")
    def check_vllm_args(self, value: list[str], **_kwargs: Any) -> None:
        try:
            validate_vllm_args(value)
        except InvalidRequestError as error:
            raise ma.ValidationError(error.message) from error

    @ma.validates_schema(skip_on_field_errors=True)
    def check_autoscaling(self, data: dict[str, Any], **_kwargs: Any) -> None:
        autoscaling = data.get("autoscaling")
        if not autoscaling or not autoscaling.get("enabled"):
            return
        replicas = data["replicas"]
        low = autoscaling.get("min_replicas", replicas)
        high = autoscaling.get("max_replicas", replicas)
        if not low <= replicas <= high:
            raise ma.ValidationError(
                f"With autoscaling enabled, min_replicas ({low}) <= replicas ({replicas}) <= max_replicas ({high}) "
                "must hold.",
                "autoscaling",
            )

    @ma.post_load
    def normalise_vllm_args(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        # Canonical form, so the stored args and the idempotency fingerprint do not depend on spelling.
        data["vllm_args"] = validate_vllm_args(data["vllm_args"])
        return data


class DeploymentQueryArgsSchema(Schema):
    """Filters and cursor pagination for ``GET /internal/deployments``."""

    status = ma.fields.Enum(DeploymentStatus, by_value=True)
    model_id = ma.fields.String(validate=validate.Length(1, 255))
    gpu_type = ma.fields.String(validate=_check_gpu_type)
    name = ma.fields.String(validate=validate.Length(1, 63))
    limit = QueryInteger(load_default=50, validate=validate.Range(1, 200))
    cursor = ma.fields.String(
        validate=validate.Length(1, 512), metadata={"description": "`next_cursor` of the previous page"}
    )


class AutoscalingOutputSchema(Schema):
    enabled = ma.fields.Boolean(attribute="autoscaling_enabled", dump_only=True)
    min_replicas = ma.fields.Integer(dump_only=True)
    max_replicas = ma.fields.Integer(dump_only=True)
    target_gpu_utilization = ma.fields.Integer(dump_only=True, allow_none=True)
    targets = ma.fields.Dict(attribute="autoscaling_targets", dump_only=True)


STATUS_REASON_DESCRIPTION = (
    "Why the deployment is not (yet) healthy, as a code; `message` has the cluster's own words. "
    "`waiting_for_gpus` (pods cannot be scheduled), `pod_starting` (image pull, container start), "
    "`model_loading` (running, not ready yet), `replicas_unavailable` (fewer ready than desired), "
    "`image_pull_failure`, `crash_loop`, `oom_killed`, `model_load_timeout`, `progress_deadline_exceeded`, "
    "`node_not_ready`, `config_error`, `missing_in_cluster` (the Kubernetes Deployment was removed), "
    "`restart_failed`; when a job changing the deployment failed, that job's error code "
    "(e.g. `cluster_forbidden`, `name_conflict`). Null when healthy."
)


class DeploymentSchema(Schema):
    """A deployment: its desired shape and its last observed state."""

    id = ma.fields.UUID(dump_only=True)
    tenant_id = ma.fields.String(dump_only=True)
    name = ma.fields.String(dump_only=True)
    model_id = ma.fields.String(dump_only=True)
    image = ma.fields.String(dump_only=True)
    gpu_type = ma.fields.String(dump_only=True)
    gpus_per_replica = ma.fields.Integer(dump_only=True)
    replicas_desired = ma.fields.Integer(dump_only=True)
    replicas_ready = ma.fields.Integer(dump_only=True)
    max_model_len = ma.fields.Integer(dump_only=True, allow_none=True)
    dtype = ma.fields.String(dump_only=True, allow_none=True)
    vllm_args = ma.fields.List(ma.fields.String(), dump_only=True)
    autoscaling = ma.fields.Function(
        lambda deployment: AutoscalingOutputSchema().dump(deployment),
        dump_only=True,
        metadata={
            "type": "object",
            "description": "enabled, min_replicas, max_replicas, target_gpu_utilization, targets",
        },
    )
    k8s_namespace = ma.fields.String(dump_only=True)
    k8s_name = ma.fields.String(dump_only=True)
    endpoint = ma.fields.String(dump_only=True, allow_none=True)
    status = ma.fields.Enum(DeploymentStatus, by_value=True, dump_only=True)
    status_reason = ma.fields.String(
        dump_only=True, allow_none=True, metadata={"description": STATUS_REASON_DESCRIPTION}
    )
    status_message = ma.fields.String(dump_only=True, allow_none=True)
    active_job_id = ma.fields.UUID(dump_only=True, allow_none=True)
    last_observed_at = ma.fields.AwareDateTime(dump_only=True, allow_none=True)
    created_at = ma.fields.AwareDateTime(dump_only=True)
    updated_at = ma.fields.AwareDateTime(dump_only=True)
    deleted_at = ma.fields.AwareDateTime(dump_only=True, allow_none=True)


class DeploymentPageSchema(Schema):
    items = ma.fields.List(ma.fields.Nested(DeploymentSchema), dump_only=True)
    next_cursor = ma.fields.String(
        dump_only=True, allow_none=True, metadata={"description": "Pass as `cursor` for the next page; null at the end"}
    )


class SubmittedJobSchema(Schema):
    """Answer to every accepted change: the job to poll and where."""

    job_id = ma.fields.UUID(dump_only=True)
    deployment_id = ma.fields.UUID(dump_only=True)
    state = ma.fields.String(dump_only=True)
    status_url = ma.fields.String(dump_only=True)
    job_url = ma.fields.String(dump_only=True)
    replayed = ma.fields.Boolean(
        dump_only=True, metadata={"description": "True when an earlier request with this Idempotency-Key is answered"}
    )


class PodStatusSchema(Schema):
    name = ma.fields.String(dump_only=True)
    node = ma.fields.String(dump_only=True, allow_none=True)
    phase = ma.fields.String(dump_only=True, allow_none=True)
    ready = ma.fields.Boolean(dump_only=True)
    restarts = ma.fields.Integer(dump_only=True)
    reason = ma.fields.String(dump_only=True, allow_none=True)


class ActiveJobSchema(Schema):
    id = ma.fields.String(dump_only=True)
    type = ma.fields.String(dump_only=True)
    state = ma.fields.String(dump_only=True)


class DeploymentStatusSchema(Schema):
    """Status of one deployment as last observed from the cluster."""

    deployment_id = ma.fields.String(dump_only=True)
    name = ma.fields.String(dump_only=True)
    status = ma.fields.String(dump_only=True)
    reason = ma.fields.String(dump_only=True, allow_none=True, metadata={"description": STATUS_REASON_DESCRIPTION})
    message = ma.fields.String(dump_only=True, allow_none=True)
    replicas = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer(), dump_only=True)
    endpoint = ma.fields.String(dump_only=True, allow_none=True)
    pods = ma.fields.List(ma.fields.Nested(PodStatusSchema), dump_only=True)
    last_observed_at = ma.fields.AwareDateTime(dump_only=True, allow_none=True)
    active_job = ma.fields.Nested(ActiveJobSchema, dump_only=True, allow_none=True)
