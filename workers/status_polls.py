"""Status polls of converging deployments: one Redis sorted set of due times and one self-rescheduling poller.

A change (create, restart, scale) is followed until it settles by polling the cluster: first one
``STATUS_POLL_INTERVAL_SECONDS`` after the job, then less often the longer it takes (``observe.poll_delay``).
A countdown Celery message per deployment per poll would cost a publish, a delivery to a worker, a timer
there and a task run every time. Instead each deployment being followed is one member of the sorted set
DUE (score: when its next poll is due, in milliseconds of Redis's clock), and one poller task, sent for the
earliest due time, observes every deployment due when it runs and sends its successor.

Correct without a lock, with every step one atomic script:
- claim: the poller takes the due members and pushes their score one lease ahead, so two pollers never
  observe the same deployment at once, and the members of a poller that died come due again;
- reschedule: ``ZADD LT``, so a poll that a new job asked for meanwhile, due sooner, is never postponed;
- settle: a member is removed only while its score is still the poller's lease, so a poll that a new job
  asked for while the deployment was being observed is not lost;
- NEXT holds when the earliest poller already sent will run (it expires a grace period after that). A
  schedule due sooner than NEXT, or with no NEXT (none sent, or the one sent was lost), sends another
  poller. Two pollers at once are harmless: they claim disjoint members, and the second to finish sees
  the first's successor in NEXT and sends none.
- the health monitor calls :func:`ensure_poller` every sweep, so a lost poller is replaced even when no
  new change arrives (and it observes every deployment itself, polls or not).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

from workers.sweep_lock import default_redis, lock_key_prefix

logger = logging.getLogger(__name__)

LEASE_SECONDS = 90.0  # above the poller's time limit: a claimed poll comes due again only if its poller died
NEXT_GRACE_SECONDS = 30.0  # a poller this late is presumed lost and another is sent
EARLY_ENOUGH_MS = 250  # a poller already due within this of a new poll serves it: no extra poller
CLAIM_LIMIT = 64  # deployments per poller run; more due ones go to an immediate successor
OBSERVE_THREADS = 4  # observations are I/O (two cluster reads, two statements): a few at a time
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
# KEYS: due, next. ARGV: lease_ms (0: none), early_enough_ms, next_grace_ms, then (member, delay_ms) pairs:
# delay_ms >= 0 schedules a poll that far ahead (unless one is due sooner); -1 settles (removes the member if
# its score is still the lease, i.e. nobody asked for a poll while it was being observed).
_UPDATE = (
    _NOW
    + """
local lease = tonumber(ARGV[1])
for i = 4, #ARGV, 2 do
    local delay = tonumber(ARGV[i + 1])
    if delay >= 0 then
        redis.call('ZADD', KEYS[1], 'LT', now + delay, ARGV[i])
    elseif tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i])) == lease then
        redis.call('ZREM', KEYS[1], ARGV[i])
    end
end
"""
    + _WAKE
)
# KEYS: due, next. ARGV: poller's scheduled at_ms, lease_ms, limit. The running poller is no longer "sent":
# NEXT is cleared if it is this poller's. Returns {lease_at_ms, member...}.
_CLAIM = (
    _NOW
    + """
if tonumber(redis.call('GET', KEYS[2])) == tonumber(ARGV[1]) then redis.call('DEL', KEYS[2]) end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local lease = now + tonumber(ARGV[2])
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], lease, member) end
table.insert(due, 1, lease)
return due
"""
)


@dataclass(frozen=True)
class Keys:
    due: str
    next: str


def keys() -> Keys:
    """Under the broker's key prefix, so installs (or test runs) sharing one Redis keep their polls apart."""
    prefix = f"{lock_key_prefix()}status-polls:"
    return Keys(due=f"{prefix}due", next=f"{prefix}next")


@cache
def _scripts(client: Any) -> tuple[Any, Any]:
    return client.register_script(_UPDATE), client.register_script(_CLAIM)


def _update(pairs: Iterable[tuple[str, int]], lease_ms: int = 0, client: Any | None = None) -> None:
    client = client if client is not None else default_redis()
    update, _ = _scripts(client)
    where = keys()
    argv: list[Any] = [lease_ms, EARLY_ENOUGH_MS, int(NEXT_GRACE_SECONDS * 1000)]
    for member, delay_ms in pairs:
        argv.extend((member, delay_ms))
    delay_ms, at_ms = update(keys=[where.due, where.next], args=argv)
    if delay_ms >= 0:
        from workers.dispatch import send_status_poller

        send_status_poller(int(at_ms), countdown=delay_ms / 1000)


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


def claim(scheduled_at_ms: int, *, limit: int = CLAIM_LIMIT, client: Any | None = None) -> Claim:
    client = client if client is not None else default_redis()
    _, claim_script = _scripts(client)
    where = keys()
    reply = claim_script(keys=[where.due, where.next], args=[scheduled_at_ms, int(LEASE_SECONDS * 1000), limit])
    return Claim(lease_ms=int(reply[0]), deployment_ids=[member.decode() for member in reply[1:]])


# observe(deployment_id) -> seconds until the next poll, or None once the deployment has settled.
Observer = Callable[[str], "float | None"]


def _observe_guarded(observe: Observer, deployment_id: str) -> float | None:
    try:
        return observe(deployment_id)
    except Exception:
        # The cluster or the database failing for one deployment must not drop the others' polls.
        logger.warning("status poll failed; trying again later", extra={"deployment_id": deployment_id}, exc_info=True)
        return RETRY_AFTER_ERROR_SECONDS


def run_poller(scheduled_at_ms: int, observe: Observer, *, client: Any | None = None) -> int:
    """One poller run: claim what is due, observe it, reschedule or settle each, send the successor.
    Returns how many deployments were observed."""
    claimed = claim(scheduled_at_ms, client=client)
    observe_one = partial(_observe_guarded, observe)
    if len(claimed.deployment_ids) > 1:
        with ThreadPoolExecutor(max_workers=OBSERVE_THREADS, thread_name_prefix="status-poll") as pool:
            delays = list(pool.map(observe_one, claimed.deployment_ids))
    else:
        delays = [observe_one(deployment_id) for deployment_id in claimed.deployment_ids]
    outcomes = [
        (deployment_id, -1 if delay is None else max(int(delay * 1000), 0))
        for deployment_id, delay in zip(claimed.deployment_ids, delays, strict=True)
    ]
    _update(outcomes, lease_ms=claimed.lease_ms, client=client)
    return len(outcomes)
