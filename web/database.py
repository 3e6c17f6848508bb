"""One SQLAlchemy session per request, opened on first use and always closed at teardown."""

from __future__ import annotations

from flask import Flask, g
from sqlalchemy.orm import Session

from models.db import get_sessionmaker


def request_session() -> Session:
    """The session of the current request (created lazily: health and metrics never open one)."""
    session = g.get("db_session")
    if session is None:
        session = get_sessionmaker()()
        g.db_session = session
    return session


def _close_request_session(_exception: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        # close() rolls back anything uncommitted: an error half-way never leaves a partial change.
        session.close()


def init_database(app: Flask) -> None:
    app.teardown_appcontext(_close_request_session)
