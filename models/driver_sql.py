"""Statements built with SQLAlchemy and run by psycopg itself: for the few that run on every job or poll.

For a statement it has cached, SQLAlchemy still spends about 150 us of Python per execution (execution context,
parameter processing, expanding ``IN`` lists, result set-up): as much as psycopg and the round trip together.
A :class:`DriverStatement` is built from the models as usual and compiled once to psycopg's SQL. An execution
applies SQLAlchemy's bind processors to the parameters that have one (JSON, a ``StrEnum`` column) and hands
everything else to psycopg as it is.

Rows come back as psycopg builds them: tuples of the values psycopg converts itself (text, numbers, uuid,
timestamptz, json). A column whose SQLAlchemy type converts results (a ``StrEnum``) arrives as its raw value.

Run on a SQLAlchemy connection (or a session, in its transaction), a statement stays visible to SQLAlchemy's
``before_cursor_execute``/``after_cursor_execute`` listeners, and errors leave as SQLAlchemy's
(``sqlalchemy.exc.OperationalError`` for a lost server, ``IntegrityError``...), with a connection found dead
invalidated, as SQLAlchemy would do; callers keep one vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

_DIALECT = PGDialect_psycopg()


@dataclass(frozen=True)
class _Compiled:
    sql: str
    constants: dict[str, Any]  # bound constants of the statement, already processed
    processors: dict[str, Callable[[Any], Any]]  # of the parameters given at execution, where they have one


class DriverStatement:
    """A statement compiled on first use; :meth:`execute` runs it on psycopg.

    ``build`` returns the SQLAlchemy statement. Its parameters are ``bindparam(name)`` without a value; bound
    constants (a literal compared to a column, an ``IN`` list) are sent along with them."""

    def __init__(self, build: Callable[[], ClauseElement]) -> None:
        self._build = build
        self._compiled: _Compiled | None = None

    def _compile(self) -> _Compiled:
        if self._compiled is None:
            compiled = cast(SQLCompiler, self._build().compile(dialect=_DIALECT))
            given = {name for bind, name in compiled.bind_names.items() if bind.required}
            if compiled.insert_prefetch or compiled.update_prefetch:
                # SQLAlchemy computes those values per execution, which this path does not do.
                raise TypeError("a DriverStatement does not apply Python-side column defaults: give those values")
            if any(bind.expanding and bind.required for bind in compiled.bind_names):
                # The SQL is rendered once: a list whose length changes per call must be one array parameter.
                raise TypeError("a DriverStatement takes no expanding IN parameter: compare with = ANY(array)")
            # Expanding parameters (constant IN lists) are rendered into the SQL once, with their values.
            expanded = compiled.construct_expanded_state(dict.fromkeys(given))
            processors: dict[str, Callable[[Any], Any]] = {}
            for bind, name in compiled.bind_names.items():
                process = bind.type.dialect_impl(_DIALECT).bind_processor(_DIALECT)
                if process is not None:
                    processors[name] = process
            processors.update(cast(dict[str, Callable[[Any], Any]], expanded.processors))  # the expanded lists
            constants = {
                name: processors[name](value) if name in processors else value
                for name, value in expanded.parameters.items()
                if name not in given
            }
            self._compiled = _Compiled(
                sql=expanded.statement,
                constants=constants,
                processors={name: processors[name] for name in given if name in processors},
            )
        return self._compiled

    def execute(
        self, connection: Connection | Session | psycopg.Connection[Any], parameters: Mapping[str, Any]
    ) -> psycopg.Cursor[Any]:
        """Send the statement (prepared by the server from its fifth use on, as psycopg does) and return the
        cursor to fetch from. Inside :func:`pipeline` it is only queued: the first fetch sends everything queued,
        in one round trip. On a bare psycopg connection, psycopg's own errors reach the caller."""
        compiled = self._compile()
        values = dict(compiled.constants)
        for name, value in parameters.items():
            process = compiled.processors.get(name)
            values[name] = process(value) if process is not None else value
        if isinstance(connection, psycopg.Connection):
            cursor = connection.cursor()
            cursor.execute(compiled.sql, values)
            return cursor
        with _sqlalchemy_errors(connection) as (sqlalchemy_connection, driver):
            cursor = driver.cursor()
            for listener in sqlalchemy_connection.dispatch.before_cursor_execute:
                listener(sqlalchemy_connection, cursor, compiled.sql, values, None, False)
            cursor.execute(compiled.sql, values)
            for listener in sqlalchemy_connection.dispatch.after_cursor_execute:
                listener(sqlalchemy_connection, cursor, compiled.sql, values, None, False)
            return cursor


@contextmanager
def _sqlalchemy_errors(connection: Connection | Session) -> Iterator[tuple[Connection, psycopg.Connection[Any]]]:
    """The SQLAlchemy connection (a session's, in its transaction) and the psycopg connection under it, with
    psycopg's errors raised as SQLAlchemy's; a connection the error shows to be dead is invalidated, so the
    pool never hands it out again. A session's pending changes are flushed first, as the session would before
    running a statement, so the statement sees them."""
    if isinstance(connection, Session):
        connection.flush()
        connection = connection.connection()
    elif not connection.in_transaction():
        # What SQLAlchemy's own execute does ("commit as you go"): otherwise the statement would run in psycopg's
        # implicit transaction, which connection.commit() knows nothing of (on an AUTOCOMMIT connection this
        # sends nothing: each statement still commits at once).
        connection.begin()
    driver = cast(psycopg.Connection[Any], connection.connection.driver_connection)
    try:
        yield connection, driver
    except psycopg.Error as error:
        lost = driver.closed or connection.dialect.is_disconnect(cast(Any, error), cast(Any, driver), None)
        if lost:
            connection.invalidate(error)
        raise DBAPIError.instance(None, None, error, psycopg.Error, connection_invalidated=lost) from error
    except BaseException as error:
        if not isinstance(error, Exception):
            # Interrupted mid-statement (KeyboardInterrupt, SystemExit): the connection's state is unknown.
            connection.invalidate(error)
        raise


@contextmanager
def pipeline(connection: Connection | Session) -> Iterator[None]:
    """Queue the statements executed inside the block and send them together at the first fetch (or at the
    end): Postgres runs them one after the other, each with its own snapshot, for one round trip."""
    with _sqlalchemy_errors(connection) as (_, driver), driver.pipeline():
        yield
