"""``/metrics`` under gunicorn's several worker processes: the counts of every worker, added up."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
HEALTH_SERVED = re.compile(r'^http_requests_total\{endpoint="/health",method="GET",status="200"\} (\S+)$', re.M)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def _metrics_directories() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("orchestration-metrics-*"))


@pytest.fixture(params=["configured directory", "temporary directory, app preloaded"])
def api_port(request, database_url: str, tmp_path: Path) -> Iterator[int]:
    """The API behind gunicorn with two sync workers (one request at a time each) and the service's config:
    with PROMETHEUS_MULTIPROC_DIR set (holding a stale metrics file and a file of someone else's), or unset
    with the app loaded before the workers fork (``--preload``)."""
    port = _free_port()
    env = dict(os.environ, DATABASE_URL=database_url, JWT_SECRET=secrets.token_hex(32))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    extra_arguments: list[str] = []
    metrics_directory = tmp_path / "metrics"
    if request.param == "configured directory":
        metrics_directory.mkdir()
        (metrics_directory / "counter_1.db").write_bytes(b"left by an earlier run")
        (metrics_directory / "notes.txt").write_text("not ours")
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_directory)
    else:
        extra_arguments.append("--preload")
    directories_before = _metrics_directories()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "web.wsgi:app", "--config", "python:web.gunicorn_config",
         "--workers", "2", "--bind", f"127.0.0.1:{port}", "--log-level", "warning", *extra_arguments],
        cwd=REPOSITORY, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):  # not listening yet
                if _get(port, "/health")[0] == 200:
                    break
            assert time.monotonic() < deadline, "gunicorn did not answer /health"
            time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)
    if request.param == "configured directory":
        assert (metrics_directory / "notes.txt").read_text() == "not ours"
    else:
        assert _metrics_directories() == directories_before  # the temporary directory went with gunicorn


def _health_served(port: int) -> float:
    status, body = _get(port, "/metrics")
    assert status == 200
    found = HEALTH_SERVED.search(body)
    return float(found.group(1)) if found else 0.0


def test_every_scrape_counts_the_requests_of_every_worker(api_port):
    before = _health_served(api_port)
    # One worker is held by a request whose headers never end, so the next ones are all served by the other.
    held = socket.create_connection(("127.0.0.1", api_port))
    held.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
    served_by_the_other = 12
    for _ in range(served_by_the_other):
        assert _get(api_port, "/health")[0] == 200
    held.sendall(b"Connection: close\r\n\r\n")
    assert held.recv(65536).startswith(b"HTTP/1.1 200")
    held.close()

    # Each scrape is answered by whichever worker is free: all of them read the same sum.
    scrapes = [_health_served(api_port) - before for _ in range(8)]

    assert scrapes == [served_by_the_other + 1] * 8


def test_a_header_longer_than_gunicorns_default_limit_reaches_the_api(api_port):
    """A bearer token of a service acting for many tenants can pass 8190 bytes, gunicorn's default limit."""
    status, body = _get(api_port, "/internal/jobs/x", {"Authorization": "Bearer " + "a" * 12000})

    assert status == 401  # the API's own answer to a bad token (not gunicorn's HTML 431)
    assert '"invalid_token"' in body


@pytest.mark.parametrize(
    ("request_head", "status", "code"),
    [
        (b"GET /health HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n", 400, "bad_request"),
        (b"GET /health HTTP/9.9\r\nHost: localhost\r\n\r\n", 400, "bad_request"),
        (b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n", 431, "request_header_fields_too_large"),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414, "request_line_too_long"),
    ],
)
def test_requests_gunicorn_refuses_get_the_apis_json_error(api_port, request_head, status, code):
    with socket.create_connection(("127.0.0.1", api_port), timeout=10) as connection:
        connection.sendall(request_head)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Content-Type: application/json" in head
    assert json.loads(body)["error"]["code"] == code
