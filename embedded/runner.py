"""The start-up sequence of the embedded run, and the exit-code contract.

Order: data services (Postgres, Redis, kubesim), migrations, then API, worker, beat and Flower — each started
only once the one before it is ready. Then the supervisor waits. Exit codes:
- 0 after Ctrl-C or SIGTERM (every child stopped);
- 1 when a child dies unexpectedly or start-up fails (the message names the child and shows its log);
- 2 for a configuration error (nothing was started).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from embedded.app_services import (
    DEMO_TENANT,
    mint_token,
    point_metrics_at_cluster,
    run_migrations,
    service_environment,
    start_api,
    start_beat,
    start_flower,
    start_worker,
    wait_for_cluster_inventory,
)
from embedded.banner import BannerInfo, render_banner
from embedded.config import EmbeddedConfig
from embedded.data_services import ensure_namespace, start_kubesim, start_postgres, start_redis
from embedded.jwt_secret import load_or_create_secret
from embedded.ports import resolve_port
from embedded.processes import STATE_FILE_NAME, ChildExitedError, ProcessGroup, ShutdownRequestedError
from embedded.readiness import StartupTimeoutError
from settings import Settings

EXIT_OK = 0
EXIT_CHILD_FAILED = 1
EXIT_BAD_CONFIGURATION = 2


def say(message: str) -> None:
    """Supervisor messages go to stderr, prefixed, so they stand apart from the banner on stdout."""
    sys.stderr.write(f"embedded: {message}\n")
    sys.stderr.flush()


def start_everything(config: EmbeddedConfig, service_settings: Settings, group: ProcessGroup) -> BannerInfo:
    """Start every piece in order and return what the banner shows."""
    # Fixed ports are checked before anything starts, so a busy port costs no Postgres start-up.
    api_port = resolve_port(config.bind_host, config.api_port, "PORT")
    flower_port = resolve_port(config.bind_host, config.flower_port, "FLOWER_PORT")
    jwt_secret = service_settings.jwt_secret or load_or_create_secret(config.secret_path)

    database_url = config.database_url
    if database_url is None:
        say("starting Postgres …")
        database_url = start_postgres(group, config)
    redis_url = config.redis_url
    if redis_url is None:
        say("starting Redis …")
        redis_url = start_redis(group, config)
    kubeconfig = config.kubeconfig_path if config.uses_embedded_cluster else None
    env = service_environment(
        os.environ, database_url=database_url, redis_url=redis_url, kubeconfig=kubeconfig,
        jwt_secret=jwt_secret, api_port=api_port,
    )
    cluster = None
    if config.uses_embedded_cluster:
        say(f"starting kubesim ({config.kubesim_nodes}) …")
        cluster = start_kubesim(group, config, env=env, cwd=config.data_dir)
        point_metrics_at_cluster(env, cluster.url)
        ensure_namespace(cluster, service_settings.k8s_namespace)

    say("running migrations …")
    run_migrations(group, config, env)
    say("starting the API, a Celery worker, beat and Flower …")
    api_url = start_api(group, config, env, api_port)
    worker = start_worker(group, config, env)
    start_beat(group, config, env)
    flower_url = start_flower(group, config, env, flower_port)
    internal_token = mint_token(env, tenant=DEMO_TENANT, scope="internal", subject="embedded-demo")
    admin_token = mint_token(env, tenant=DEMO_TENANT, scope="admin", subject="embedded-admin")
    if cluster is not None:
        free_gpus = wait_for_cluster_inventory(group, config, api_url, internal_token, worker)
        say(f"the worker has recorded the cluster: {free_gpus} GPUs free")
    return BannerInfo(
        data_dir=config.data_dir,
        api_url=api_url,
        flower_url=flower_url,
        internal_token=internal_token,
        admin_token=admin_token,
        tenant=DEMO_TENANT,
        database_url=database_url,
        database_embedded=config.database_url is None,
        redis_url=redis_url,
        redis_embedded=config.redis_url is None,
        kubesim_url=cluster.url if cluster else None,
        kubesim_nodes=config.kubesim_nodes if cluster else None,
        kubesim_speed=config.kubesim_speed if cluster else None,
        kubeconfig=cluster.kubeconfig if cluster else (_path_or_none(config.kubeconfig)),
        k8s_context=config.k8s_context,
        log_dir=config.log_dir,
    )


def _path_or_none(value: str | None) -> Path | None:
    # KUBECONFIG may list several files (a:b); kubectl takes the first as --kubeconfig just as well.
    return Path(value.split(os.pathsep)[0]) if value else None


def main() -> int:
    """Run until Ctrl-C/SIGTERM (exit 0) or until a child dies (exit 1)."""
    try:
        config = EmbeddedConfig.from_env()
        # PORT is resolved by the embedded run (0 picks a free port, which the service settings would refuse);
        # the services get the resolved port. Every other variable is checked here, before anything starts.
        service_settings = Settings.from_env({key: value for key, value in os.environ.items() if key != "PORT"})
    except ValueError as error:
        say(f"configuration error: {error}")
        return EXIT_BAD_CONFIGURATION
    config.data_dir.mkdir(parents=True, exist_ok=True)
    group = ProcessGroup(
        config.log_dir, stop_grace_seconds=config.stop_grace_seconds, state_file=config.data_dir / STATE_FILE_NAME
    )
    signal.signal(signal.SIGINT, group.request_stop)
    signal.signal(signal.SIGTERM, group.request_stop)
    exit_code = EXIT_OK
    try:
        banner = start_everything(config, service_settings, group)
        sys.stdout.write(render_banner(banner) + "\n")
        sys.stdout.flush()
        crashed = group.supervise()
        if crashed is not None:
            raise ChildExitedError(crashed)
        say("stop requested, stopping every process …")
    except ShutdownRequestedError:
        say("stop requested during start-up, stopping every process …")
    except ChildExitedError as error:
        child = error.child
        say(f"{child.name} exited unexpectedly with code {child.returncode}; stopping the rest.")
        say(f"last lines of {child.log_path}:\n{child.log_tail()}")
        exit_code = EXIT_CHILD_FAILED
    except (StartupTimeoutError, TimeoutError, RuntimeError, OSError) as error:
        if group.stop_requested.is_set():
            # Ctrl-C interrupted a step that cannot be cancelled cleanly (e.g. minting a token): still a stop.
            say("stop requested during start-up, stopping every process …")
        else:
            say(f"start-up failed: {error}")
            exit_code = EXIT_CHILD_FAILED
    finally:
        group.stop_all()
    say("all processes stopped.")
    return exit_code
