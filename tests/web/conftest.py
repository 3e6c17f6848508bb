"""Fixtures for API tests: an app per test on the session's throwaway database, tokens, seeded GPU nodes.

Jobs are really enqueued: the Celery app publishes to the real Redis under a key prefix unique to this
test session, so no other helper's worker can consume these messages, and tests can read them back.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from models import GpuNode
from settings import Settings, get_settings
from web.app import create_app
from web.tokens import mint_token

JWT_SECRET = "web-tests-secret-of-at-least-32-bytes"
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def broker_prefix() -> Iterator[str]:
    """Send every Celery message of this session through a separate Celery app (same config) whose Redis
    keys carry a unique prefix; the shared app and its connection pools are left untouched."""
    import workers.celery_app as celery_app_module

    prefix = f"web-tests-{uuid.uuid4().hex[:10]}:"
    isolated = Celery("orchestration-web-tests", set_as_current=False)
    isolated.config_from_object("celeryconfig")
    isolated.conf.broker_url = REDIS_URL
    isolated.conf.broker_transport_options = {
        **(isolated.conf.broker_transport_options or {}),
        "global_keyprefix": prefix,
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(celery_app_module, "app", isolated)
        try:
            yield prefix
        finally:
            isolated.close()
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)


@pytest.fixture
def enqueued_task_ids(broker_prefix: str) -> Callable[[], list[str]]:
    """Read back the task ids published to the jobs queue so far (without consuming them)."""
    from workers.queues import Queues

    client = redis.Redis.from_url(REDIS_URL)
    key = f"{broker_prefix}{Queues.JOBS}"
    client.delete(key)

    def read() -> list[str]:
        return [json.loads(raw)["headers"]["id"] for raw in client.lrange(key, 0, -1)]

    return read


@pytest.fixture
def web_settings(database_url: str) -> Settings:
    return dataclasses.replace(
        get_settings(), jwt_secret=JWT_SECRET, jwt_algorithm="HS256", redis_url=REDIS_URL, tenant_service_url=None
    )


@pytest.fixture
def make_app(web_settings: Settings, broker_prefix: str, clean_tables: Engine) -> Callable[..., Flask]:
    """Apps on the session database, with every table emptied before and after the test: an
    authenticated request provisions its tenant row, which would otherwise leak into later tests."""

    def build(**overrides: Any) -> Flask:
        return create_app(dataclasses.replace(web_settings, **overrides))

    return build


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def token_for(web_settings: Settings) -> Callable[..., str]:
    def mint(tenant: str | None = "acme", scopes: tuple[str, ...] = ("internal",), **kwargs: Any) -> str:
        return mint_token(
            web_settings, subject=kwargs.pop("subject", "svc-test"), scopes=list(scopes), tenant_id=tenant, **kwargs
        )

    return mint


@pytest.fixture
def headers_for(token_for: Callable[..., str]) -> Callable[..., dict[str, str]]:
    def build(tenant: str | None = "acme", **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {token_for(tenant, **kwargs)}"}

    return build


@pytest.fixture
def acme(headers_for: Callable[..., dict[str, str]]) -> dict[str, str]:
    return headers_for("acme")


@pytest.fixture
def seed_nodes(clean_tables: Engine) -> Callable[..., list[str]]:
    """Insert Ready GPU nodes: ``seed_nodes({"nvidia-l40s": [8, 4], "nvidia-h100": [8]})``."""

    def seed(gpus_by_type: dict[str, list[int]]) -> list[str]:
        names = []
        with Session(clean_tables) as session:
            for gpu_type, capacities in gpus_by_type.items():
                for index, gpus in enumerate(capacities):
                    name = f"{gpu_type.split('-')[-1]}-{index}"
                    session.add(
                        GpuNode(
                            name=name,
                            gpu_product=gpu_type,
                            gpu_capacity=gpus,
                            gpu_allocatable=gpus,
                            gpu_allocated=0,
                            ready_status="Ready",
                            unschedulable=False,
                            labels={"nvidia.com/gpu.product": gpu_type},
                        )
                    )
                    names.append(name)
            session.commit()
        return names

    return seed
