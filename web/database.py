"""SQLAlchemy sessions per request, opened on first use and always closed at teardown.

``request_session()`` is the transactional session every change uses. ``read_session()`` is for endpoints
whose whole database work is ONE read statement (status, get, list): the statement runs outside an explicit
transaction, which saves the ``BEGIN`` and ``ROLLBACK`` round trips and sees exactly what a one-statement
transaction would (a single statement reads one snapshot).
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, g
from sqlalchemy.orm import Session, sessionmaker

from models.db import get_autocommit_sessionmaker, get_sessionmaker


def _session_on_g(name: str, factory: Callable[[], sessionmaker[Session]]) -> Session:
    """The request's session stored under ``g.<name>``, opened from ``factory()`` on first use."""
    session = g.get(name)
    if session is None:
        session = factory()()
        setattr(g, name, session)
    return session


def request_session() -> Session:
    """The session of the current request (created lazily: health and metrics never open one)."""
    return _session_on_g("db_session", get_sessionmaker)


def read_session() -> Session:
    """A session for one read statement (see the module doc); never use it to write."""
    return _session_on_g("db_read_session", get_autocommit_sessionmaker)


def _close_request_sessions(_exception: BaseException | None) -> None:
    # Closing the transactional session rolls back anything uncommitted: an error half-way never leaves a
    # partial change.
    for name in ("db_session", "db_read_session"):
        session = g.pop(name, None)
        if session is not None:
            session.close()


def init_database(app: Flask) -> None:
    app.teardown_appcontext(_close_request_sessions)
