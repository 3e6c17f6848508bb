"""The supervisor's process group, with dummy children: start, notice a death, stop everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from embedded.processes import HEADER_PREFIX, ChildExitedError, ProcessGroup, ShutdownRequestedError
from embedded.readiness import NotReadyError, StartupTimeoutError, wait_until_ready

SLEEPER = [sys.executable, "-c", "import time\nwhile True: time.sleep(0.1)"]
# Ignores SIGTERM, so only the grace-period SIGKILL can stop it.
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ignoring', flush=True)\n"
    "while True: time.sleep(0.1)",
]
# Starts a grandchild in its own (inherited) process group, then sleeps: stopping must take both.
WITH_GRANDCHILD = [
    sys.executable,
    "-c",
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time\\nwhile True: time.sleep(0.1)'])\n"
    "print('grandchild', child.pid, flush=True)\n"
    "while True: time.sleep(0.1)",
]


def _output(child) -> str:
    """What the child itself wrote: its log without the supervisor's header lines."""
    lines = child.log_path.read_text().splitlines()
    return "\n".join(line for line in lines if not line.startswith(HEADER_PREFIX))


def _group_exists(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in group ``pgid``. Zombies are skipped: reaping orphans is
    the init process's job, and a container's init may be slow at it."""
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state != "Z":
            return True
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not reaped by its new parent yet) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def group(tmp_path: Path):
    process_group = ProcessGroup(tmp_path / "logs", stop_grace_seconds=2.0, state_file=tmp_path / "children.json")
    try:
        yield process_group
    finally:
        process_group.stop_all()


def test_each_child_gets_its_own_process_group_and_a_log_file(group: ProcessGroup):
    first = group.start("first", SLEEPER)
    second = group.start("second", [sys.executable, "-c", "print('hello from second', flush=True)\nimport time\n"
                                    "while True: time.sleep(0.1)"])

    assert os.getpgid(first.pid) == first.pid
    assert os.getpgid(second.pid) == second.pid
    assert os.getpgid(first.pid) != os.getpgid(os.getpid())
    assert _wait_for(lambda: "hello from second" in _output(second))
    assert second.log_path.name == "second.log"


def test_a_killed_child_is_reported_and_stop_all_stops_the_others(group: ProcessGroup):
    children = [group.start(name, SLEEPER) for name in ("postgres", "redis", "api")]
    os.kill(children[1].pid, signal.SIGKILL)

    crashed = group.supervise(poll_seconds=0.05)

    assert crashed is children[1]
    assert crashed.returncode == -signal.SIGKILL
    assert children[0].is_running()
    assert children[2].is_running()
    group.stop_all()
    assert all(not child.is_running() for child in children)
    assert _wait_for(lambda: not any(_group_exists(child.pid) for child in children))


def test_supervise_returns_none_when_a_stop_is_requested(group: ProcessGroup):
    child = group.start("api", SLEEPER)
    group.request_stop(signal.SIGINT, None)

    assert group.supervise(poll_seconds=0.05) is None
    assert child.is_running()  # stopping is the caller's next step, not supervise's


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path: Path):
    group = ProcessGroup(tmp_path / "logs", stop_grace_seconds=0.5)
    child = group.start("stubborn", STUBBORN)
    assert _wait_for(lambda: "ignoring" in _output(child))

    group.stop_all()

    assert child.returncode == -signal.SIGKILL


def test_stopping_a_child_also_stops_what_it_started(group: ProcessGroup):
    child = group.start("gunicorn-like", WITH_GRANDCHILD)
    assert _wait_for(lambda: "grandchild" in _output(child))
    grandchild_pid = int(_output(child).split("grandchild", 1)[1].split()[0])
    assert _pid_alive(grandchild_pid)

    group.stop_all()

    assert _wait_for(lambda: not _pid_alive(grandchild_pid))
    assert _wait_for(lambda: not _group_exists(child.pid))


def test_children_are_stopped_newest_first_with_their_own_stop_signal(tmp_path: Path):
    record = tmp_path / "order.txt"
    script = textwrap.dedent(
        f"""
        import signal, sys, time
        name = sys.argv[1]
        def stop(signum, frame):
            with open({str(record)!r}, "a") as out:
                out.write(f"{{name}}:{{signal.Signals(signum).name}}\\n")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
        """
    )
    group = ProcessGroup(tmp_path / "logs", stop_grace_seconds=5)
    database = group.start("database", [sys.executable, "-c", script, "database"], stop_signal=signal.SIGINT)
    api = group.start("api", [sys.executable, "-c", script, "api"])
    assert _wait_for(lambda: "ready" in _output(database) and "ready" in _output(api))

    group.stop_all()

    assert record.read_text().splitlines() == ["api:SIGTERM", "database:SIGINT"]
    assert database.returncode == 0
    assert api.returncode == 0


def test_run_once_returns_on_success_and_raises_with_the_child_on_failure(group: ProcessGroup):
    done = group.run_once("migrate", [sys.executable, "-c", "print('migrated')"], timeout_seconds=30)
    assert done.returncode == 0
    assert group.first_exited() is None  # a finished one-shot child is not a crash

    with pytest.raises(ChildExitedError) as raised:
        group.run_once("migrate-bad", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
                       timeout_seconds=30)
    assert raised.value.child.name == "migrate-bad"
    assert raised.value.child.returncode == 3
    assert "boom" in raised.value.child.log_tail()


def test_run_once_times_out_and_stops_the_child(group: ProcessGroup):
    with pytest.raises(TimeoutError, match="slow did not finish"):
        group.run_once("slow", SLEEPER, timeout_seconds=0.5)
    assert not group.children[-1].is_running()


def test_the_state_file_lists_every_child(group: ProcessGroup):
    first = group.start("first", SLEEPER)
    second = group.start("second", SLEEPER)

    state = group.state_file.read_text()

    assert f'"pid": {first.pid}' in state
    assert f'"pid": {second.pid}' in state


def test_waiting_for_readiness_times_out_with_the_reason_and_the_log(group: ProcessGroup):
    child = group.start("db", [sys.executable, "-c", "print('FATAL: bad config', flush=True)\nimport time\n"
                               "while True: time.sleep(0.1)"])
    assert _wait_for(lambda: "FATAL" in _output(child))

    def never_ready() -> None:
        raise NotReadyError("connection refused")

    with pytest.raises(StartupTimeoutError) as raised:
        wait_until_ready(group, "Postgres", never_ready, timeout_seconds=0.5, child=child, interval_seconds=0.05)
    message = str(raised.value)
    assert "Postgres was not ready after" in message
    assert "connection refused" in message
    assert "FATAL: bad config" in message


def test_waiting_stops_at_once_when_a_child_dies_or_a_stop_is_requested(group: ProcessGroup):
    group.start("worker", [sys.executable, "-c", "import sys; sys.exit(4)"])

    def never_ready() -> None:
        raise NotReadyError("not yet")

    with pytest.raises(ChildExitedError, match="worker exited unexpectedly with code 4"):
        wait_until_ready(group, "the API", never_ready, timeout_seconds=60, interval_seconds=0.05)

    stopping = ProcessGroup(group.log_dir)
    stopping.request_stop()
    with pytest.raises(ShutdownRequestedError):
        wait_until_ready(stopping, "the API", never_ready, timeout_seconds=60, interval_seconds=0.05)


def test_a_supervisor_killed_outright_takes_its_children_with_it(tmp_path: Path):
    """The parent-death signal: nothing may keep running (and holding the data directory) after SIGKILL.

    The embedded run relies on Linux's PR_SET_PDEATHSIG, so this is checked on Linux, where CI runs."""
    state = tmp_path / "children.json"
    supervisor_script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from embedded.processes import ProcessGroup
        group = ProcessGroup(Path({str(tmp_path / "logs")!r}), state_file=Path({str(state)!r}))
        for name in ("a", "b"):
            group.start(name, {SLEEPER!r})
        print("started", flush=True)
        while True:
            time.sleep(0.1)
        """
    )
    repo_root = Path(__file__).resolve().parents[2]
    supervisor = subprocess.Popen(
        [sys.executable, "-c", supervisor_script], cwd=repo_root, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )
    try:
        assert supervisor.stdout.readline().strip() == "started"
        import json

        pids = [entry["pid"] for entry in json.loads(state.read_text())]
        assert all(_pid_alive(pid) for pid in pids)
        supervisor.kill()
        supervisor.wait(timeout=10)
        assert _wait_for(lambda: not any(_pid_alive(pid) for pid in pids))
    finally:
        supervisor.kill()
        supervisor.wait(timeout=10)
        supervisor.stdout.close()
