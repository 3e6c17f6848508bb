"""The Celery broker transport: kombu's Redis transport, keeping one Redis client per channel.

kombu builds a new ``redis.Redis`` for every publish (``Channel.conn_or_acquire``). Building one copies
redis-py's table of response callbacks, about 80 µs, and that cost falls on every job an API request submits
and every task event a worker sends. A client is only a handle on the channel's connection pool and may be
shared between threads, so the channel builds one per pool and hands out that one. The consuming side (the
asynchronous client BRPOP uses) is kombu's own.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from kombu.transport import redis as kombu_redis

TRANSPORT = "workers.broker:Transport"


def transport_for(broker_url: str) -> str | None:
    """Celery's ``broker_transport`` for ``broker_url``: this module's for a plain ``redis://`` URL; ``None``
    (the transport kombu picks from the scheme) for any other, such as ``rediss://``, ``sentinel://`` or
    ``redis+socket://``, whose transports differ from the plain one."""
    return TRANSPORT if urlsplit(broker_url).scheme == "redis" else None


class Channel(kombu_redis.Channel):
    _shared_client: tuple[Any, Any] | None = None  # (the pool it was built on, the client)

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        shared = self._shared_client
        # kombu replaces the pool after a lost connection; a client of the old pool must not outlive it.
        if shared is None or shared[0] is not pool:
            shared = self._shared_client = (pool, super()._create_client())
        return shared[1]


class Transport(kombu_redis.Transport):
    Channel = Channel
