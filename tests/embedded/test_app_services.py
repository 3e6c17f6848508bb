"""The environment the embedded run hands its services."""

from __future__ import annotations

from embedded.app_services import point_metrics_at_cluster


def test_the_services_read_gpu_metrics_from_kubesim():
    """Regression: PROMETHEUS_URL was never set, so `make run` had no GPU utilization and no autoscaling."""
    environment = {"PROMETHEUS_URL": ""}

    point_metrics_at_cluster(environment, "http://127.0.0.1:41733/")

    assert environment["PROMETHEUS_URL"] == "http://127.0.0.1:41733/prometheus"


def test_a_prometheus_url_the_user_set_is_kept():
    environment = {"PROMETHEUS_URL": "http://prometheus:9090"}

    point_metrics_at_cluster(environment, "http://127.0.0.1:41733")

    assert environment["PROMETHEUS_URL"] == "http://prometheus:9090"
