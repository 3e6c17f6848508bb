"""Which pieces the embedded run starts, and where: resolved once from environment variables.

``DATABASE_URL``, ``REDIS_URL`` and ``KUBECONFIG`` / ``K8S_CONTEXT`` each replace one embedded piece: when
set, that piece is not started and the service connects to the given server or cluster instead. Everything
else has a default that works on a fresh clone. Only the process environment is read (not ``.env``), so a
copied ``.env.example`` with its sample ``REDIS_URL`` cannot silently switch the embedded Redis off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEMO_CLUSTER_NODES = "4xnvidia-l40s:8,2xnvidia-h100-80gb:8"
# Real clock × 20: a model load the simulator puts at a couple of minutes takes a few seconds.
DEMO_CLUSTER_SPEED = 20.0


def _optional(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _number(environ: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = _optional(environ, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {raw}")
    return value


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port; 0 means "pick a free one"."""
    raw = _optional(environ, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a TCP port number, got {raw!r}") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"{name} must be a TCP port (0-65535), got {value}")
    return value


@dataclass(frozen=True)
class EmbeddedConfig:
    """The embedded run's choices. ``None`` for a URL/kubeconfig means "start the embedded piece"."""

    data_dir: Path
    api_port: int = 8000
    flower_port: int = 5555
    postgres_port: int = 0
    redis_port: int = 0
    kubesim_port: int = 0
    bind_host: str = "127.0.0.1"
    database_url: str | None = None
    redis_url: str | None = None
    kubeconfig: str | None = None
    k8s_context: str | None = None
    kubesim_nodes: str = DEMO_CLUSTER_NODES
    kubesim_speed: float = DEMO_CLUSTER_SPEED
    kubesim_seed: int = 1
    api_workers: int = 2
    worker_concurrency: int = 4
    start_timeout_seconds: float = 90.0
    stop_grace_seconds: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, *, cwd: Path | None = None) -> EmbeddedConfig:
        """Parse ``environ``; raise ``ValueError`` naming the first variable with a bad value."""
        base = cwd or Path.cwd()
        data_dir = Path(_optional(environ, "EMBEDDED_DATA_DIR") or ".run")
        if not data_dir.is_absolute():
            data_dir = base / data_dir
        return cls(
            data_dir=data_dir.resolve(),
            api_port=_port(environ, "PORT", cls.api_port),
            flower_port=_port(environ, "FLOWER_PORT", cls.flower_port),
            postgres_port=_port(environ, "EMBEDDED_POSTGRES_PORT", cls.postgres_port),
            redis_port=_port(environ, "EMBEDDED_REDIS_PORT", cls.redis_port),
            kubesim_port=_port(environ, "KUBESIM_PORT", cls.kubesim_port),
            bind_host=_optional(environ, "EMBEDDED_BIND_HOST") or cls.bind_host,
            database_url=_optional(environ, "DATABASE_URL"),
            redis_url=_optional(environ, "REDIS_URL"),
            kubeconfig=_optional(environ, "KUBECONFIG"),
            k8s_context=_optional(environ, "K8S_CONTEXT"),
            kubesim_nodes=_optional(environ, "KUBESIM_NODES") or cls.kubesim_nodes,
            kubesim_speed=_number(environ, "KUBESIM_SPEED", cls.kubesim_speed, minimum=0.001),
            kubesim_seed=int(_number(environ, "KUBESIM_SEED", cls.kubesim_seed, minimum=0)),
            api_workers=int(_number(environ, "EMBEDDED_API_WORKERS", cls.api_workers, minimum=1)),
            worker_concurrency=int(_number(environ, "EMBEDDED_WORKER_CONCURRENCY", cls.worker_concurrency, minimum=1)),
            start_timeout_seconds=_number(
                environ, "EMBEDDED_START_TIMEOUT_SECONDS", cls.start_timeout_seconds, minimum=1
            ),
            stop_grace_seconds=_number(environ, "EMBEDDED_STOP_GRACE_SECONDS", cls.stop_grace_seconds, minimum=0),
        )

    @property
    def uses_embedded_cluster(self) -> bool:
        """kubesim runs unless a kubeconfig or a context names another cluster."""
        return self.kubeconfig is None and self.k8s_context is None

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def postgres_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def kubeconfig_path(self) -> Path:
        return self.data_dir / "kubeconfig"

    @property
    def secret_path(self) -> Path:
        return self.data_dir / "secret"

    @property
    def beat_schedule_path(self) -> Path:
        return self.data_dir / "celerybeat-schedule"
