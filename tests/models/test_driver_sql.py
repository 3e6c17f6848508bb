"""Statements run by psycopg itself (models.driver_sql): the same values, errors and listeners as SQLAlchemy's."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import bindparam, event, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from models import Job, JobState, JobType, TargetKind
from models.driver_sql import DriverStatement, pipeline
from tests.models.test_models import make_job


def _update_job_result() -> DriverStatement:
    # A JSON parameter (processed by SQLAlchemy's bind processor), a StrEnum constant and an expanding IN list.
    return DriverStatement(
        lambda: update(Job)
        .where(Job.id == bindparam("job_id"), Job.state.in_((JobState.PENDING, JobState.RUNNING)))
        .values(result=bindparam("result", type_=Job.__table__.c.result.type), state=JobState.SUCCEEDED)
        .returning(Job.state, Job.result)
    )


def test_parameters_and_constants_reach_postgres_as_sqlalchemy_would_send_them(db_session):
    job = make_job(db_session)
    statement = _update_job_result()

    row = statement.execute(db_session, {"job_id": job.id, "result": {"replicas": 2, "names": ["a"]}}).fetchone()

    assert row == ("SUCCEEDED", {"replicas": 2, "names": ["a"]})
    db_session.expire_all()
    assert (db_session.get(Job, job.id).state, db_session.get(Job, job.id).result) == (
        JobState.SUCCEEDED,
        {"replicas": 2, "names": ["a"]},
    )
    # The IN list is part of the statement: a job no longer PENDING or RUNNING is not matched.
    assert statement.execute(db_session, {"job_id": job.id, "result": {}}).fetchone() is None


def test_a_session_flushes_its_pending_changes_before_the_statement(db_session):
    job = Job(
        id=uuid.uuid4(), type=JobType.DEPLOYMENT_CREATE, tenant_id="acme", requested_by="svc",
        target_kind=TargetKind.DEPLOYMENT, target_id=str(uuid.uuid4()),
    )  # fmt: skip
    db_session.add(job)  # not flushed

    row = _update_job_result().execute(db_session, {"job_id": job.id, "result": {"ok": True}}).fetchone()

    assert row is not None


def test_sqlalchemy_listeners_see_each_statement(db_session):
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    connection = db_session.connection()
    event.listen(connection, "before_cursor_execute", record)
    try:
        _update_job_result().execute(db_session, {"job_id": uuid.uuid4(), "result": {}})
    finally:
        event.remove(connection, "before_cursor_execute", record)

    assert len(seen) == 1
    assert seen[0].lstrip().startswith("UPDATE orchestration.jobs")


def test_errors_are_raised_as_sqlalchemys(db_session):
    job = make_job(db_session)
    duplicate = _insert_job(state=JobState.PENDING, attempts=0, max_attempts=5, cancel_requested=False)

    with pytest.raises(IntegrityError, match="duplicate key"):
        duplicate.execute(db_session, {"id": job.id, "task_id": "t"})


def test_a_lost_connection_is_an_operational_error_and_never_pooled_again(db_engine):
    statement = DriverStatement(lambda: select(bindparam("value", type_=Job.__table__.c.attempts.type)))
    with db_engine.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
            assert admin.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid}).scalar_one()

        with pytest.raises(OperationalError):
            statement.execute(connection, {"value": 1})
        assert connection.invalidated
    with db_engine.connect() as connection:
        assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid


def test_a_pipeline_runs_its_statements_in_order_and_raises_their_errors(db_session):
    job = make_job(db_session)
    statement = _update_job_result()
    read_state = DriverStatement(lambda: select(Job.state).where(Job.id == bindparam("job_id")))

    with pipeline(db_session):
        statement.execute(db_session, {"job_id": job.id, "result": {"n": 1}})
        # Queued after the update, read with its own snapshot: it sees the update.
        assert read_state.execute(db_session, {"job_id": job.id}).fetchone() == ("SUCCEEDED",)

    failing = DriverStatement(lambda: select(text("no_such_column FROM orchestration.jobs")))

    def failing_pipeline() -> None:
        with pipeline(db_session):
            failing.execute(db_session, {})
            read_state.execute(db_session, {"job_id": job.id}).fetchone()

    with pytest.raises(ProgrammingError):
        failing_pipeline()


def test_a_list_that_changes_length_per_call_must_be_an_array_parameter(db_session):
    statement = DriverStatement(lambda: select(Job.id).where(Job.id.in_(bindparam("ids", expanding=True))))

    with pytest.raises(TypeError, match="ANY"):
        statement.execute(db_session, {"ids": [uuid.uuid4()]})


def _insert_job(**defaults_given: object) -> DriverStatement:
    return DriverStatement(
        lambda: insert(Job).values(
            id=bindparam("id"), type=JobType.DEPLOYMENT_CREATE, requested_by="svc", target_kind=TargetKind.DEPLOYMENT,
            target_id="x", celery_task_id=bindparam("task_id"), params={}, progress={}, **defaults_given,
        )
    )  # fmt: skip


def test_python_side_column_defaults_must_be_given(db_session):
    # SQLAlchemy computes them per execution (state PENDING, attempts 0, ...); this path would write NULLs.
    with pytest.raises(TypeError, match="Python-side column defaults"):
        _insert_job().execute(db_session, {"id": uuid.uuid4(), "task_id": "t"})


def test_on_a_plain_connection_the_write_is_in_sqlalchemys_transaction(db_engine):
    job_id = uuid.uuid4()
    insert_job = _insert_job(state=JobState.PENDING, attempts=0, max_attempts=5, cancel_requested=False)
    try:
        with db_engine.connect() as connection:
            insert_job.execute(connection, {"id": job_id, "task_id": str(job_id)})
            connection.commit()
        with db_engine.connect() as connection:
            assert connection.execute(select(Job.id).where(Job.id == job_id)).scalar() == job_id
    finally:
        with db_engine.begin() as connection:
            connection.execute(Job.__table__.delete().where(Job.id == job_id))
