"""The process group: start children, notice when one dies, stop them all.

Each child runs in its own session (``setsid``), hence its own process group, for two reasons:
- Ctrl-C in the terminal reaches only the supervisor, which then stops the children in a known order
  (the API before Postgres) instead of every process racing to handle the same SIGINT;
- stopping a child signals its whole group, so gunicorn's and Celery's own worker processes go too.

On Linux each child also gets a parent-death signal, so a supervisor killed with SIGKILL does not leave a
Postgres or Redis running on its own and holding the data directory's lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1
STATE_FILE_NAME = "embedded-children.json"
# Starts the line the supervisor writes into a child's log before the child's own output.
HEADER_PREFIX = "=== "


class ChildExitedError(RuntimeError):
    """A supervised child stopped while it was meant to keep running (or a one-shot child failed)."""

    def __init__(self, child: ManagedProcess) -> None:
        self.child = child
        super().__init__(f"{child.name} exited unexpectedly with code {child.returncode}")


class ShutdownRequestedError(RuntimeError):
    """Ctrl-C or SIGTERM arrived while the supervisor was waiting for something."""


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except OSError:
        return None


# Loaded once in the parent: the forked child must only call it, never load a library.
_PRCTL = _load_prctl()


def _die_with_parent(death_signal: int):
    """A preexec function that asks the kernel to send ``death_signal`` when the supervisor dies."""
    if _PRCTL is None:
        return None

    def preexec() -> None:
        _PRCTL(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)

    return preexec


@dataclass
class ManagedProcess:
    """One child: its name (used in messages), the Popen handle, and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: int = signal.SIGTERM
    one_shot: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, max_lines: int = 40) -> str:
        """The last lines the child wrote, for error messages."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-max_lines:])


@dataclass
class ProcessGroup:
    """The set of children the supervisor owns, in start order."""

    log_dir: Path
    stop_grace_seconds: float = 10.0
    state_file: Path | None = None
    stop_requested: threading.Event = field(default_factory=threading.Event)
    children: list[ManagedProcess] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        one_shot: bool = False,
    ) -> ManagedProcess:
        """Start ``argv`` as a child in its own process group; stdout and stderr go to ``<log_dir>/<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        # As another user, also take that user's group and drop root's supplementary groups.
        group_id = pwd.getpwnam(user).pw_gid if user is not None else None
        extra_groups: list[int] | None = [] if user is not None else None
        with log_path.open("ab") as log_file:
            # One line whatever the argv holds (a `python -c` script has newlines), so output starts after it.
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            header = f"\n{HEADER_PREFIX}{started} starting {name}: {json.dumps(list(argv))}\n"
            log_file.write(header.encode())
            log_file.flush()
            popen = subprocess.Popen(  # noqa: S603 - argv is built by the supervisor, never from user text
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                user=user,
                group=group_id,
                extra_groups=extra_groups,
                start_new_session=True,
                preexec_fn=_die_with_parent(stop_signal),  # noqa: PLW1509 - only calls prctl, loaded beforehand
            )
        child = ManagedProcess(name, popen, log_path, stop_signal, one_shot)
        self.children.append(child)
        self._write_state()
        return child

    def run_once(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        timeout_seconds: float,
    ) -> ManagedProcess:
        """Run a one-shot child (e.g. migrations) to completion; raise if it fails or takes too long."""
        child = self.start(name, argv, env=env, cwd=cwd, user=user, one_shot=True)
        deadline = time.monotonic() + timeout_seconds
        while child.is_running():
            self.raise_if_stopping_or_dead()
            if time.monotonic() > deadline:
                self._stop_child(child)
                raise TimeoutError(
                    f"{name} did not finish within {timeout_seconds:.0f}s; its log ({child.log_path}) ends with:\n"
                    f"{child.log_tail()}"
                )
            self.stop_requested.wait(0.1)
        if child.returncode != 0:
            raise ChildExitedError(child)
        return child

    def first_exited(self) -> ManagedProcess | None:
        """A long-running child that has exited, if any (one-shot children are expected to exit)."""
        for child in self.children:
            if child.one_shot:
                continue
            if not child.is_running():
                return child
        return None

    def raise_if_stopping_or_dead(self) -> None:
        """Checked in every wait loop so that Ctrl-C or a crash interrupts start-up at once."""
        if self.stop_requested.is_set():
            raise ShutdownRequestedError("stop requested")
        exited = self.first_exited()
        if exited is not None:
            raise ChildExitedError(exited)

    def supervise(self, poll_seconds: float = 0.2) -> ManagedProcess | None:
        """Block until a stop is requested (returns None) or a child dies (returns that child)."""
        while not self.stop_requested.is_set():
            exited = self.first_exited()
            if exited is not None:
                return exited
            self.stop_requested.wait(poll_seconds)
        return None

    def request_stop(self, signum: int | None = None, frame: object | None = None) -> None:
        """Signal handler: only sets a flag, the main loop does the stopping."""
        del signum, frame  # the handler's signature is fixed by the signal module
        self.stop_requested.set()

    def stop_all(self) -> None:
        """Stop every child, newest first: services go down before the data stores they write to."""
        for child in reversed(self.children):
            self._stop_child(child)

    def _stop_child(self, child: ManagedProcess) -> None:
        if child.is_running():
            _signal_group(child.pid, child.stop_signal)
            try:
                child.popen.wait(timeout=self.stop_grace_seconds)
            except subprocess.TimeoutExpired:
                _signal_group(child.pid, signal.SIGKILL)
                child.popen.wait()
        # The leader is gone; anything it left behind in its group (pool processes) goes too.
        _signal_group(child.pid, signal.SIGKILL)

    def _write_state(self) -> None:
        """Record the children's pids so that a test (or an operator) can check nothing outlives the run."""
        if self.state_file is None:
            return
        state = [{"name": child.name, "pid": child.pid, "pgid": child.pid} for child in self.children]
        self.state_file.write_text(json.dumps(state, indent=2))


def _signal_group(pgid: int, signum: int) -> None:
    # Already gone (ESRCH); EPERM only happens if the group died and the id was reused by a process we do
    # not own, which we must not touch either.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
