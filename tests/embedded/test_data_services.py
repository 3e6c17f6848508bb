"""The embedded Postgres and Redis: real servers from the wheels' binaries, data kept across restarts."""

from __future__ import annotations

from pathlib import Path

import psycopg
import redis
from sqlalchemy.engine import make_url

from embedded.config import EmbeddedConfig
from embedded.data_services import start_postgres, start_redis
from embedded.processes import ProcessGroup


def _start_both(config: EmbeddedConfig) -> tuple[ProcessGroup, str, str]:
    group = ProcessGroup(config.log_dir, stop_grace_seconds=15)
    try:
        database_url = start_postgres(group, config)
        redis_url = start_redis(group, config)
    except BaseException:
        group.stop_all()
        raise
    return group, database_url, redis_url


def _conninfo(database_url: str) -> str:
    url = make_url(database_url)
    return f"host={url.host} port={url.port} user={url.username} dbname={url.database}"


def test_postgres_and_redis_keep_their_data_across_a_restart(data_root: Path):
    config = EmbeddedConfig.from_env({"EMBEDDED_DATA_DIR": str(data_root / "run")})

    group, database_url, redis_url = _start_both(config)
    try:
        assert make_url(database_url).database == "orchestration"
        with psycopg.connect(_conninfo(database_url), autocommit=True) as connection:
            connection.execute("CREATE TABLE kept (value text)")
            connection.execute("INSERT INTO kept VALUES ('survives')")
        client = redis.Redis.from_url(redis_url)
        client.rpush("queued-job", "job-1")
        client.close()
    finally:
        group.stop_all()
    assert [child.returncode for child in group.children] == [0, 0, 0]  # initdb, postgres, redis: clean exits

    group, database_url, redis_url = _start_both(config)
    try:
        assert [child.name for child in group.children] == ["postgres", "redis"]  # no second initdb
        with psycopg.connect(_conninfo(database_url)) as connection:
            assert connection.execute("SELECT value FROM kept").fetchall() == [("survives",)]
        client = redis.Redis.from_url(redis_url)
        assert client.lrange("queued-job", 0, -1) == [b"job-1"]
        client.close()
    finally:
        group.stop_all()
    assert (config.log_dir / "postgres.log").exists()
    assert (config.log_dir / "redis.log").exists()


def test_kubesim_starts_writes_its_kubeconfig_and_gets_the_deployment_namespace(tmp_path: Path):
    import json
    import os
    import urllib.request

    import yaml

    from embedded.data_services import ensure_namespace, start_kubesim

    config = EmbeddedConfig.from_env(
        {"EMBEDDED_DATA_DIR": str(tmp_path / "run"), "KUBESIM_NODES": "1xnvidia-l40s:8"}
    )
    repo = Path(__file__).resolve().parents[2]
    group = ProcessGroup(config.log_dir, stop_grace_seconds=15)
    try:
        cluster = start_kubesim(
            group, config, env={**os.environ, "PYTHONPATH": str(repo), "PYTHONUNBUFFERED": "1"}, cwd=repo
        )
        assert cluster.kubeconfig == config.kubeconfig_path
        kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
        assert kubeconfig["clusters"][0]["cluster"]["server"] == cluster.url

        ensure_namespace(cluster, "model-serving")
        ensure_namespace(cluster, "model-serving")  # already there: not an error

        with urllib.request.urlopen(f"{cluster.url}/api/v1/namespaces/model-serving", timeout=10) as response:
            assert json.loads(response.read())["metadata"]["name"] == "model-serving"
        with urllib.request.urlopen(f"{cluster.url}/api/v1/nodes", timeout=10) as response:
            nodes = json.loads(response.read())["items"]
        assert [node["metadata"]["name"] for node in nodes] == ["l40s-0"]
    finally:
        group.stop_all()
    assert group.children[0].returncode == 0
