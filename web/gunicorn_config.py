"""gunicorn settings for the API: ``gunicorn --config python:web.gunicorn_config web.wsgi:app``.

Several worker processes each count their own requests, so a scrape of ``/metrics`` would read whichever
worker answered, and Prometheus would see its counters jump back and forth. prometheus-client's multiprocess
mode adds them up: every worker writes its metrics to files in ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics``
reads them all (``web.observability``).

The mode is chosen when a process first imports prometheus-client, so the directory is prepared when gunicorn
reads this file: before it loads the app, even with ``--preload``. It is the one configured (its metric files
from an earlier run removed, since they would be summed in), or a new temporary one, removed when gunicorn exits.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gunicorn import util

from web.gunicorn_errors import write_json_error

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def _prepare_metrics_directory() -> str | None:
    """Returns the temporary directory made for this gunicorn, if it made one."""
    configured = os.environ.get(MULTIPROC_DIR_VARIABLE)
    if not configured:
        created = tempfile.mkdtemp(prefix="orchestration-metrics-")
        os.environ[MULTIPROC_DIR_VARIABLE] = created
        return created
    directory = Path(configured)
    directory.mkdir(parents=True, exist_ok=True)
    # Only prometheus-client's own files ("counter_<pid>.db", ...): the directory may hold other things.
    for leftover in directory.glob("*.db"):
        leftover.unlink(missing_ok=True)
    return None


_created_directory = _prepare_metrics_directory()

# A bearer token can outgrow gunicorn's 8190-byte header line (a platform service's token listing many tenants);
# gunicorn refuses a longer one itself, with an HTML 431 the API's error handling never sees.
limit_request_field_size = 32768
# gunicorn sizes a request head's buffer as fields x field size: half the default 100 fields keeps that near
# 1.6 MB, and no client of this API sends more than a few dozen headers.
limit_request_fields = 50

# Requests gunicorn refuses itself (a malformed request line or header, a head over the limits above) are answered
# in the API's JSON error shape, not gunicorn's HTML page. Set here, in the master, so every forked worker has it.
util.write_error = write_json_error


def child_exit(_server: Any, worker: Any) -> None:
    """A worker that exits leaves its counts in (they happened); only its live gauges must go."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(_server: Any) -> None:
    if _created_directory is not None:
        shutil.rmtree(_created_directory, ignore_errors=True)
