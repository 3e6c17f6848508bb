"""Procfile, docker-compose.yml and Dockerfile cannot run here (no Docker engine): check them by reading."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_SERVICES = {"postgres", "redis", "kubesim", "migrate", "web", "worker", "beat", "flower"}
APP_SERVICES = {"kubesim", "migrate", "web", "worker", "beat", "flower"}


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _procfile() -> dict[str, str]:
    entries = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def test_compose_parses_and_has_every_service_with_a_healthcheck_or_a_one_shot_role():
    services = _compose()["services"]

    assert set(services) == COMPOSE_SERVICES
    for name, service in services.items():
        if name == "migrate":
            assert service["restart"] == "no"
            continue
        assert "test" in service["healthcheck"], name


def test_compose_services_read_env_example_and_point_at_the_compose_servers():
    services = _compose()["services"]
    settings_names = {
        line.split("=", 1)[0] for line in (REPO / ".env.example").read_text().splitlines() if "=" in line
        and not line.startswith("#")
    }

    for name in APP_SERVICES:
        service = services[name]
        assert service["env_file"] == [".env.example"], name
        assert service["build"] == "."
        environment = service["environment"]
        assert environment["DATABASE_URL"].endswith("@postgres:5432/orchestration")
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert set(environment) <= settings_names | {"JWT_SECRET"}, name


def test_compose_start_order_waits_for_health_and_migrations():
    services = _compose()["services"]

    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("web", "worker", "beat"):
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
        assert depends_on["redis"]["condition"] == "service_healthy", name


def test_compose_interpolation_is_valid():
    """Compose treats every `$` as interpolation: only `${NAME...}` and the `$$` escape are valid."""
    text = (REPO / "docker-compose.yml").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))

    assert re.findall(r"\$(?!\{)", body.replace("$$", "")) == []


def test_the_compose_kubeconfig_reaches_the_kubesim_service():
    services = _compose()["services"]
    kubeconfig_path = services["web"]["environment"]["KUBECONFIG"]
    assert kubeconfig_path.startswith("/app/")
    kubeconfig = yaml.safe_load((REPO / kubeconfig_path.removeprefix("/app/")).read_text())
    kubesim_command = services["kubesim"]["command"]
    port = kubesim_command[kubesim_command.index("--port") + 1]

    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"http://kubesim:{port}"
    assert kubeconfig["current-context"] == "kubesim"
    assert kubesim_command[kubesim_command.index("--host") + 1] == "0.0.0.0"


def test_procfile_runs_the_same_targets_as_compose_and_the_embedded_run():
    from embedded.app_services import CELERY_APP, JOB_QUEUES, WSGI_APP

    entries = _procfile()
    services = _compose()["services"]

    assert set(entries) == {"web", "worker", "beat", "flower", "kubesim"}
    assert entries["web"].startswith(f"gunicorn {WSGI_APP} ")
    assert services["web"]["command"][:2] == ["gunicorn", WSGI_APP]
    for name in ("worker", "beat", "flower"):
        assert entries[name].startswith(f"celery -A {CELERY_APP} {name}"), name
        assert services[name]["command"][:4] == ["celery", "-A", CELERY_APP, name], name
    assert f"--queues {JOB_QUEUES}" in entries["worker"]
    assert JOB_QUEUES in services["worker"]["command"]
    assert entries["kubesim"].startswith("python -m kubesim ")


def test_dockerfile_uses_python_311_slim_and_the_pinned_requirements():
    dockerfile = (REPO / "Dockerfile").read_text()
    dockerignore = (REPO / ".dockerignore").read_text().split()

    assert "FROM python:3.11-slim" in dockerfile.splitlines()
    assert "RUN pip install -r requirements.txt" in dockerfile
    assert "USER app" in dockerfile
    # The embedded run's data (Postgres files, the JWT secret) must never be baked into an image.
    assert {".run", ".venv", ".env"} <= set(dockerignore)
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert "==" in line, f"unpinned requirement: {line}"


def test_compose_services_read_gpu_metrics_from_kubesim():
    """Regression: without PROMETHEUS_URL the autoscaler and the GPU-utilization view had no metrics."""
    services = _compose()["services"]
    kubesim_port = services["kubesim"]["command"][services["kubesim"]["command"].index("--port") + 1]

    for name in ("web", "worker", "beat"):
        assert services[name]["environment"]["PROMETHEUS_URL"] == f"http://kubesim:{kubesim_port}/prometheus"
