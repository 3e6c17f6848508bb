"""Engine and session factory, built lazily from settings and shared by the whole process.

Nothing connects at import time: web workers and Celery children fork after import, and a connection
opened before the fork would be shared by several processes and corrupted.

Round trips are the cost that matters here (an API read is one statement; a job step is one or two), so:
- no ``pool_pre_ping``: it spends a ``SELECT 1`` round trip on every checkout. Instead each checkout runs
  :func:`_connection_looks_dead`, a local check (no round trip): psycopg's own view of the connection, and
  whether the server has written to the idle socket, which on an idle connection only happens when it is
  terminating it (restart, failover, ``idle_session_timeout``, ``pg_terminate_backend``: the server sends
  a FATAL error and closes). A dead connection is replaced before the caller sees it. ``pool_recycle``
  bounds the age of a connection for what no local check can see (a NAT or firewall silently dropping an
  idle socket), and SQLAlchemy still invalidates the whole pool when any statement meets a disconnect.
- :func:`autocommit_session` for work that is ONE statement (a read, a guarded UPDATE): a statement is
  atomic on its own, and skipping the explicit transaction saves the ``BEGIN`` and ``COMMIT`` round trips.
"""

from __future__ import annotations

import select as select_module
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from settings import get_settings

# Well under the usual idle timeouts of NAT gateways and cloud load balancers (350 s and up).
POOL_RECYCLE_SECONDS = 300


def _connection_looks_dead(dbapi_connection: Any) -> bool:
    """True if a pooled (idle) psycopg connection is certainly unusable; never touches the network."""
    if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
        return True
    pgconn = getattr(dbapi_connection, "pgconn", None)
    if pgconn is None:
        return False
    try:
        socket_fd = pgconn.socket
    except Exception:  # psycopg raises when the libpq connection is gone
        return True
    # An idle connection receives nothing unless the server is ending it (FATAL notice, then EOF).
    readable, _, _ = select_module.select([socket_fd], [], [], 0)
    return bool(readable)


def _check_on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    if _connection_looks_dead(dbapi_connection):
        # The pool discards this connection and hands out (or opens) another one.
        raise exc.DisconnectionError("pooled connection was closed by the server")


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The process-wide engine for ``settings.database_url``."""
    settings = get_settings()
    engine = create_engine(
        settings.database_url,
        pool_pre_ping=False,  # see the module doc: replaced by the local check below
        pool_recycle=POOL_RECYCLE_SECONDS,
        connect_args={"application_name": "orchestration"},
    )
    event.listen(engine, "checkout", _check_on_checkout)
    return engine


@lru_cache(maxsize=1)
def get_sessionmaker() -> sessionmaker[Session]:
    """Session factory bound to :func:`get_engine`.

    ``expire_on_commit=False`` so objects stay readable after the commit that precedes enqueueing a task
    or serialising a response, without a second round trip.
    """
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@lru_cache(maxsize=1)
def get_autocommit_sessionmaker() -> sessionmaker[Session]:
    """Sessions whose statements each commit on their own (no ``BEGIN``/``COMMIT`` round trips).

    Only for work that is a single statement, or a few reads that need no common snapshot: two writes
    through such a session are NOT atomic together.
    """
    return sessionmaker(bind=get_engine().execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)


@contextmanager
def autocommit_session() -> Iterator[Session]:
    """A session for one statement (see :func:`get_autocommit_sessionmaker`); always closed."""
    session = get_autocommit_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits when the block succeeds, rolls back when it raises, and always closes."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engine(*, close_connections: bool = True) -> None:
    """Drop the cached engine and session factories; the next use builds them again from settings.

    Call with ``close_connections=False`` from Celery's ``worker_process_init`` (in a forked child):
    the inherited sockets belong to the parent, and closing them from the child would break the
    parent's connections. Tests call it with the default after changing ``DATABASE_URL``.
    """
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=close_connections)
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
    get_autocommit_sessionmaker.cache_clear()
