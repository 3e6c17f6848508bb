"""The per-process Kubernetes client: the token-refresh hook runs at most every TOKEN_REFRESH_CHECK_SECONDS."""

from __future__ import annotations

from types import SimpleNamespace

from workers import k8s


def test_refresh_hook_runs_first_then_only_after_the_interval(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(k8s.time, "monotonic", lambda: clock[0])
    configuration = SimpleNamespace(refresh_api_key_hook=None)
    runs: list[float] = []

    def loader_hook(config):
        # Like the kubeconfig loader: renew, then install a fresh hook of its own.
        runs.append(clock[0])
        config.refresh_api_key_hook = loader_hook

    configuration.refresh_api_key_hook = k8s._at_most_every(30.0, loader_hook)
    for _ in range(5):
        configuration.refresh_api_key_hook(configuration)
    assert runs == [100.0]
    clock[0] += 29.0
    configuration.refresh_api_key_hook(configuration)
    assert runs == [100.0]
    clock[0] += 1.0
    configuration.refresh_api_key_hook(configuration)
    configuration.refresh_api_key_hook(configuration)
    assert runs == [100.0, 130.0]


def test_real_client_keeps_the_throttled_hook_across_requests(tmp_path, monkeypatch):
    """A token kubeconfig: after requests, the installed hook is still the throttled one."""
    from tests.workers.sweeps_support import sim_environment

    with sim_environment(tmp_path, monkeypatch, nodes="1xnvidia-l40s:8", seed=1):
        clients = k8s.get_clients()
        hook = clients.api_client.configuration.refresh_api_key_hook
        assert hook is not None
        assert hook.__name__ == "throttled"
        for _ in range(3):
            assert k8s.ping()["major"]
        assert clients.api_client.configuration.refresh_api_key_hook is hook
