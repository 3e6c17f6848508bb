"""Configuration resolution of the embedded run, the JWT secret file and the banner."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from embedded.banner import BannerInfo, render_banner
from embedded.config import DEMO_CLUSTER_NODES, DEMO_CLUSTER_SPEED, EmbeddedConfig
from embedded.jwt_secret import load_or_create_secret
from embedded.ports import free_port, resolve_port


def test_defaults_start_every_embedded_piece(tmp_path: Path):
    config = EmbeddedConfig.from_env({}, cwd=tmp_path)

    assert config.data_dir == (tmp_path / ".run").resolve()
    assert config.api_port == 8000
    assert config.flower_port == 5555
    assert config.database_url is None
    assert config.redis_url is None
    assert config.uses_embedded_cluster
    assert config.kubesim_nodes == DEMO_CLUSTER_NODES == "4xnvidia-l40s:8,2xnvidia-h100-80gb:8"
    assert config.kubesim_speed == DEMO_CLUSTER_SPEED == 20
    assert config.kubeconfig_path == config.data_dir / "kubeconfig"
    assert config.secret_path == config.data_dir / "secret"
    assert config.postgres_dir == config.data_dir / "postgres"
    assert config.redis_dir == config.data_dir / "redis"


def test_each_url_replaces_its_embedded_piece(tmp_path: Path):
    config = EmbeddedConfig.from_env(
        {
            "EMBEDDED_DATA_DIR": str(tmp_path / "data"),
            "PORT": "9000",
            "FLOWER_PORT": "0",
            "DATABASE_URL": "postgresql://u:p@db:5432/x",
            "REDIS_URL": "redis://cache:6379/1",
            "KUBECONFIG": "/etc/kube/config",
        },
        cwd=tmp_path,
    )

    assert config.data_dir == tmp_path / "data"
    assert config.api_port == 9000
    assert config.flower_port == 0
    assert config.database_url == "postgresql://u:p@db:5432/x"
    assert config.redis_url == "redis://cache:6379/1"
    assert not config.uses_embedded_cluster


def test_a_context_alone_also_means_an_external_cluster(tmp_path: Path):
    assert not EmbeddedConfig.from_env({"K8S_CONTEXT": "gpu-prod"}, cwd=tmp_path).uses_embedded_cluster


def test_empty_values_count_as_unset(tmp_path: Path):
    """A copied .env.example has `DATABASE_URL=`: that must not mean "an external database at ''"."""
    config = EmbeddedConfig.from_env({"DATABASE_URL": "", "KUBECONFIG": " ", "PORT": ""}, cwd=tmp_path)

    assert config.database_url is None
    assert config.uses_embedded_cluster
    assert config.api_port == 8000


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PORT", "eighty", "PORT must be a TCP port number"),
        ("FLOWER_PORT", "70000", "FLOWER_PORT must be a TCP port"),
        ("KUBESIM_SPEED", "0", "KUBESIM_SPEED must be >= 0.001"),
        ("EMBEDDED_START_TIMEOUT_SECONDS", "soon", "EMBEDDED_START_TIMEOUT_SECONDS must be a number"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, variable: str, value: str, message: str):
    with pytest.raises(ValueError, match=message):
        EmbeddedConfig.from_env({variable: value}, cwd=tmp_path)


def test_the_secret_is_generated_once_private_and_kept(tmp_path: Path):
    path = tmp_path / "run" / "secret"

    first = load_or_create_secret(path)
    second = load_or_create_secret(path)

    assert first == second
    assert len(first) >= 48
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_empty_secret_file_is_an_error_not_an_empty_key(tmp_path: Path):
    path = tmp_path / "secret"
    path.write_text("\n")

    with pytest.raises(RuntimeError, match="is empty"):
        load_or_create_secret(path)


def test_a_busy_fixed_port_is_reported_with_its_variable():
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {busy} .* set PORT to another port"):
            resolve_port("127.0.0.1", busy, "PORT")
    assert resolve_port("127.0.0.1", 0, "PORT") > 0
    assert free_port() > 0


def _banner_info(tmp_path: Path, **overrides) -> BannerInfo:
    values = {
        "data_dir": tmp_path / ".run",
        "api_url": "http://127.0.0.1:8000",
        "flower_url": "http://127.0.0.1:5555",
        "internal_token": "internal.jwt.value",
        "admin_token": "admin.jwt.value",
        "tenant": "demo",
        "database_url": "postgresql+psycopg://postgres@127.0.0.1:41000/orchestration",
        "database_embedded": True,
        "redis_url": "redis://127.0.0.1:41001/0",
        "redis_embedded": True,
        "kubesim_url": "http://127.0.0.1:41002",
        "kubesim_nodes": DEMO_CLUSTER_NODES,
        "kubesim_speed": 20.0,
        "kubeconfig": tmp_path / ".run" / "kubeconfig",
        "k8s_context": None,
        "log_dir": tmp_path / ".run" / "logs",
    }
    values.update(overrides)
    return BannerInfo(**values)


def test_the_banner_shows_urls_tokens_kubeconfig_and_a_curl_example(tmp_path: Path):
    text = render_banner(_banner_info(tmp_path))

    assert "API          http://127.0.0.1:8000" in text
    assert "Swagger UI   http://127.0.0.1:8000/docs" in text
    assert "Flower       http://127.0.0.1:5555" in text
    assert "kubesim      http://127.0.0.1:41002" in text
    assert "export TOKEN=internal.jwt.value" in text
    assert "export ADMIN_TOKEN=admin.jwt.value" in text
    assert f"kubectl --kubeconfig {tmp_path / '.run' / 'kubeconfig'} get nodes" in text
    assert "curl -s -X POST http://127.0.0.1:8000/internal/deployments/create" in text
    assert "kubesim-state.json" in text


def test_the_banner_hides_passwords_of_external_servers(tmp_path: Path):
    text = render_banner(
        _banner_info(
            tmp_path,
            database_url="postgresql://orch:s3cret@db.internal:5432/orchestration",
            database_embedded=False,
            redis_url="redis://:hunter2@cache:6379/0",
            redis_embedded=False,
            kubesim_url=None,
            kubesim_nodes=None,
            kubesim_speed=None,
            kubeconfig=None,
            k8s_context="gpu-prod",
        )
    )

    assert "s3cret" not in text
    assert "hunter2" not in text
    assert "postgresql://orch:***@db.internal:5432/orchestration   (external)" in text
    assert "external cluster (gpu-prod)" in text
    assert "kubesim-state.json" not in text
