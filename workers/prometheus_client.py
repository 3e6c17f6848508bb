"""A small client for the Prometheus HTTP query API (instant queries only).

The GPU utilization view and the sweeps read DCGM and vLLM series from ``PROMETHEUS_URL``. Callers must
degrade gracefully when Prometheus is absent or broken, so every failure is raised as one exception type,
:class:`PrometheusUnavailableError`, whose ``reason`` is short enough to show in an API response.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 3.0


class PrometheusUnavailableError(Exception):
    """Prometheus is not configured, not reachable, or answered with an error."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and its value."""

    labels: dict[str, str]
    value: float


class PrometheusClient:
    """Instant queries against ``<base_url>/api/v1/query``.

    ``base_url`` is what PROMETHEUS_URL holds, e.g. ``http://prometheus:9090`` or kubesim's
    ``http://127.0.0.1:PORT/prometheus``.
    """

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise PrometheusUnavailableError(f"PROMETHEUS_URL must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str) -> list[Sample]:
        """Run an instant query and return its vector (scalars come back as one unlabelled sample)."""
        url = f"{self.base_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 (scheme checked)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = response.read()
        except urllib.error.HTTPError as error:
            raise PrometheusUnavailableError(_error_reason(error)) from error
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise PrometheusUnavailableError(f"Prometheus at {self.base_url} is unreachable: {reason}") from error
        return _parse_vector(body)


def _error_reason(error: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(error.read() or b"{}")
    except ValueError:
        payload = {}
    detail = payload.get("error") if isinstance(payload, dict) else None
    return f"Prometheus answered HTTP {error.code}" + (f": {detail}" if detail else "")


def _parse_vector(body: bytes) -> list[Sample]:
    try:
        payload: Any = json.loads(body)
    except ValueError as error:
        raise PrometheusUnavailableError("Prometheus answered with a body that is not JSON") from error
    if not isinstance(payload, dict) or payload.get("status") != "success":
        detail = payload.get("error") if isinstance(payload, dict) else None
        raise PrometheusUnavailableError(f"Prometheus query failed: {detail or 'unexpected answer'}")
    data = payload.get("data") or {}
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "scalar" and isinstance(result, list) and len(result) == 2:
        return [Sample({}, _number(result[1]))]
    if result_type != "vector" or not isinstance(result, list):
        raise PrometheusUnavailableError(f"Prometheus returned a {result_type!r} result where a vector was expected")
    samples = []
    for series in result:
        value = series.get("value") if isinstance(series, dict) else None
        if not isinstance(value, list) or len(value) != 2:
            continue
        labels = {str(key): str(label) for key, label in (series.get("metric") or {}).items()}
        samples.append(Sample(labels, _number(value[1])))
    return samples


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def client_from_settings(prometheus_url: str | None, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> PrometheusClient:
    """A client for PROMETHEUS_URL, or PrometheusUnavailableError saying it is not configured."""
    if not prometheus_url:
        raise PrometheusUnavailableError("PROMETHEUS_URL is not configured")
    return PrometheusClient(prometheus_url, timeout=timeout)
