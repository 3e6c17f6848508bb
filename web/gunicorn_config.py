"""gunicorn settings for the API: ``gunicorn --config python:web.gunicorn_config web.wsgi:app``.

Several worker processes each count their own requests, so a scrape of ``/metrics`` would read whichever
worker answered, and Prometheus would see its counters jump back and forth. prometheus-client's multiprocess
mode adds them up: every worker writes its metrics to files in ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics``
reads them all (``web.observability``). The directory is prepared here, in the master, before any worker starts
(the mode is chosen when a process first imports prometheus-client): the one configured, or a new temporary one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


_created_directory: list[str] = []  # the temporary directory made by this master, removed when it exits


def on_starting(_server: Any) -> None:
    """Point the workers at an empty metrics directory: files left by an earlier run would be summed in."""
    configured = os.environ.get(MULTIPROC_DIR_VARIABLE)
    if not configured:
        _created_directory.append(tempfile.mkdtemp(prefix="orchestration-metrics-"))
        os.environ[MULTIPROC_DIR_VARIABLE] = _created_directory[0]
        return
    directory = Path(configured)
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.iterdir():
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()


def child_exit(_server: Any, worker: Any) -> None:
    """A worker that exits leaves its counts in (they happened); only its live gauges must go."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(_server: Any) -> None:
    for directory in _created_directory:
        shutil.rmtree(directory, ignore_errors=True)
