"""Lazy, per-process Kubernetes client factory.

Nothing is loaded at import time: Celery forks its pool after importing the app, and a client built
in the parent would share its connection pool with every child. ``reset_client()`` is called from
``worker_process_init`` so each child builds its own.

Configuration: ``KUBECONFIG`` (optionally ``K8S_CONTEXT``) is loaded into a fresh ``Configuration``
(never the client's global default, which other code in the process could change); without it the
in-cluster service-account config is used. Every call carries ``K8S_REQUEST_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from kubernetes import client, config

# The API classes are imported HERE, not on first use: ``kubernetes.client`` loads them lazily, and that import
# (thousands of generated model classes) takes seconds. Done at import time it happens once in the Celery
# parent and every forked child shares it; done lazily, each child paid it inside its first job (half of the
# worker's time in the pipeline benchmark's profile). Importing builds no client and opens no connection.
from kubernetes.client import AppsV1Api, CoreV1Api, PolicyV1Api, VersionApi

from settings import get_settings


@dataclass
class KubeClients:
    """The typed API groups the workers use, sharing one ApiClient (one connection pool)."""

    api_client: client.ApiClient
    request_timeout: float
    namespace: str
    # Namespaces known to exist on this cluster (see workers.deployments.ensure_namespace); per client, so a
    # new kubeconfig (reset_client) starts with no assumptions.
    namespaces_ready: set[str] = field(default_factory=set)

    @cached_property
    def core(self) -> CoreV1Api:
        return CoreV1Api(self.api_client)

    @cached_property
    def apps(self) -> AppsV1Api:
        return AppsV1Api(self.api_client)

    @cached_property
    def policy(self) -> PolicyV1Api:
        return PolicyV1Api(self.api_client)

    @cached_property
    def version(self) -> VersionApi:
        return VersionApi(self.api_client)

    @property
    def timeout(self) -> dict[str, Any]:
        """Keyword arguments for every call: the per-request timeout (connect and read)."""
        return {"_request_timeout": self.request_timeout}


_lock = threading.Lock()
_clients: KubeClients | None = None


def build_configuration() -> client.Configuration:
    """A fresh Configuration from the kubeconfig named by settings, else from the in-cluster service account."""
    settings = get_settings()
    configuration = client.Configuration()
    if settings.kubeconfig:
        config.load_kube_config(
            config_file=settings.kubeconfig, context=settings.k8s_context, client_configuration=configuration
        )
    else:
        config.load_incluster_config(client_configuration=configuration)
    # Retries belong to the task's retry contract (backoff, jitter, cap, job state RETRYING); urllib3
    # retrying underneath would multiply attempts and hide them from the job record.
    configuration.retries = False
    refresh_token = configuration.refresh_api_key_hook
    if refresh_token is not None:
        configuration.refresh_api_key_hook = _at_most_every(TOKEN_REFRESH_CHECK_SECONDS, refresh_token)
    return configuration


# The kubeconfig loader installs a hook that runs before EVERY request to renew an expiring token. It also
# re-applies the whole cluster config, and setting the host re-reads the process environment for proxies:
# about a millisecond of CPU per call, the largest single cost of a job's Kubernetes writes. The loader
# renews a token 5 minutes before it expires, so checking twice a minute loses nothing.
TOKEN_REFRESH_CHECK_SECONDS = 30.0


def _at_most_every(seconds: float, hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """``hook`` throttled: it runs on the first call, then again only once ``seconds`` have passed.

    The loader's hook re-installs a fresh hook of its own each time it runs; that one becomes the hook to
    throttle, and the throttled wrapper is put back in its place. Threads sharing the client (the status
    poller's) refresh one at a time: the hook rewrites the shared configuration."""
    next_run = 0.0
    current = hook
    lock = threading.Lock()

    def throttled(configuration: Any) -> None:
        nonlocal next_run, current
        with lock:
            now = time.monotonic()
            if now < next_run:
                return
            current(configuration)
            next_run = now + seconds
            installed = configuration.refresh_api_key_hook
            if installed is not throttled and installed is not None:
                current = installed
            configuration.refresh_api_key_hook = throttled

    return throttled


def get_clients() -> KubeClients:
    """The process's clients, built on first use."""
    global _clients  # noqa: PLW0603 - one cached client per process is the point of this module
    if _clients is None:
        with _lock:
            if _clients is None:
                settings = get_settings()
                _clients = KubeClients(
                    api_client=client.ApiClient(build_configuration()),
                    request_timeout=float(settings.k8s_request_timeout_seconds),
                    namespace=settings.k8s_namespace,
                )
    return _clients


def reset_client() -> None:
    """Forget the cached client (after a fork, or when tests change KUBECONFIG); the next use rebuilds it."""
    global _clients  # noqa: PLW0603
    # Only the reference is dropped: in a forked child the pool's sockets belong to the parent, and
    # closing them (an SSL close_notify, for one) could break the parent's connections.
    with _lock:
        _clients = None


def ping() -> dict[str, Any]:
    """Readiness check: the API server's version (raises on failure, like any client call)."""
    clients = get_clients()
    info = clients.version.get_code(**clients.timeout)
    return {"git_version": info.git_version, "major": info.major, "minor": info.minor}
