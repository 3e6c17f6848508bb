"""Initial schema: tenants, deployments, jobs, GPU nodes, pod allocations, reservations, scaling events, sweeps.

Revision ID: 0001
Revises:
Create Date: 2026-11-27 09:30:00.107374+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from models.base import SCHEMA

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Also created by env.py before the version table; kept here so the revision stands on its own.
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    op.create_table(
        "gpu_nodes",
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("uid", sa.String(length=64), nullable=True),
        sa.Column("internal_ip", sa.String(length=64), nullable=True),
        sa.Column("hostname", sa.String(length=253), nullable=True),
        sa.Column("gpu_product", sa.String(length=128), nullable=True),
        sa.Column("gpu_memory_mb", sa.Integer(), nullable=True),
        sa.Column("gpu_capacity", sa.Integer(), server_default="0", nullable=False),
        sa.Column("gpu_allocatable", sa.Integer(), server_default="0", nullable=False),
        sa.Column("gpu_allocated", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cpu_capacity_millicores", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cpu_allocatable_millicores", sa.Integer(), server_default="0", nullable=False),
        sa.Column("memory_capacity_bytes", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("memory_allocatable_bytes", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ready_status", sa.String(length=16), server_default="Unknown", nullable=False),
        sa.Column("unschedulable", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("cordoned_by", sa.String(length=255), nullable=True),
        sa.Column("cordon_reason", sa.Text(), nullable=True),
        sa.Column(
            "taints", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column(
            "labels", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column(
            "conditions", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column("gpu_utilization", sa.Double(), nullable=True),
        sa.Column("present", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "ready_status IN ('Ready', 'NotReady', 'Unknown')", name=op.f("ck_gpu_nodes_ready_status_known")
        ),
        sa.CheckConstraint(
            "cpu_capacity_millicores >= 0 AND cpu_allocatable_millicores >= 0",
            name=op.f("ck_gpu_nodes_cpu_non_negative"),
        ),
        sa.CheckConstraint(
            "gpu_capacity >= 0 AND gpu_allocatable >= 0 AND gpu_allocated >= 0",
            name=op.f("ck_gpu_nodes_gpu_counts_non_negative"),
        ),
        sa.CheckConstraint(
            "memory_capacity_bytes >= 0 AND memory_allocatable_bytes >= 0",
            name=op.f("ck_gpu_nodes_memory_non_negative"),
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_gpu_nodes")),
        schema=SCHEMA,
    )
    op.create_index(op.f("ix_gpu_nodes_gpu_product"), "gpu_nodes", ["gpu_product"], unique=False, schema=SCHEMA)
    op.create_table(
        "jobs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column(
            "type",
            sa.Enum(
                "deployment.create",
                "deployment.delete",
                "deployment.restart",
                "deployment.scale",
                "node.drain",
                "node.cordon",
                "node.uncordon",
                name="job_type",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.Enum(
                "PENDING",
                "RUNNING",
                "RETRYING",
                "SUCCEEDED",
                "FAILED",
                "CANCELLED",
                name="job_state",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="PENDING",
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=63), nullable=True),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column(
            "target_kind",
            sa.Enum("deployment", "node", name="job_target_kind", native_enum=False, create_constraint=True, length=32),
            nullable=False,
        ),
        sa.Column("target_id", sa.String(length=255), nullable=False),
        sa.Column("celery_task_id", sa.String(length=64), nullable=False),
        sa.Column("idempotency_scope", sa.String(length=255), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_fingerprint", sa.String(length=128), nullable=True),
        sa.Column(
            "params", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column(
            "progress", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("result", postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), nullable=True),
        sa.Column("error", postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default="5", nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_jobs_attempts_non_negative")),
        sa.CheckConstraint(
            "idempotency_key IS NULL OR idempotency_scope IS NOT NULL", name=op.f("ck_jobs_idempotency_key_has_scope")
        ),
        sa.CheckConstraint("max_attempts > 0", name=op.f("ck_jobs_max_attempts_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("celery_task_id", name=op.f("uq_jobs_celery_task_id")),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_jobs_target_kind_target_id_state",
        "jobs",
        ["target_kind", "target_id", "state"],
        unique=False,
        schema=SCHEMA,
    )
    op.create_index("ix_jobs_tenant_id_created_at", "jobs", ["tenant_id", "created_at"], unique=False, schema=SCHEMA)
    op.create_index(
        "uq_jobs_idempotency_scope_key",
        "jobs",
        ["idempotency_scope", "idempotency_key"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_table(
        "sweep_runs",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("last_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.String(length=16), nullable=True),
        sa.Column("last_summary", postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sweep_runs")),
        schema=SCHEMA,
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("gpu_quota", sa.Integer(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("id ~ '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'", name=op.f("ck_tenants_id_label_safe")),
        sa.CheckConstraint("gpu_quota IS NULL OR gpu_quota >= 0", name=op.f("ck_tenants_gpu_quota_non_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        schema=SCHEMA,
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("model_id", sa.String(length=255), nullable=False),
        sa.Column("image", sa.String(length=512), nullable=False),
        sa.Column("gpu_type", sa.String(length=128), nullable=False),
        sa.Column("gpus_per_replica", sa.Integer(), server_default="1", nullable=False),
        sa.Column("replicas_desired", sa.Integer(), server_default="1", nullable=False),
        sa.Column("replicas_ready", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_model_len", sa.Integer(), nullable=True),
        sa.Column("dtype", sa.String(length=32), nullable=True),
        sa.Column(
            "vllm_args", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column("autoscaling_enabled", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("min_replicas", sa.Integer(), server_default="1", nullable=False),
        sa.Column("max_replicas", sa.Integer(), server_default="1", nullable=False),
        sa.Column("target_gpu_utilization", sa.Integer(), nullable=True),
        sa.Column(
            "autoscaling_targets",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("k8s_namespace", sa.String(length=63), nullable=False),
        sa.Column("k8s_name", sa.String(length=63), nullable=False),
        sa.Column("endpoint", sa.String(length=512), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "PENDING",
                "CREATING",
                "RUNNING",
                "DEGRADED",
                "RESTARTING",
                "SCALING",
                "DELETING",
                "DELETED",
                "FAILED",
                name="deployment_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="PENDING",
            nullable=False,
        ),
        sa.Column("status_reason", sa.String(length=128), nullable=True),
        sa.Column("status_message", sa.Text(), nullable=True),
        sa.Column("active_job_id", sa.UUID(), nullable=True),
        sa.Column("last_observed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("name ~ '^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$'", name=op.f("ck_deployments_name_dns_1035")),
        sa.CheckConstraint("gpus_per_replica > 0", name=op.f("ck_deployments_gpus_per_replica_positive")),
        sa.CheckConstraint(
            "max_model_len IS NULL OR max_model_len > 0", name=op.f("ck_deployments_max_model_len_positive")
        ),
        sa.CheckConstraint("max_replicas >= min_replicas", name=op.f("ck_deployments_max_replicas_not_below_min")),
        sa.CheckConstraint("min_replicas >= 0", name=op.f("ck_deployments_min_replicas_non_negative")),
        sa.CheckConstraint("replicas_desired >= 0", name=op.f("ck_deployments_replicas_desired_non_negative")),
        sa.CheckConstraint("replicas_ready >= 0", name=op.f("ck_deployments_replicas_ready_non_negative")),
        sa.CheckConstraint(
            "target_gpu_utilization IS NULL OR target_gpu_utilization BETWEEN 1 AND 100",
            name=op.f("ck_deployments_target_gpu_utilization_percent"),
        ),
        sa.ForeignKeyConstraint(
            ["active_job_id"],
            [f"{SCHEMA}.jobs.id"],
            name=op.f("fk_deployments_active_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], [f"{SCHEMA}.tenants.id"], name=op.f("fk_deployments_tenant_id_tenants"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
        schema=SCHEMA,
    )
    op.create_index("ix_deployments_status", "deployments", ["status"], unique=False, schema=SCHEMA)
    op.create_index(op.f("ix_deployments_tenant_id"), "deployments", ["tenant_id"], unique=False, schema=SCHEMA)
    op.create_index(
        "uq_deployments_k8s_namespace_k8s_name_live",
        "deployments",
        ["k8s_namespace", "k8s_name"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index(
        "uq_deployments_tenant_id_name_live",
        "deployments",
        ["tenant_id", "name"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "gpu_reservations",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("deployment_id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=True),
        sa.Column("node_name", sa.String(length=253), nullable=False),
        sa.Column("gpu_type", sa.String(length=128), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("replicas", sa.Integer(), server_default="1", nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("gpus > 0", name=op.f("ck_gpu_reservations_gpus_positive")),
        sa.CheckConstraint("replicas > 0", name=op.f("ck_gpu_reservations_replicas_positive")),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            [f"{SCHEMA}.deployments.id"],
            name=op.f("fk_gpu_reservations_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], [f"{SCHEMA}.jobs.id"], name=op.f("fk_gpu_reservations_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gpu_reservations")),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_gpu_reservations_deployment_id_active",
        "gpu_reservations",
        ["deployment_id"],
        unique=False,
        schema=SCHEMA,
        postgresql_where=sa.text("released_at IS NULL"),
    )
    op.create_index(
        "ix_gpu_reservations_node_name_active",
        "gpu_reservations",
        ["node_name"],
        unique=False,
        schema=SCHEMA,
        postgresql_where=sa.text("released_at IS NULL"),
    )
    op.create_index(
        "ix_gpu_reservations_tenant_id_active",
        "gpu_reservations",
        ["tenant_id"],
        unique=False,
        schema=SCHEMA,
        postgresql_where=sa.text("released_at IS NULL"),
    )
    op.create_table(
        "pod_allocations",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("pod_uid", sa.String(length=64), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("pod_name", sa.String(length=253), nullable=False),
        sa.Column("deployment_id", sa.UUID(), nullable=True),
        sa.Column("tenant_id", sa.String(length=63), nullable=True),
        sa.Column("node_name", sa.String(length=253), nullable=True),
        sa.Column("gpus", sa.Integer(), server_default="0", nullable=False),
        sa.Column("phase", sa.String(length=32), server_default="Pending", nullable=False),
        sa.Column("ready", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("restarts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("reason", sa.String(length=128), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("cpu_usage_millicores", sa.Integer(), nullable=True),
        sa.Column("memory_usage_bytes", sa.BigInteger(), nullable=True),
        sa.Column("gpu_utilization", sa.Double(), nullable=True),
        sa.Column(
            "metrics", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("terminated_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("gpus >= 0", name=op.f("ck_pod_allocations_gpus_non_negative")),
        sa.CheckConstraint("restarts >= 0", name=op.f("ck_pod_allocations_restarts_non_negative")),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            [f"{SCHEMA}.deployments.id"],
            name=op.f("fk_pod_allocations_deployment_id_deployments"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pod_allocations")),
        sa.UniqueConstraint("pod_uid", name=op.f("uq_pod_allocations_pod_uid")),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_pod_allocations_deployment_id_live",
        "pod_allocations",
        ["deployment_id"],
        unique=False,
        schema=SCHEMA,
        postgresql_where=sa.text("terminated_at IS NULL"),
    )
    op.create_index(
        "ix_pod_allocations_node_name_live",
        "pod_allocations",
        ["node_name"],
        unique=False,
        schema=SCHEMA,
        postgresql_where=sa.text("terminated_at IS NULL"),
    )
    op.create_table(
        "scaling_events",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("deployment_id", sa.UUID(), nullable=True),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("model_id", sa.String(length=255), nullable=False),
        sa.Column(
            "trigger",
            sa.Enum(
                "manual",
                "auto",
                "recovery",
                "drain",
                name="scaling_trigger",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("replicas_before", sa.Integer(), nullable=False),
        sa.Column("replicas_after", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "succeeded",
                "failed",
                "blocked",
                name="scaling_event_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="pending",
            nullable=False,
        ),
        sa.Column(
            "inputs", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column("job_id", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "replicas_before >= 0 AND replicas_after >= 0", name=op.f("ck_scaling_events_replicas_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            [f"{SCHEMA}.deployments.id"],
            name=op.f("fk_scaling_events_deployment_id_deployments"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], [f"{SCHEMA}.jobs.id"], name=op.f("fk_scaling_events_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scaling_events")),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_scaling_events_deployment_id_created_at",
        "scaling_events",
        ["deployment_id", "created_at"],
        unique=False,
        schema=SCHEMA,
    )
    op.create_index(
        "ix_scaling_events_tenant_id_created_at",
        "scaling_events",
        ["tenant_id", "created_at"],
        unique=False,
        schema=SCHEMA,
    )


def downgrade() -> None:
    """Drop every table; env.py then drops the schema once the version table is empty."""
    op.drop_table("scaling_events", schema=SCHEMA)
    op.drop_table("pod_allocations", schema=SCHEMA)
    op.drop_table("gpu_reservations", schema=SCHEMA)
    op.drop_table("deployments", schema=SCHEMA)
    op.drop_table("tenants", schema=SCHEMA)
    op.drop_table("sweep_runs", schema=SCHEMA)
    op.drop_table("jobs", schema=SCHEMA)
    op.drop_table("gpu_nodes", schema=SCHEMA)
