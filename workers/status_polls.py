"""Status polls of converging deployments: one Redis sorted set of due times and one self-rescheduling poller.

A change (create, restart, scale) is followed until it settles by polling the cluster: first one
``STATUS_POLL_INTERVAL_SECONDS`` after the job, then less often the longer it takes (``observe.poll_delay``).
A countdown Celery message per deployment per poll would cost a publish, a delivery to a worker, a timer
there and a task run every time. Instead each deployment being followed is one member of the sorted set
DUE (score: when its next poll is due, in milliseconds of Redis's clock), and one poller task, sent for the
earliest due time, observes every deployment due when it runs and sends its successor.

Correct without a lock, with every step one atomic script:
- claim: the poller takes the members due (or due within EARLY_ENOUGH_MS) and pushes their score one lease
  ahead, noting the lease in LEASES, so the members of a poller that died come due again;
- a poll asked for while a member is leased (a new job, mid-observation) replaces the lease with its own
  due time and drops the note; otherwise a request never postpones a poll already due sooner (``ZADD LT``);
- the poller settles a member (removes it) or reschedules it only while its own lease note is still there,
  so a poll that a new job asked for meanwhile is neither lost nor postponed;
- NEXT holds when the earliest poller already sent will run (it expires a grace period after that). A
  schedule due sooner than NEXT, or with no NEXT (none sent, or the one sent was lost), sends another
  poller; a send that fails clears the NEXT it set. Two pollers at once are harmless: they claim disjoint
  members, and the second to finish sees the first's successor in NEXT and sends none;
- a run always ends by writing what it observed and sending its successor, even when it is interrupted
  (its soft time limit, a worker shutting down): what it did not get to is polled again soon;
- the health monitor calls :func:`ensure_poller` every sweep, so a lost poller is replaced even when no
  new change arrives (and it observes every deployment itself, polls or not).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from workers.cluster_errors import TransientClusterError
from workers.sweep_lock import default_redis, lock_key_prefix

logger = logging.getLogger(__name__)

LEASE_SECONDS = 90.0  # above the poller's time limit: a claimed poll comes due again only if its poller died
NEXT_GRACE_SECONDS = 30.0  # a poller this late is presumed lost and another is sent
EARLY_ENOUGH_MS = 250  # a poller serves polls due this soon after it runs: no extra poller for them
CLAIM_LIMIT = 64  # deployments per poller run; more due ones go to an immediate successor
OBSERVE_THREADS = 4  # observations are I/O (two cluster reads, two statements): a few at a time
RUN_BUDGET_SECONDS = 30.0  # observations not started by then wait for the successor (the task's soft limit is 60 s)
RETRY_AFTER_ERROR_SECONDS = 15.0

# The wake-up rule shared by both scripts: send a poller for the earliest due member unless one is already
# sent for no later than that (within EARLY_ENOUGH_MS). Returns {delay_ms, at_ms}, or {-1, 0} for none.
_WAKE = """
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then return {-1, 0} end
local at = math.max(tonumber(first[2]), now)
local sent = tonumber(redis.call('GET', KEYS[2]))
if sent ~= nil and sent <= at + tonumber(ARGV[2]) then return {-1, 0} end
redis.call('SET', KEYS[2], at, 'PX', at - now + tonumber(ARGV[3]))
return {at - now, at}
"""
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""
# KEYS: due, next, leases. ARGV: lease_ms (0: a request, not a poller's outcome), early_enough_ms, next_grace_ms,
# then (member, delay_ms) pairs. A request (lease 0) on a leased member replaces the lease with its due time and
# drops the lease note; on any other member it never postpones a sooner poll. A poller's outcome (its lease) for
# a member whose note still holds that lease: delay_ms >= 0 reschedules it, -1 settles it (removes it); for a
# member asked for meanwhile (note gone): delay_ms >= 0 only ever brings the poll forward, -1 leaves it as asked.
_UPDATE = (
    _NOW
    + """
local lease = tonumber(ARGV[1])
for i = 4, #ARGV, 2 do
    local member = ARGV[i]
    local delay = tonumber(ARGV[i + 1])
    local noted = tonumber(redis.call('HGET', KEYS[3], member))
    local ours = lease > 0 and noted == lease
    if ours or (lease == 0 and noted ~= nil) then
        redis.call('HDEL', KEYS[3], member)
        if delay >= 0 then
            redis.call('ZADD', KEYS[1], now + delay, member)
        else
            redis.call('ZREM', KEYS[1], member)
        end
    elseif delay >= 0 then
        redis.call('ZADD', KEYS[1], 'LT', now + delay, member)
    end
end
"""
    + _WAKE
)
# KEYS: due, next, leases. ARGV: poller's scheduled at_ms, lease_ms, limit, early_enough_ms. The running poller is
# no longer "sent": NEXT is cleared if it is this poller's. Returns {lease_at_ms, member...}.
_CLAIM = (
    _NOW
    + """
if tonumber(redis.call('GET', KEYS[2])) == tonumber(ARGV[1]) then redis.call('DEL', KEYS[2]) end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now + tonumber(ARGV[4]), 'LIMIT', 0, tonumber(ARGV[3]))
local lease = now + tonumber(ARGV[2])
for _, member in ipairs(due) do
    redis.call('ZADD', KEYS[1], lease, member)
    redis.call('HSET', KEYS[3], member, lease)
end
table.insert(due, 1, lease)
return due
"""
)
# KEYS: next. ARGV: at_ms. A poller that could not be sent must not stay named as on its way.
_UNSEND = """
if tonumber(redis.call('GET', KEYS[1])) == tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Keys:
    due: str
    next: str
    leases: str

    def all(self) -> list[str]:
        return [self.due, self.next, self.leases]


