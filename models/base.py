"""Declarative base shared by every model: schema, constraint names, column type defaults, timestamps.

The schema comes from ``DB_SCHEMA`` and is read once, when this module is first imported, so a process
(web, worker, migration runner) talks to exactly one schema for its whole life.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Enum, MetaData, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from settings import get_settings

SCHEMA: str = get_settings().db_schema

# Deterministic constraint names: Alembic can only drop or alter a constraint it can name, and
# autogenerate compares names, so letting Postgres invent them would make migrations drift.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Root of all models; every table lands in :data:`SCHEMA`."""

    metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        uuid.UUID: UUID(as_uuid=True),
        dict[str, Any]: JSONB,
        list[Any]: JSONB,
    }


class CreatedAtMixin:
    """``created_at`` set by the database clock, so rows written by different hosts sort consistently."""

    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class TimestampMixin(CreatedAtMixin):
    """``created_at`` plus ``updated_at``, which SQLAlchemy bumps on every UPDATE of the row.

    Bumped to the time the UPDATE runs (``clock_timestamp()``), not the start of its transaction (``now()``):
    the health monitor vouches for a deployment unchanged since its sweep began by comparing the two, and a
    long transaction's start time would pass for "before the sweep" while its change was still unseen."""

    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.clock_timestamp())


def str_enum_column_type(enum_class: type, name: str) -> Any:
    """A VARCHAR + CHECK column type for a ``StrEnum``.

    Native Postgres ENUM types need an ``ALTER TYPE`` migration for every new value and cannot drop
    one; a CHECK constraint is replaced in one statement. Values (not member names) are stored so
    the database holds the same strings the API shows.
    """
    return Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )
