"""Process settings, read once from environment variables.

Every tunable of the service lives here so that web, workers, tasks and the migration runner agree
on one set of values. Parsing is strict: a malformed value stops start-up with an error naming the
variable, instead of surfacing later as a confusing connection or scheduling failure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

from sqlalchemy.engine import make_url

_DRIVER_SCHEME = "postgresql+psycopg"
# Schemes that mean "Postgres" but name another (or no) driver; rewritten to psycopg 3, the only one installed.
_POSTGRES_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}
_LOG_LEVELS = {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}


def _text(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name)
    return default if value is None or value == "" else value


def _optional(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    return value if value else None


def _integer(environ: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    value = _integer(environ, name, default, minimum=1)
    if value > 65535:
        raise ValueError(f"{name} must be a TCP port (1-65535), got {value}")
    return value


def normalize_database_url(url: str, *, variable: str = "DATABASE_URL") -> str:
    """Return ``url`` with its scheme rewritten to ``postgresql+psycopg``.

    Hosting platforms hand out ``postgres://`` or ``postgresql://`` URLs; SQLAlchemy would pick psycopg2
    for those, which is not installed, so the scheme is pinned to the psycopg 3 driver here.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in _POSTGRES_SCHEMES:
        raise ValueError(f"{variable} must be a postgresql:// URL, got scheme {scheme!r}")
    return f"{_DRIVER_SCHEME}://{rest}"