def keys() -> Keys:
    """Under the broker's key prefix, so installs (or test runs) sharing one Redis keep their polls apart."""
    prefix = f"{lock_key_prefix()}status-polls:"
    return Keys(due=f"{prefix}due", next=f"{prefix}next", leases=f"{prefix}leases")


@dataclass(frozen=True)
class _Scripts:
    update: Any
    claim: Any
    unsend: Any


@cache
def _scripts(client: Any) -> _Scripts:
    return _Scripts(
        update=client.register_script(_UPDATE),
        claim=client.register_script(_CLAIM),
        unsend=client.register_script(_UNSEND),
    )


def _update(pairs: Iterable[tuple[str, int]], lease_ms: int = 0, client: Any | None = None) -> None:
    client = client if client is not None else default_redis()
    scripts = _scripts(client)
    where = keys()
    argv: list[Any] = [lease_ms, EARLY_ENOUGH_MS, int(NEXT_GRACE_SECONDS * 1000)]
    for member, delay_ms in pairs:
        argv.extend((member, delay_ms))
    delay_ms, at_ms = scripts.update(keys=where.all(), args=argv)
    if delay_ms < 0:
        return
    from workers.dispatch import send_status_poller

    try:
        send_status_poller(int(at_ms), countdown=delay_ms / 1000)
    except BaseException:
        scripts.unsend(keys=[where.next], args=[int(at_ms)])
        raise


def schedule(deployment_id: uuid.UUID | str, delay_seconds: float, *, client: Any | None = None) -> None:
    """Poll the deployment ``delay_seconds`` from now (or sooner, if a poll is already due sooner)."""
    _update([(str(deployment_id), max(int(delay_seconds * 1000), 0))], client=client)


def ensure_poller(*, client: Any | None = None) -> None:
    """Send a poller if polls are waiting and none is on its way (the one sent was lost)."""
    _update([], client=client)


@dataclass(frozen=True)
class Claim:
    lease_ms: int
    deployment_ids: list[str]


def claim(scheduled_at_ms: int, *, limit: int | None = None, client: Any | None = None) -> Claim:
    """Take up to ``limit`` (default CLAIM_LIMIT) polls due by now, leased to this run."""
    client = client if client is not None else default_redis()
    reply = _scripts(client).claim(
        keys=keys().all(), args=[scheduled_at_ms, int(LEASE_SECONDS * 1000), limit or CLAIM_LIMIT, EARLY_ENOUGH_MS]
    )
    return Claim(lease_ms=int(reply[0]), deployment_ids=[member.decode() for member in reply[1:]])


# observe(deployment_id) -> seconds until the next poll, or None once the deployment has settled.
Observer = Callable[[str], "float | None"]

# Failures worth another poll soon: the cluster or the database unreachable for a moment. Anything else (the
# cluster refusing us, a bug) ends the polls of that deployment, as a failed poll task used to: the health
# monitor still observes it every sweep.
_TRANSIENT = (TransientClusterError, OperationalError)
_NOT_STARTED = object()


def _observe_guarded(observe: Observer, deadline: float, deployment_id: str) -> Any:
    if time.monotonic() > deadline:
        return _NOT_STARTED
    try:
        return observe(deployment_id)
    except SoftTimeLimitExceeded:
        raise  # the run is out of time: run_poller writes what it has and hands the rest to its successor
    except _TRANSIENT:
        logger.warning("status poll failed; trying again later", extra={"deployment_id": deployment_id}, exc_info=True)
        return RETRY_AFTER_ERROR_SECONDS
    except Exception:
        logger.exception("status poll failed; polls of this deployment end", extra={"deployment_id": deployment_id})
        return None


def _delay_ms(outcome: Any) -> int:
    if outcome is _NOT_STARTED:
        return 0  # the successor takes it at once
    return -1 if outcome is None else max(int(outcome * 1000), 0)


def run_poller(scheduled_at_ms: int, observe: Observer, *, client: Any | None = None) -> int:
    """One poller run: claim what is due, observe it, reschedule or settle each, send the successor.
    Returns how many deployments were observed."""
    claimed = claim(scheduled_at_ms, client=client)
    observe_one = partial(_observe_guarded, observe, time.monotonic() + RUN_BUDGET_SECONDS)
    outcomes: dict[str, Any] = {}
    try:
        if len(claimed.deployment_ids) > 1:
            pool = ThreadPoolExecutor(max_workers=OBSERVE_THREADS, thread_name_prefix="status-poll")
            try:
                futures = {
                    pool.submit(observe_one, deployment_id): deployment_id for deployment_id in claimed.deployment_ids
                }
                for future in as_completed(futures):
                    outcomes[futures[future]] = future.result()
            finally:
                pool.shutdown(wait=False, cancel_futures=True)
        else:
            for deployment_id in claimed.deployment_ids:
                outcomes[deployment_id] = observe_one(deployment_id)
    finally:
        # Interrupted or not, what was observed is written and the successor is sent; a deployment whose
        # observation did not finish is polled again after RETRY_AFTER_ERROR_SECONDS.
        pairs = [
            (deployment_id, _delay_ms(outcomes[deployment_id]) if deployment_id in outcomes
             else int(RETRY_AFTER_ERROR_SECONDS * 1000))
            for deployment_id in claimed.deployment_ids
        ]  # fmt: skip
        _update(pairs, lease_ms=claimed.lease_ms, client=client)
    return sum(1 for outcome in outcomes.values() if outcome is not _NOT_STARTED)
