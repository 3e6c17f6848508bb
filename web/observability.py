"""Request ids, JSON logs and Prometheus metrics for the API.

Each request gets an id (the caller's ``X-Request-ID`` if it is sane, else a new one), bound into the log
context and echoed in the response. Metrics live in a registry per app, so several apps in one process
(tests) never collide; gunicorn workers each expose their own counters (scrape each worker, or run one
worker per container).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
import uuid
from collections import Counter as Tally
from collections.abc import Iterator

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from models import Job, JobState, SweepRun
from models.db import get_sessionmaker
from workers.logs import request_id_var

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# Ids from callers are logged verbatim; anything that could forge log structure is replaced.
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
# Bounded label values: the route template, never the raw path (ids would explode cardinality).
UNMATCHED_ENDPOINT = "<unmatched>"


class JobsByStateCollector(Collector):
    """Current number of jobs per state, read from Postgres at scrape time (the rows are the truth)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("orchestration_jobs", "Jobs by state, from the jobs table", labels=["state"])
        counts = {state.value: 0 for state in JobState}
        try:
            with get_sessionmaker()() as session:
                for state, count in session.execute(select(Job.state, func.count()).group_by(Job.state)):
                    counts[JobState(state).value] = count
        except Exception:
            # A scrape must not fail because Postgres is down; readiness reports that. Omit the family.
            logger.warning("jobs-by-state metric unavailable", exc_info=True)
            return
        for state_name, count in counts.items():
            family.add_metric([state_name], count)
        yield family


class SweepsCollector(Collector):
    """Each sweep's last run, from its ``sweep_runs`` row at scrape time.

    Sweeps run in Celery worker processes (forked pool children) that no scraper reaches, and every run
    stores its outcome and summary on its row (``workers.sweep_metrics``): served from here, the figures are
    the same whichever worker ran the sweep, and survive worker restarts. Gauges of the last run, so alerts
    read e.g. ``orchestration_sweep_last_run_finished_timestamp_seconds`` for staleness and
    ``orchestration_sweep_last_run_status{status!="succeeded"}`` for failures."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with get_sessionmaker()() as session:
                rows = session.execute(
                    select(SweepRun.name, SweepRun.last_status, SweepRun.last_finished_at, SweepRun.last_summary)
                    .where(SweepRun.last_summary.is_not(None))
                    .order_by(SweepRun.name)
                ).all()
        except Exception:
            logger.warning("sweep metrics unavailable", exc_info=True)
            return
        status = GaugeMetricFamily(
            "orchestration_sweep_last_run_status",
            "1 for the outcome of the sweep's last run",
            labels=["sweep", "status"],
        )
        finished = GaugeMetricFamily(
            "orchestration_sweep_last_run_finished_timestamp_seconds",
            "Unix time the sweep's last run ended",
            labels=["sweep"],
        )
        duration = GaugeMetricFamily(
            "orchestration_sweep_last_run_duration_seconds", "Wall time of the sweep's last run", labels=["sweep"]
        )
        items = GaugeMetricFamily(
            "orchestration_sweep_last_run_items", "Objects the last run examined", labels=["sweep", "kind"]
        )
        actions = GaugeMetricFamily(
            "orchestration_sweep_last_run_actions", "Changes the last run made", labels=["sweep", "action"]
        )
        errors = GaugeMetricFamily(
            "orchestration_sweep_last_run_errors", "Errors the last run met, by code", labels=["sweep", "code"]
        )
        for name, last_status, last_finished_at, summary in rows:
            status.add_metric([name, str(last_status)], 1)
            if last_finished_at is not None:
                finished.add_metric([name], last_finished_at.timestamp())
            duration.add_metric([name], float(summary.get("duration_seconds") or 0.0))
            for kind, count in (summary.get("items") or {}).items():
                items.add_metric([name, kind], count)
            for action, count in (summary.get("actions") or {}).items():
                actions.add_metric([name, action], count)
            for code, count in Tally(error.get("code", "unknown") for error in summary.get("errors") or []).items():
                errors.add_metric([name, code], count)
        yield from (status, finished, duration, items, actions, errors)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests answered",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["endpoint", "method"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.jobs_submitted = Counter(
            "orchestration_jobs_submitted_total",
            "Jobs accepted by the API (replays of an Idempotency-Key not counted)",
            ["type"],
            registry=self.registry,
        )
        self.database_collectors = (JobsByStateCollector(), SweepsCollector())
        for collector in self.database_collectors:
            self.registry.register(collector)


def api_metrics(app: Flask) -> ApiMetrics:
    return app.extensions["api_metrics"]


def _start_request() -> None:
    supplied = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = supplied if _SAFE_REQUEST_ID.match(supplied) else uuid.uuid4().hex
    g.request_id = request_id
    g.request_started = time.perf_counter()
    g.request_id_token = request_id_var.set(request_id)


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    started = g.get("request_started")
    if started is not None:
        endpoint = _route_label(request.url_rule.rule) if request.url_rule is not None else UNMATCHED_ENDPOINT
        metrics = g.get("api_metrics")
        if metrics is not None:
            metrics.requests.labels(endpoint, request.method, str(response.status_code)).inc()
            metrics.latency.labels(endpoint, request.method).observe(time.perf_counter() - started)
    return response


def _reset_log_context(_exception: BaseException | None) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        request_id_var.reset(token)


_RULE_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>:]+)>")


@functools.cache
def _route_label(rule: str) -> str:
    """The route as the API documents it: ``/internal/deployments/{deployment_id}/status`` for the Flask rule
    ``/internal/deployments/<resource_id('create'):deployment_id>/status``."""
    return _RULE_VARIABLE.sub(r"{\1}", rule)


def metrics_endpoint(metrics: ApiMetrics):
    def serve_metrics() -> Response:
        # content_type, not mimetype: the constant already names its charset, which mimetype would add again.
        return Response(generate_latest(_scraped_registry(metrics)), content_type=CONTENT_TYPE_LATEST)

    return serve_metrics


def _scraped_registry(metrics: ApiMetrics) -> CollectorRegistry:
    """This process's registry, or, under gunicorn's several workers (``web.gunicorn_config`` sets
    ``PROMETHEUS_MULTIPROC_DIR``), the counts of every worker added up plus the collectors that read Postgres."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return metrics.registry
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    for collector in metrics.database_collectors:
        registry.register(collector)
    return registry


def init_observability(app: Flask) -> None:
    metrics = ApiMetrics()
    app.extensions["api_metrics"] = metrics

    def bind_metrics() -> None:
        g.api_metrics = metrics

    app.before_request(_start_request)
    app.before_request(bind_metrics)
    app.after_request(_finish_request)
    app.teardown_request(_reset_log_context)
    app.add_url_rule("/metrics", "metrics", metrics_endpoint(metrics), methods=["GET"])
