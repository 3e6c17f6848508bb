"""Engine and session factory, built lazily from settings and shared by the whole process.

Nothing connects at import time: web workers and Celery children fork after import, and a connection
opened before the fork would be shared by several processes and corrupted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from settings import get_settings


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The process-wide engine for ``settings.database_url``."""
    settings = get_settings()
    return create_engine(
        settings.database_url,
        # A pooled connection can die while idle (Postgres restart, failover, idle timeout); ping it
        # on checkout instead of failing the first request or task that draws it.
        pool_pre_ping=True,
        connect_args={"application_name": "orchestration"},
    )


@lru_cache(maxsize=1)
def get_sessionmaker() -> sessionmaker[Session]:
    """Session factory bound to :func:`get_engine`.

    ``expire_on_commit=False`` so objects stay readable after the commit that precedes enqueueing a task
    or serialising a response, without a second round trip.
    """
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


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
    """Drop the cached engine and session factory; the next use builds them again from settings.

    Call with ``close_connections=False`` from Celery's ``worker_process_init`` (in a forked child):
    the inherited sockets belong to the parent, and closing them from the child would break the
    parent's connections. Tests call it with the default after changing ``DATABASE_URL``.
    """
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=close_connections)
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
