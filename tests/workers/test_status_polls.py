"""The status-poll schedule (a Redis sorted set and a self-rescheduling poller), against the real Redis."""

from __future__ import annotations

import threading

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from tests.workers.status_polls_support import isolated_schedule
from workers import dispatch, status_polls
from workers.cluster_errors import PermanentClusterError, TransientClusterError


@pytest.fixture
def schedule(monkeypatch):
    with isolated_schedule(monkeypatch) as isolated:
        yield isolated


# Due times are read back some time after they were written: on a busy machine, up to a few seconds less
# remains than was asked for (never more), so checks allow that much.
SLACK = 3.0


def due_in(client, where, deployment_id) -> float:
    """Seconds from now until the deployment's poll is due (Redis clock)."""
    seconds, micros = client.time()
    return (client.zscore(where.due, deployment_id) - (seconds * 1000 + micros // 1000)) / 1000


def test_one_poller_serves_every_poll_due_after_it(schedule):
    client, where, sent = schedule
    status_polls.schedule("a", 2)
    status_polls.schedule("b", 5)
    status_polls.schedule("c", 2.1)  # within EARLY_ENOUGH_MS of the poller already sent
    assert len(sent) == 1
    at, countdown = sent[0]
    assert 1.9 <= countdown <= 2.0
    assert int(client.get(where.next)) == at
    assert client.zcard(where.due) == 3


def test_the_poller_takes_polls_due_just_after_it(schedule):
    """The poller sent for "a" also takes "c", due EARLY_ENOUGH_MS later, instead of leaving it to a second one."""
    _, _, sent = schedule
    status_polls.schedule("a", 0)
    status_polls.schedule("c", 0.1)
    at, _ = sent.pop()
    assert sorted(status_polls.claim(at).deployment_ids) == ["a", "c"]


def test_a_poll_due_sooner_sends_another_poller(schedule):
    _, _, sent = schedule
    status_polls.schedule("slow", 10)
    status_polls.schedule("fast", 1)
    assert [round(countdown) for _, countdown in sent] == [10, 1]


def test_a_later_request_never_postpones_a_poll(schedule):
    client, where, _ = schedule
    status_polls.schedule("a", 1)
    status_polls.schedule("a", 30)
    assert due_in(client, where, "a") < 1.5


def test_the_poller_settles_reschedules_and_sends_its_successor(schedule):
    client, where, sent = schedule
    status_polls.schedule("settled", 0)
    status_polls.schedule("loading", 0)
    status_polls.schedule("later", 60)
    at, _ = sent.pop()
    answers = {"settled": None, "loading": 4.0}
    seen: list[str] = []

    def observe(deployment_id: str) -> float | None:
        seen.append(deployment_id)
        return answers[deployment_id]

    assert status_polls.run_poller(at, observe) == 2
    assert sorted(seen) == ["loading", "settled"]  # "later" is not due
    assert client.zscore(where.due, "settled") is None
    assert 4.0 - SLACK <= due_in(client, where, "loading") <= 4.0
    # The successor is sent for the earliest remaining poll, and NEXT now names it.
    assert len(sent) == 1
    successor_at, countdown = sent[0]
    assert 3.5 <= countdown <= 4.0
    assert int(client.get(where.next)) == successor_at


def test_a_poll_asked_for_while_observing_is_not_lost(schedule):
    client, where, sent = schedule
    status_polls.schedule("a", 0)
    at, _ = sent.pop()

    def observe(deployment_id: str) -> float | None:
        status_polls.schedule(deployment_id, 2)  # a new job on the deployment, mid-observation
        return None  # this observation saw it settled

    status_polls.run_poller(at, observe)
    assert 2.0 - SLACK <= due_in(client, where, "a") <= 2.0


def test_concurrent_pollers_claim_disjoint_deployments(schedule):
    _, _, sent = schedule
    for index in range(40):
        status_polls.schedule(f"d{index}", 0)
    at, _ = sent.pop()
    claims: list[list[str]] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        barrier.wait()
        claims.append(status_polls.claim(at, limit=15).deployment_ids)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [member for claimed in claims for member in claimed]
    assert len(everything) == len(set(everything)) == 40


def test_the_polls_of_a_poller_that_died_come_due_again(schedule):
    client, where, sent = schedule
    status_polls.schedule("a", 0)
    at, _ = sent.pop()
    first = status_polls.claim(at)  # ... and the poller is killed here
    assert first.deployment_ids == ["a"]
    assert status_polls.LEASE_SECONDS - SLACK <= due_in(client, where, "a") <= status_polls.LEASE_SECONDS
    assert status_polls.claim(at).deployment_ids == []  # leased: no second poller observes it meanwhile
    client.zadd(where.due, {"a": 0})  # the lease runs out (what 90 s of waiting would do)
    second = status_polls.claim(at)
    assert second.deployment_ids == ["a"]
    assert int(client.hget(where.leases, "a")) == second.lease_ms  # the new run's lease, not the dead one's


def test_a_lost_poller_is_replaced(schedule):
    client, where, sent = schedule
    status_polls.schedule("a", 0)
    assert len(sent) == 1
    status_polls.ensure_poller()
    assert len(sent) == 1  # the one sent is not late yet
    grace_ms = status_polls.NEXT_GRACE_SECONDS * 1000
    assert grace_ms - SLACK * 1000 <= client.pttl(where.next) <= grace_ms  # NEXT lives a grace period past it
    client.delete(where.next)  # ... what that expiry does when the poller never runs
    status_polls.ensure_poller()
    assert len(sent) == 2
    assert sent[1][1] == 0  # the poll is overdue: at once


def test_nothing_waiting_sends_no_poller(schedule):
    _, _, sent = schedule
    status_polls.ensure_poller()
    assert sent == []


def test_only_the_poller_named_in_next_clears_it(schedule):
    client, where, sent = schedule
    status_polls.schedule("a", 5)
    at, _ = sent.pop()
    status_polls.claim(at - 1000)  # an older, duplicate poller
    assert int(client.get(where.next)) == at
    status_polls.claim(at)
    assert client.get(where.next) is None


def test_a_transient_failure_is_retried_alone_and_a_permanent_one_ends_the_polls(schedule):
    client, where, sent = schedule
    for name in ("unreachable", "refused", "fine"):
        status_polls.schedule(name, 0)
    at, _ = sent.pop()

    def observe(deployment_id: str) -> float | None:
        if deployment_id == "unreachable":
            raise TransientClusterError("cluster_unavailable", "connection refused")
        if deployment_id == "refused":
            raise PermanentClusterError("forbidden", "pods is forbidden", status=403)
        return None

    assert status_polls.run_poller(at, observe) == 3
    assert client.zscore(where.due, "fine") is None
    assert client.zscore(where.due, "refused") is None  # the health monitor still observes it every sweep
    waiting = due_in(client, where, "unreachable")
    assert status_polls.RETRY_AFTER_ERROR_SECONDS - SLACK <= waiting <= status_polls.RETRY_AFTER_ERROR_SECONDS
    assert client.hlen(where.leases) == 0


def test_a_poll_asked_for_later_than_the_lease_is_not_lost(schedule):
    """A long poll interval: the new job's poll is due after the lease, and must survive a 'settled' outcome."""
    client, where, sent = schedule
    status_polls.schedule("a", 0)
    at, _ = sent.pop()

    def observe(deployment_id: str) -> float | None:
        status_polls.schedule(deployment_id, status_polls.LEASE_SECONDS + 30)
        return None

    status_polls.run_poller(at, observe)
    assert status_polls.LEASE_SECONDS + 30 - SLACK <= due_in(client, where, "a") <= status_polls.LEASE_SECONDS + 30


def test_an_interrupted_run_writes_what_it_saw_and_sends_its_successor(schedule):
    """The task's soft time limit (or a shutdown) lands mid-run: nothing claimed is left to the lease."""
    client, where, sent = schedule
    status_polls.schedule("a", 0)
    at, _ = sent.pop()

    def observe(deployment_id: str) -> float | None:
        raise SoftTimeLimitExceeded()

    with pytest.raises(SoftTimeLimitExceeded):
        status_polls.run_poller(at, observe)
    waiting = due_in(client, where, "a")
    assert status_polls.RETRY_AFTER_ERROR_SECONDS - SLACK <= waiting <= status_polls.RETRY_AFTER_ERROR_SECONDS
    assert len(sent) == 1  # the successor, for that retry
    assert client.hlen(where.leases) == 0


def test_observations_past_the_run_budget_go_to_an_immediate_successor(schedule, monkeypatch):
    client, where, sent = schedule
    monkeypatch.setattr(status_polls, "RUN_BUDGET_SECONDS", -1)
    for name in ("a", "b"):
        status_polls.schedule(name, 0)
    at, _ = sent.pop()
    seen: list[str] = []
    assert status_polls.run_poller(at, seen.append) == 0
    assert seen == []
    assert client.zcard(where.due) == 2
    assert sent[-1][1] == 0


def test_more_due_than_one_run_takes_go_to_an_immediate_successor(schedule, monkeypatch):
    client, where, sent = schedule
    monkeypatch.setattr(status_polls, "CLAIM_LIMIT", 3)
    for index in range(5):
        status_polls.schedule(f"d{index}", 0)
    at, _ = sent.pop()
    assert status_polls.run_poller(at, lambda _: None) == 3
    assert client.zcard(where.due) == 2
    assert sent[-1][1] == 0


def test_a_poller_that_could_not_be_sent_is_not_waited_for(schedule, monkeypatch):
    client, where, sent = schedule

    def broker_down(at, countdown):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(dispatch, "send_status_poller", broker_down)
    with pytest.raises(ConnectionError):
        status_polls.schedule("a", 0)
    assert client.get(where.next) is None
    monkeypatch.setattr(dispatch, "send_status_poller", lambda at, countdown: sent.append((at, countdown)))
    status_polls.schedule("b", 5)
    assert len(sent) == 1
    assert sent[0][1] == 0  # sent for "a", overdue by now
