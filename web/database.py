"""SQLAlchemy sessions per request, opened on first use and always closed at teardown.

``request_session()`` is the transactional session every change uses. ``read_session()`` is for endpoints
whose whole database work is ONE read statement (status, get, list): the statement runs outside an explicit
transaction, which saves the ``BEGIN`` and ``ROLLBACK`` round trips and sees exactly what a one-statement
transaction would (a single statement reads one snapshot).
"""

from __future__ import annotations

from flask import Flask, g
from sqlalchemy.orm import Session

from models.db import get_autocommit_sessionmaker, get_sessionmaker


def request_session() -> Session:
    """The session of the current request (created lazily: health and metrics never open one)."""
    session = g.get("db_session")
    if session is None:
        session = get_sessionmaker()()
        g.db_session = session
    return session


def read_session() -> Session:
    """A session for one read statement (see the module doc); never use it to write."""
    session = g.get("db_read_session")
    if session is None:
        session = get_autocommit_sessionmaker()()
        g.db_read_session = session
    return session


def _close_request_sessions(_exception: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        # close() rolls back anything uncommitted: an error half-way never leaves a partial change.
        session.close()
    read_only = g.pop("db_read_session", None)
    if read_only is not None:
        read_only.close()


def init_database(app: Flask) -> None:
    app.teardown_appcontext(_close_request_sessions)
