"""The Celery broker transport: kombu's Redis transport, keeping one Redis client per channel.

kombu builds a new ``redis.Redis`` for every publish (``Channel.conn_or_acquire``). Building one copies
redis-py's table of response callbacks, about 80 µs, and that cost falls on every job an API request submits
and every task event a worker sends. A client is only a handle on the channel's connection pool and may be
shared between threads, so the channel builds one per pool and hands out that one. The consuming side (the
asynchronous client BRPOP uses) is kombu's own.
"""

from __future__ import annotations

from typing import Any

from kombu import transport as kombu_transport
from kombu.transport import redis as kombu_redis

TRANSPORT = "workers.broker:Transport"


def install() -> None:
    """Make this the transport of ``redis://`` URLs in this process (kombu resolves a URL's scheme through
    ``TRANSPORT_ALIASES``). Done by alias rather than Celery's ``broker_transport`` setting, which would also
    become the scheme of the URL the app reports (``workers.broker:Transport://...``), and Flower, reading
    queue lengths through its own client chosen by that scheme, would no longer recognise the broker.
    ``redis+socket://`` URLs get it too; ``rediss://`` and ``sentinel://`` keep kombu's own transports."""
    kombu_transport.TRANSPORT_ALIASES["redis"] = TRANSPORT
    kombu_transport._transport_cache.pop("redis", None)  # resolved before this, it would stay kombu's


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
