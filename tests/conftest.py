"""Shared database fixtures for the whole suite.

Each pytest session gets its own throwaway database (``orch_test_<hex>``), migrated with the real
Alembic revisions, so helpers running the suite side by side never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import settings as settings_module
from models import Base
from models.db import dispose_engine, get_engine
from models.migrate import upgrade_database

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _admin_url() -> str:
    return settings_module.normalize_database_url(
        os.environ.get("TEST_DATABASE_ADMIN_URL", DEFAULT_ADMIN_URL), variable="TEST_DATABASE_ADMIN_URL"
    )


def _reset_process_caches() -> None:
    settings_module.get_settings.cache_clear()
    dispose_engine()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """URL of a fresh, fully migrated database that lives for this test session.

    Also exported as ``DATABASE_URL`` (and the settings/engine caches cleared), so code under test that
    reads settings connects to it.
    """
    admin_url = _admin_url()
    database_name = f"orch_test_{uuid.uuid4().hex[:12]}"
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    admin_engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database_name}"'))
    url = make_url(admin_url).set(database=database_name).render_as_string(hide_password=False)
    previous_url = os.environ.get("DATABASE_URL")
    try:
        upgrade_database(url)
        os.environ["DATABASE_URL"] = url
        _reset_process_caches()
        yield url
    finally:
        if previous_url is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = previous_url
        _reset_process_caches()
        with admin_engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)'))
        admin_engine.dispose()


@pytest.fixture(scope="session")
def db_engine(database_url: str) -> Engine:
    """The application's own engine (``models.db.get_engine()``), pointed at the test database."""
    engine = get_engine()
    assert engine.url.database == make_url(database_url).database
    return engine


@pytest.fixture
def db_session(db_engine: Engine) -> Iterator[Session]:
    """A session whose work is rolled back after the test, even if the code under test commits.

    The outer transaction belongs to the fixture; ``session.commit()`` inside the test only releases a
    SAVEPOINT, so constraint violations can be asserted and the next test still starts from empty tables.
    """
    connection = db_engine.connect()
    outer_transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        outer_transaction.rollback()
        connection.close()


def _truncate_all_tables(engine: Engine) -> None:
    table_names = ", ".join(f'{table.schema}."{table.name}"' for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {table_names} RESTART IDENTITY CASCADE"))


@pytest.fixture
def clean_tables(db_engine: Engine) -> Iterator[Engine]:
    """Empty every table before and after the test, for tests whose data is committed for real
    (e.g. by a Celery worker in another process) and so cannot be rolled back by ``db_session``."""
    _truncate_all_tables(db_engine)
    try:
        yield db_engine
    finally:
        _truncate_all_tables(db_engine)
