"""Liveness (``/health``) and readiness (``/health/ready``) probes.

Liveness only says the process answers; it never touches a dependency, so a Postgres outage does not
get every API pod restarted. Readiness checks Postgres, Redis and the Kubernetes API in parallel, each
bounded by a short timeout, and answers 503 naming what failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import redis
from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from settings import Settings
from workers import k8s

CHECK_TIMEOUT_SECONDS = 3.0

Check = Callable[[], dict[str, Any] | None]


def postgres_check(settings: Settings) -> Check:
    # A dedicated engine without a pool: the probe must open a real connection (a pooled one could hide
    # an outage) and must not take a connection the requests need.
    engine = create_engine(
        settings.database_url, poolclass=NullPool, connect_args={"connect_timeout": int(CHECK_TIMEOUT_SECONDS)}
    )

    def check() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    return check


def redis_check(settings: Settings) -> Check:
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=CHECK_TIMEOUT_SECONDS, socket_connect_timeout=CHECK_TIMEOUT_SECONDS
    )

    def check() -> None:
        client.ping()

    return check


def cluster_check() -> dict[str, Any]:
    return k8s.ping()


class Readiness:
    def __init__(self, checks: dict[str, Check]) -> None:
        self.checks = checks
        # Checks run in parallel so the probe takes as long as the slowest, not the sum; a hung check
        # occupies a thread until its own timeout, never the request.
        self._executor = ThreadPoolExecutor(max_workers=4 * len(checks), thread_name_prefix="readiness")

    def run(self) -> tuple[bool, dict[str, Any]]:
        futures = {name: self._executor.submit(self._timed, check) for name, check in self.checks.items()}
        results: dict[str, Any] = {}
        for name, future in futures.items():
            try:
                results[name] = future.result(timeout=CHECK_TIMEOUT_SECONDS + 0.5)
            except FutureTimeout:
                results[name] = {"ok": False, "error": f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"}
        return all(result["ok"] for result in results.values()), results

    @staticmethod
    def _timed(check: Check) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            info = check()
        except Exception as error:
            return {"ok": False, "error": f"{type(error).__name__}: {error}"[:500]}
        result: dict[str, Any] = {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}
        if info:
            result["info"] = info
        return result


blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
def liveness():
    return jsonify({"status": "ok"})


@blueprint.get("/health/ready")
def readiness():
    ready, checks = current_app.extensions["readiness"].run()
    failed = sorted(name for name, result in checks.items() if not result["ok"])
    body = {"status": "ready" if ready else "unavailable", "failed": failed, "checks": checks}
    return jsonify(body), 200 if ready else 503


def init_health(app: Flask, settings: Settings) -> None:
    app.extensions["readiness"] = Readiness(
        {"postgres": postgres_check(settings), "redis": redis_check(settings), "cluster": cluster_check}
    )
    app.register_blueprint(blueprint)
