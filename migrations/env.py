"""Alembic environment: URL and schema from the application settings, one migrator at a time.

Like pypi/warehouse, migrations run under a Postgres advisory lock (two pods starting together must
not both migrate) and with ``lock_timeout`` / ``statement_timeout`` set, so a migration that queues
behind a long-running transaction fails fast instead of blocking every query stacked up behind its
ACCESS EXCLUSIVE lock request.
"""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

import models  # registers every table on Base.metadata
from models.migrate import comparison_options
from settings import get_settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

log = logging.getLogger("alembic.env")

SCHEMA = models.SCHEMA
target_metadata = models.Base.metadata
# Any constant works as long as every migrator of this database uses the same one.
MIGRATION_LOCK_KEY = 0x6F72636865737472  # "orchestr"
LOCK_TIMEOUT = "4s"
STATEMENT_TIMEOUT = "60s"


def _database_url() -> str:
    return config.attributes.get("database_url") or get_settings().database_url


def _configure(**kwargs: object) -> None:
    context.configure(target_metadata=target_metadata, **comparison_options(), **kwargs)


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``) for a DBA to review and apply."""
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        # The version table comes first in the script and needs the schema to exist already.
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        context.run_migrations()


def _drop_schema_if_emptied(connection: Connection) -> None:
    """After a downgrade to base only the (now empty) version table is left; drop it with the schema.

    The version table lives in the schema, so the initial revision cannot drop the schema itself:
    Alembic deletes its version row *after* the revision's ``downgrade()`` has run.
    """
    other_relations = connection.execute(
        text(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relname NOT IN ('alembic_version', 'alembic_version_pkc')"
        ),
        {"schema": SCHEMA},
    ).scalar_one()
    if other_relations == 0:
        log.info("Database fully downgraded; dropping schema %s", SCHEMA)
        connection.execute(text(f"DROP SCHEMA {SCHEMA} CASCADE"))


def run_migrations_online() -> None:
    engine = create_engine(_database_url(), poolclass=NullPool)
    with engine.connect() as connection:
        # Wait (without a timeout) for any other migrator, then set the timeouts for the DDL itself.
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        try:
            connection.execute(text(f"SET lock_timeout = '{LOCK_TIMEOUT}'"))
            connection.execute(text(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'"))
            # The version table is created in the schema before the first revision runs.
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            connection.commit()
            _configure(connection=connection)
            with context.begin_transaction():
                migration_context = context.get_context()
                revision_before = migration_context.get_current_revision()
                context.run_migrations()
                if revision_before is not None and migration_context.get_current_revision() is None:
                    _drop_schema_if_emptied(connection)
        finally:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