@dataclass(frozen=True)
class Settings:
    """Immutable snapshot of the environment; build with :meth:`from_env`."""

    port: int = 8000
    database_url_override: str | None = None
    db_host: str = "127.0.0.1"
    db_port: int = 5432
    db_name: str = "orchestration"
    db_user: str = "postgres"
    db_password: str = ""
    db_schema: str = "orchestration"
    redis_url: str = "redis://127.0.0.1:6379/0"
    kubeconfig: str | None = None
    k8s_context: str | None = None
    k8s_namespace: str = "model-serving"
    k8s_request_timeout_seconds: int = 10
    vllm_image: str = "vllm/vllm-openai:v0.11.0"
    vllm_runtime_class: str = "nvidia"
    gpu_type: str = "nvidia-l40s"
    gpu_memory_gb: int = 48
    jwt_secret: str | None = None
    jwt_algorithm: str = "HS256"
    jwt_public_key: str | None = None
    jwks_url: str | None = None
    jwt_audience: str = "orchestration"
    jwt_issuer: str = "ai-platform"
    tenant_service_url: str | None = None
    tenant_cache_seconds: int = 60
    prometheus_url: str | None = None
    health_monitor_interval_seconds: int = 30
    resource_tracker_interval_seconds: int = 60
    autoscaler_interval_seconds: int = 30
    status_poll_interval_seconds: int = 2
    create_deadline_seconds: int = 1800
    max_request_bytes: int = 65536
    default_tenant_gpu_quota: int = 64
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Parse ``environ``; raise ``ValueError`` naming the first variable with a bad value."""
        database_url = _optional(environ, "DATABASE_URL")
        if database_url is not None:
            database_url = normalize_database_url(database_url)
        db_schema = _text(environ, "DB_SCHEMA", cls.db_schema)
        if not db_schema.isidentifier() or db_schema.lower() != db_schema:
            # The schema name is interpolated into DDL (CREATE SCHEMA, search_path); only plain
            # lowercase identifiers are accepted so it never needs quoting.
            raise ValueError(f"DB_SCHEMA must be a lowercase SQL identifier, got {db_schema!r}")
        log_level = _text(environ, "LOG_LEVEL", cls.log_level).upper()
        if log_level not in _LOG_LEVELS:
            raise ValueError(f"LOG_LEVEL must be one of {sorted(_LOG_LEVELS)}, got {log_level!r}")
        return cls(
            port=_port(environ, "PORT", cls.port),
            database_url_override=database_url,
            db_host=_text(environ, "DB_HOST", cls.db_host),
            db_port=_port(environ, "DB_PORT", cls.db_port),
            db_name=_text(environ, "DB_NAME", cls.db_name),
            db_user=_text(environ, "DB_USER", cls.db_user),
            db_password=environ.get("DB_PASSWORD", cls.db_password),
            db_schema=db_schema,
            redis_url=_text(environ, "REDIS_URL", cls.redis_url),
            kubeconfig=_optional(environ, "KUBECONFIG"),
            k8s_context=_optional(environ, "K8S_CONTEXT"),
            k8s_namespace=_text(environ, "K8S_NAMESPACE", cls.k8s_namespace),
            k8s_request_timeout_seconds=_integer(
                environ, "K8S_REQUEST_TIMEOUT_SECONDS", cls.k8s_request_timeout_seconds, minimum=1
            ),
            vllm_image=_text(environ, "VLLM_IMAGE", cls.vllm_image),
            vllm_runtime_class=_text(environ, "VLLM_RUNTIME_CLASS", cls.vllm_runtime_class),
            gpu_type=_text(environ, "GPU_TYPE", cls.gpu_type),
            gpu_memory_gb=_integer(environ, "GPU_MEMORY_GB", cls.gpu_memory_gb, minimum=1),
            jwt_secret=_optional(environ, "JWT_SECRET"),
            jwt_algorithm=_text(environ, "JWT_ALGORITHM", cls.jwt_algorithm),
            jwt_public_key=_optional(environ, "JWT_PUBLIC_KEY"),
            jwks_url=_optional(environ, "JWKS_URL"),
            jwt_audience=_text(environ, "JWT_AUDIENCE", cls.jwt_audience),
            jwt_issuer=_text(environ, "JWT_ISSUER", cls.jwt_issuer),
            tenant_service_url=_optional(environ, "TENANT_SERVICE_URL"),
            tenant_cache_seconds=_integer(environ, "TENANT_CACHE_SECONDS", cls.tenant_cache_seconds),
            prometheus_url=_optional(environ, "PROMETHEUS_URL"),
            health_monitor_interval_seconds=_integer(
                environ, "HEALTH_MONITOR_INTERVAL_SECONDS", cls.health_monitor_interval_seconds, minimum=1
            ),
            resource_tracker_interval_seconds=_integer(
                environ, "RESOURCE_TRACKER_INTERVAL_SECONDS", cls.resource_tracker_interval_seconds, minimum=1
            ),
            autoscaler_interval_seconds=_integer(
                environ, "AUTOSCALER_INTERVAL_SECONDS", cls.autoscaler_interval_seconds, minimum=1
            ),
            status_poll_interval_seconds=_integer(
                environ, "STATUS_POLL_INTERVAL_SECONDS", cls.status_poll_interval_seconds, minimum=1
            ),
            create_deadline_seconds=_integer(
                environ, "CREATE_DEADLINE_SECONDS", cls.create_deadline_seconds, minimum=1
            ),
            max_request_bytes=_integer(environ, "MAX_REQUEST_BYTES", cls.max_request_bytes, minimum=1),
            default_tenant_gpu_quota=_integer(environ, "DEFAULT_TENANT_GPU_QUOTA", cls.default_tenant_gpu_quota),
            log_level=log_level,
        )

    @property
    def database_url(self) -> str:
        """SQLAlchemy URL: ``DATABASE_URL`` if set, else built from the ``DB_*`` variables."""
        if self.database_url_override is not None:
            return self.database_url_override
        credentials = quote(self.db_user, safe="")
        if self.db_password:
            credentials += ":" + quote(self.db_password, safe="")
        return f"{_DRIVER_SCHEME}://{credentials}@{self.db_host}:{self.db_port}/{quote(self.db_name, safe='')}"

    def redacted_database_url(self) -> str:
        """The database URL with the password hidden, for logs and error messages."""
        return make_url(self.database_url).render_as_string(hide_password=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, parsed on first use; ``get_settings.cache_clear()`` re-reads them."""
    return Settings.from_env()
