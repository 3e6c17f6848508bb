"""The Alembic revisions: they apply and revert cleanly, and they match the models exactly."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine, make_url

import settings as settings_module
from models import SCHEMA, Base
from models.migrate import alembic_config, comparison_options, downgrade_database, upgrade_database

EXPECTED_TABLES = {
    "alembic_version",
    "deployments",
    "gpu_nodes",
    "gpu_reservations",
    "jobs",
    "pod_allocations",
    "scaling_events",
    "sweep_runs",
    "tenants",
}


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    """A database of its own, so downgrading does not pull tables out from under other tests."""
    admin_url = settings_module.normalize_database_url(
        os.environ.get("TEST_DATABASE_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    )
    name = f"orch_migrations_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _schema_exists(engine: Engine) -> bool:
    with engine.connect() as connection:
        return bool(
            connection.execute(
                text("SELECT count(*) FROM pg_namespace WHERE nspname = :schema"), {"schema": SCHEMA}
            ).scalar_one()
        )


def test_upgrade_then_downgrade_on_empty_database(empty_database_url):
    engine = create_engine(empty_database_url)
    try:
        assert not _schema_exists(engine)

        upgrade_database(empty_database_url)
        assert set(inspect(engine).get_table_names(schema=SCHEMA)) == EXPECTED_TABLES

        downgrade_database(empty_database_url)
        assert not _schema_exists(engine)

        # And back up again: the downgrade left nothing behind that blocks a fresh upgrade.
        upgrade_database(empty_database_url)
        assert set(inspect(engine).get_table_names(schema=SCHEMA)) == EXPECTED_TABLES
    finally:
        engine.dispose()


def test_upgrade_is_idempotent(empty_database_url):
    upgrade_database(empty_database_url)
    upgrade_database(empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            versions = connection.execute(text(f"SELECT version_num FROM {SCHEMA}.alembic_version")).scalars().all()
    finally:
        engine.dispose()
    script = ScriptDirectory.from_config(alembic_config(empty_database_url))
    assert versions == [script.get_current_head()]


def test_models_and_migrations_agree(db_engine):
    with db_engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts=comparison_options(),
        )
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def _enum_checks_in_models() -> dict[str, set[str]]:
    """Constraint name -> allowed values, for every VARCHAR + CHECK enum column of the models."""
    checks = {}
    for table in Base.metadata.tables.values():
        for column in table.columns:
            if isinstance(column.type, sa.Enum) and column.type.create_constraint:
                checks[f"ck_{table.name}_{column.type.name}"] = set(column.type.enums)
    return checks


def test_every_enum_check_constraint_admits_exactly_the_models_values(db_engine):
    """compare_metadata does not compare CHECK constraints: a value added to an enum without a migration
    would pass it, then fail on the first row that uses it."""
    expected = _enum_checks_in_models()
    with db_engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
                "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = :schema AND c.contype = 'c'"
            ),
            {"schema": SCHEMA},
        ).all()
    migrated = {name: set(re.findall(r"'([^']*)'::", definition)) for name, definition in rows if name in expected}
    assert "ck_deployments_deployment_status" in expected
    assert migrated == expected


def test_the_stopped_status_migrates_both_ways(empty_database_url):
    """Up: a deployment RUNNING at zero replicas becomes STOPPED (one with replicas stays RUNNING). Down: back."""
    upgrade_database(empty_database_url, "0002")
    engine = create_engine(empty_database_url)

    def statuses() -> dict[str, str]:
        with engine.connect() as connection:
            return dict(connection.execute(text(f"SELECT name, status FROM {SCHEMA}.deployments")).all())

    try:
        with engine.begin() as connection:
            connection.execute(text(f"INSERT INTO {SCHEMA}.tenants (id, name) VALUES ('acme', 'Acme')"))
            for name, replicas in (("idle", 0), ("busy", 2)):
                connection.execute(
                    text(
                        f"INSERT INTO {SCHEMA}.deployments (id, tenant_id, name, model_id, image, gpu_type,"
                        " k8s_namespace, k8s_name, status, replicas_desired) VALUES (:id, 'acme', :name, 'org/m',"
                        " 'vllm', 'nvidia-l40s', 'default', :name, 'RUNNING', :replicas)"
                    ),
                    {"id": uuid.uuid4(), "name": name, "replicas": replicas},
                )
        upgrade_database(empty_database_url)
        assert statuses() == {"idle": "STOPPED", "busy": "RUNNING"}
        downgrade_database(empty_database_url, "0002")
        assert statuses() == {"idle": "RUNNING", "busy": "RUNNING"}
        upgrade_database(empty_database_url)
    finally:
        engine.dispose()


def test_revision_history_has_a_single_head():
    script = ScriptDirectory.from_config(alembic_config("postgresql+psycopg://unused/unused"))
    assert len(script.get_heads()) == 1
