"""Fixtures for the embedded run's tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A directory for an embedded run's data, outside pytest's own temporary tree.

    As root, the embedded Postgres runs as an unprivileged user that must traverse every parent of its data
    directory. pytest resets its ``pytest-of-<user>`` directory to mode 0700 whenever a session starts, so a
    data directory under ``tmp_path`` becomes unreachable as soon as another pytest session runs alongside.
    """
    root = Path(tempfile.mkdtemp(prefix="embedded-test-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
