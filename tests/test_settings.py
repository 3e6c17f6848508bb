"""Settings: defaults, overrides, URL handling and errors that name the bad variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from settings import Settings, get_settings, normalize_database_url


def test_defaults_when_environment_is_empty():
    settings = Settings.from_env({})
    assert settings.port == 8000
    assert settings.db_schema == "orchestration"
    assert settings.k8s_namespace == "model-serving"
    assert settings.vllm_image == "vllm/vllm-openai:v0.11.0"
    assert settings.gpu_type == "nvidia-l40s"
    assert settings.gpu_memory_gb == 48
    assert settings.kubeconfig is None
    assert settings.jwt_secret is None
    assert settings.health_monitor_interval_seconds == 30
    assert settings.resource_tracker_interval_seconds == 60
    assert settings.default_tenant_gpu_quota == 64
    assert settings.database_url == "postgresql+psycopg://postgres@127.0.0.1:5432/orchestration"


def test_database_url_is_built_from_db_parts_with_escaped_password():
    settings = Settings.from_env(
        {"DB_HOST": "db.internal", "DB_PORT": "6543", "DB_NAME": "orch", "DB_USER": "svc", "DB_PASSWORD": "p@ss:w/rd"}
    )
    assert settings.database_url == "postgresql+psycopg://svc:p%40ss%3Aw%2Frd@db.internal:6543/orch"
    assert "p%40ss" not in settings.redacted_database_url()


@pytest.mark.parametrize(
    "given",
    ["postgresql://u:p@h:5432/d", "postgres://u:p@h:5432/d", "postgresql+psycopg2://u:p@h:5432/d"],
)
def test_database_url_override_is_rewritten_to_psycopg(given):
    settings = Settings.from_env({"DATABASE_URL": given, "DB_HOST": "ignored"})
    assert settings.database_url == "postgresql+psycopg://u:p@h:5432/d"


def test_database_url_with_foreign_scheme_is_refused():
    with pytest.raises(ValueError, match="DATABASE_URL"):
        normalize_database_url("mysql://u@h/d")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("DB_PORT", "0"),
        ("GPU_MEMORY_GB", "1.5"),
        ("HEALTH_MONITOR_INTERVAL_SECONDS", "0"),
        ("DEFAULT_TENANT_GPU_QUOTA", "-1"),
        ("MAX_REQUEST_BYTES", "lots"),
    ],
)
def test_bad_integer_names_the_variable(name, value):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


def test_bad_schema_and_log_level_are_refused():
    with pytest.raises(ValueError, match="DB_SCHEMA"):
        Settings.from_env({"DB_SCHEMA": "drop table; --"})
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        Settings.from_env({"LOG_LEVEL": "LOUD"})


def test_values_are_parsed_and_optional_blank_means_unset():
    settings = Settings.from_env(
        {
            "PORT": " 9000 ",
            "KUBECONFIG": "",
            "K8S_CONTEXT": "kind-gpu",
            "LOG_LEVEL": "debug",
            "TENANT_CACHE_SECONDS": "5",
        }
    )
    assert settings.port == 9000
    assert settings.kubeconfig is None
    assert settings.k8s_context == "kind-gpu"
    assert settings.log_level == "DEBUG"
    assert settings.tenant_cache_seconds == 5


def test_settings_are_frozen():
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_get_settings_is_cached_until_cleared(monkeypatch):
    get_settings.cache_clear()
    monkeypatch.setenv("PORT", "8123")
    first = get_settings()
    monkeypatch.setenv("PORT", "8124")
    assert get_settings() is first
    get_settings.cache_clear()
    assert get_settings().port == 8124
    monkeypatch.undo()
    get_settings.cache_clear()


def _env_example() -> dict[str, str]:
    example = Path(__file__).resolve().parent.parent / ".env.example"
    lines = example.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_env_example_lists_every_setting_with_its_default():
    documented = _env_example()
    expected = {
        "DATABASE_URL" if field.name == "database_url_override" else field.name.upper()
        for field in dataclasses.fields(Settings)
    }
    assert set(documented) == expected
    assert Settings.from_env(documented) == Settings.from_env({})
