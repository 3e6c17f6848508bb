"""The broker transport: kombu's Redis transport with one shared client per channel, on a real Redis."""

from __future__ import annotations

import uuid

import pytest
import redis
from kombu import Connection, Exchange, Producer, Queue

from workers.broker import Transport

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix():
    value = f"broker-test-{uuid.uuid4().hex[:8]}:"
    yield value
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{value}*"):
        client.delete(key)


@pytest.fixture
def connection(prefix):
    with Connection(REDIS_URL, transport=Transport, transport_options={"global_keyprefix": prefix}) as conn:
        yield conn


def test_publishes_share_one_client_per_pool(connection):
    channel = connection.default_channel
    with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
        assert first is second
    # After a lost connection kombu replaces the pool: the client of the old pool is not handed out again.
    channel._disconnect_pools()
    with channel.conn_or_acquire() as third:
        assert third is not first
        assert third.connection_pool is channel.pool


def test_consuming_keeps_its_own_client(connection):
    channel = connection.default_channel
    with channel.conn_or_acquire() as shared:
        assert channel.client is not shared


def test_messages_published_in_batches_and_one_by_one_reach_the_queue(connection, prefix):
    exchange = Exchange("broker-test", type="direct")
    queue = Queue("broker-test", exchange, routing_key="broker-test")
    channel = connection.default_channel
    producer = Producer(channel, exchange=exchange, routing_key="broker-test")
    producer.publish({"n": 0}, declare=[queue])
    with producer.batch():
        producer.publish({"n": 1}, declare=[queue])
        producer.publish({"n": 2}, declare=[queue])
    producer.publish({"n": 3}, declare=[queue])

    assert redis.Redis.from_url(REDIS_URL).llen(f"{prefix}broker-test") == 4
    bound = queue.bind(channel)
    assert [bound.get(no_ack=True).payload for _ in range(4)] == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]


def test_the_celery_app_uses_it_and_still_reports_a_redis_url():
    """Installed by alias: the app's connection is this transport, and the URL it reports (to Flower, in the
    worker banner) keeps its redis:// scheme, which Flower needs to read queue lengths."""
    from flower.utils.broker import Broker

    from workers.celery_app import app

    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)
        uri = connection.as_uri(include_password=True)
    assert uri.startswith("redis://")
    assert type(Broker(uri, broker_options={})).__name__ == "Redis"  # raised NotImplementedError for the old URL
