"""Unit tests for the load model (kubesim/load.py) and metrics.k8s.io (kubesim/metrics.py) over a bare Store."""

from __future__ import annotations

import pytest

from kubesim import metrics
from kubesim.errors import ApiError
from kubesim.load import (
    DEFAULT_CAPACITY_PER_REPLICA,
    LoadContext,
    parse_quantity,
    pod_load,
    validate_load,
)
from kubesim.selectors import label_predicate
from tests.kubesim.test_metrics_support import add_deployment, add_node, add_pod, make_sim

# --------------------------------------------------------------------------- validate_load


def test_validate_load_fills_defaults():
    assert validate_load({"concurrency": 10}) == {"concurrency": 10.0,
                                                  "capacity_per_replica": DEFAULT_CAPACITY_PER_REPLICA}
    assert validate_load({})["concurrency"] == 0.0


@pytest.mark.parametrize(
    ("load", "message"),
    [
        ({"concurency": 3}, "unknown load keys ['concurency']"),
        ({"concurrency": -1}, "load.concurrency must be >= 0"),
        ({"concurrency": "5"}, "load.concurrency must be a finite number"),
        ({"concurrency": True}, "load.concurrency must be a finite number"),
        ({"concurrency": float("nan")}, "load.concurrency must be a finite number"),
        ({"capacity_per_replica": 0}, "load.capacity_per_replica must be > 0"),
        ({"gpu_utilization": 101}, "load.gpu_utilization must be between 0 and 100"),
        ({"kv_cache_usage": 1.5}, "load.kv_cache_usage must be between 0 and 1"),
        ({"gpu_memory_fraction": -0.1}, "load.gpu_memory_fraction must be between 0 and 1"),
        (["concurrency"], "load must be an object"),
    ],
)
def test_validate_load_rejects_bad_input(load, message):
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        validate_load(load)


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", 0.5), ("2", 2.0), ("16Gi", 16 * 2**30), ("1e3", 1000.0), ("100n", 1e-7), ("1.5k", 1500.0), (3, 3.0)],
)
def test_parse_quantity(text, value):
    assert parse_quantity(text) == pytest.approx(value)


def test_parse_quantity_rejects_garbage():
    with pytest.raises(ValueError, match="resource quantity"):
        parse_quantity("12 cores")


# --------------------------------------------------------------------------- pod_load


@pytest.fixture
def sim():
    sim = make_sim()
    add_node(sim, "h100-0")
    add_node(sim, "h100-1")
    return sim


def test_ready_pod_without_load_is_idle_with_model_loaded(sim):
    rs = add_deployment(sim, "llama")
    pod = add_pod(sim, "llama-1", owner=rs)
    usage = pod_load(sim, pod)
    assert usage.deployment == "llama"
    assert usage.ready
    assert usage.exports_vllm_metrics
    assert (usage.running, usage.waiting, usage.gpu_utilization, usage.kv_cache_usage) == (0, 0, 0, 0)
    assert usage.gpu_memory_fraction == pytest.approx(0.9)
    # idle CPU: ~5 % of the 8-core request, with at most 5 % noise on that figure
    assert 8e9 * 0.05 * 0.95 <= usage.cpu_nanocores <= 8e9 * 0.05 * 1.05


def test_load_is_shared_by_ready_replicas_only(sim):
    rs = add_deployment(sim, "llama")
    ready = [add_pod(sim, f"llama-{i}", owner=rs) for i in range(2)]
    loading = add_pod(sim, "llama-2", owner=rs, state="loading", started_ago=10)
    sim.loads[("default", "llama")] = validate_load({"concurrency": 64})
    ctx = LoadContext(sim)
    for pod in ready:
        usage = pod_load(sim, pod, ctx)
        assert (usage.running, usage.waiting) == (16, 16)
        assert 95 <= usage.gpu_utilization <= 99
        assert usage.kv_cache_usage == pytest.approx(1.0)
    assert not pod_load(sim, loading, ctx).exports_vllm_metrics


def test_partial_load_scales_utilisation_and_kv_cache(sim):
    rs = add_deployment(sim, "llama")
    pods = [add_pod(sim, f"llama-{i}", owner=rs) for i in range(2)]
    sim.loads[("default", "llama")] = validate_load({"concurrency": 8})
    usage = pod_load(sim, pods[0])
    assert (usage.running, usage.waiting) == (4, 0)
    expected = 97 * 0.25**0.6
    assert expected - 2 <= usage.gpu_utilization <= expected + 2
    assert usage.kv_cache_usage == pytest.approx(0.9 * 0.25, abs=0.011)
    busier = validate_load({"concurrency": 24})
    sim.loads[("default", "llama")] = busier
    assert pod_load(sim, pods[0]).gpu_utilization > usage.gpu_utilization


def test_capacity_and_overrides(sim):
    rs = add_deployment(sim, "llama")
    pod = add_pod(sim, "llama-1", owner=rs)
    sim.loads[("default", "llama")] = validate_load({
        "concurrency": 10, "capacity_per_replica": 4, "gpu_utilization": 42, "kv_cache_usage": 0.3,
        "gpu_memory_fraction": 0.5, "cpu_fraction": 1.0,
    })
    usage = pod_load(sim, pod)
    assert (usage.running, usage.waiting) == (4, 6)
    assert (usage.gpu_utilization, usage.kv_cache_usage, usage.gpu_memory_fraction) == (42, 0.3, 0.5)
    assert 8e9 * 0.95 <= usage.cpu_nanocores <= 8e9 * 1.05


def test_loading_pod_fills_gpu_memory_over_the_model_load_time(sim):
    rs = add_deployment(sim, "llama")
    pod = add_pod(sim, "llama-1", owner=rs, state="loading", started_ago=0,
                  annotations={"kubesim.io/model-load-seconds": "100"})
    sim.loads[("default", "llama")] = validate_load({"concurrency": 50})
    fractions = []
    for _ in range(3):
        usage = pod_load(sim, pod)
        assert usage.gpu_utilization == 0
        assert not usage.exports_vllm_metrics
        fractions.append(usage.gpu_memory_fraction)
        sim.advance(50)
    assert fractions == pytest.approx([0.0, 0.45, 0.9])


def test_pending_pod_uses_nothing_on_the_gpu(sim):
    rs = add_deployment(sim, "llama")
    pod = add_pod(sim, "llama-1", owner=rs, state="pending")
    usage = pod_load(sim, pod)
    assert (usage.gpu_memory_fraction, usage.gpu_utilization, usage.ready) == (0, 0, False)


def test_noise_is_stable_within_a_scrape_interval_and_never_touches_sim_rng(sim):
    rs = add_deployment(sim, "llama")
    pod = add_pod(sim, "llama-1", owner=rs)
    sim.loads[("default", "llama")] = validate_load({"concurrency": 8})
    rng_state = sim.rng.getstate()
    first = pod_load(sim, pod)
    sim.advance(5)  # START is bucket-aligned: still the same 15 s bucket
    assert pod_load(sim, pod) == first
    values = set()
    for _ in range(6):
        sim.advance(15)
        values.add(pod_load(sim, pod).gpu_utilization)
    assert len(values) > 1  # the figures do move between scrapes
    assert sim.rng.getstate() == rng_state


def test_bare_pod_and_kwok_usage_annotations(sim):
    bare = add_pod(sim, "tool-1", gpus=0, cpu="500m", memory="1Gi", args=[], image="busybox:1.36")
    usage = pod_load(sim, bare)
    assert usage.deployment is None
    assert not usage.model_server
    assert 0.5e9 * 0.04 <= usage.cpu_nanocores <= 0.5e9 * 0.06
    annotated = add_pod(sim, "tool-2", gpus=0, args=[], image="busybox:1.36",
                        annotations={"kwok.x-k8s.io/usage-cpu": "250m", "kwok.x-k8s.io/usage-memory": "300Mi"})
    usage = pod_load(sim, annotated)
    assert (usage.cpu_nanocores, usage.memory_bytes) == (250_000_000, 300 * 2**20)


# --------------------------------------------------------------------------- metrics.k8s.io


def _cpu_nanocores(text: str) -> int:
    assert text.endswith("n")
    return int(text[:-1])


def _memory_kib(text: str) -> int:
    assert text.endswith("Ki")
    return int(text[:-2])


def test_node_metrics_sum_pod_usage_and_overhead(sim):
    rs = add_deployment(sim, "llama")
    pods = [add_pod(sim, f"llama-{i}", owner=rs, node="h100-0") for i in range(3)]
    body = metrics.list_node_metrics(sim)
    assert body["kind"] == "NodeMetricsList"
    assert body["apiVersion"] == "metrics.k8s.io/v1beta1"
    by_name = {item["metadata"]["name"]: item for item in body["items"]}
    assert set(by_name) == {"h100-0", "h100-1"}
    busy, idle = by_name["h100-0"], by_name["h100-1"]
    assert busy["window"] == "20s"
    assert busy["timestamp"].endswith("Z")
    ctx = LoadContext(sim)
    pods_cpu = sum(pod_load(sim, p, ctx).cpu_nanocores for p in pods)
    pods_memory = sum(pod_load(sim, p, ctx).memory_bytes for p in pods)
    expected_cpu = pods_cpu + metrics.NODE_OVERHEAD_CPU_NANOCORES
    assert _cpu_nanocores(busy["usage"]["cpu"]) == pytest.approx(expected_cpu, rel=0.031)
    expected_kib = (pods_memory + metrics.NODE_OVERHEAD_MEMORY_BYTES) / 1024
    assert _memory_kib(busy["usage"]["memory"]) == pytest.approx(expected_kib, rel=0.011)
    assert _cpu_nanocores(idle["usage"]["cpu"]) == pytest.approx(metrics.NODE_OVERHEAD_CPU_NANOCORES, rel=0.031)
    assert "kind" not in busy  # list items carry no kind, as the apiserver sends them
    single = metrics.get_node_metrics(sim, "h100-0")
    assert single["kind"] == "NodeMetrics"
    assert single["usage"] == busy["usage"]


def test_unreachable_node_has_no_metrics_and_missing_node_is_404(sim):
    add_node(sim, "h100-2", ready="Unknown")
    names = [item["metadata"]["name"] for item in metrics.list_node_metrics(sim)["items"]]
    assert names == ["h100-0", "h100-1"]
    for name in ("h100-2", "nope"):
        with pytest.raises(ApiError) as caught:
            metrics.get_node_metrics(sim, name)
        assert caught.value.code == 404
        assert caught.value.status()["message"] == f'nodemetrics.metrics.k8s.io "{name}" not found'


def test_node_metrics_label_selector(sim):
    add_node(sim, "l40s-0", product="nvidia-l40s")
    body = metrics.list_node_metrics(sim, label_predicate("nvidia.com/gpu.product=nvidia-l40s"))
    assert [item["metadata"]["name"] for item in body["items"]] == ["l40s-0"]
    assert body["items"][0]["metadata"]["labels"]["nvidia.com/gpu.product"] == "nvidia-l40s"


def test_pod_metrics_appear_one_scrape_after_running(sim):
    rs = add_deployment(sim, "llama")
    add_pod(sim, "llama-old", owner=rs, started_ago=60)
    add_pod(sim, "llama-new", owner=rs, started_ago=0)
    add_pod(sim, "llama-pending", owner=rs, state="pending")
    listed = metrics.list_pod_metrics(sim, "default")
    assert [item["metadata"]["name"] for item in listed["items"]] == ["llama-old"]
    with pytest.raises(ApiError) as caught:
        metrics.get_pod_metrics(sim, "default", "llama-new")
    assert caught.value.code == 404
    assert caught.value.status()["message"] == 'podmetrics.metrics.k8s.io "default/llama-new" not found'
    sim.advance(metrics.SCRAPE_LAG_SECONDS)
    pod = metrics.get_pod_metrics(sim, "default", "llama-new")
    assert pod["kind"] == "PodMetrics"
    assert pod["metadata"]["namespace"] == "default"
    (container,) = pod["containers"]
    assert container["name"] == "vllm"
    assert _cpu_nanocores(container["usage"]["cpu"]) > 0
    assert _memory_kib(container["usage"]["memory"]) > 0
    names = [item["metadata"]["name"] for item in metrics.list_pod_metrics(sim, None)["items"]]
    assert names == ["llama-new", "llama-old"]


def test_pod_metrics_namespace_and_label_filters(sim):
    rs_a = add_deployment(sim, "alpha", namespace="team-a")
    rs_b = add_deployment(sim, "beta")
    add_pod(sim, "alpha-1", owner=rs_a, namespace="team-a")
    add_pod(sim, "beta-1", owner=rs_b)
    assert [i["metadata"]["name"] for i in metrics.list_pod_metrics(sim, "team-a")["items"]] == ["alpha-1"]
    everywhere = metrics.list_pod_metrics(sim, None, label_predicate("app=beta"))
    assert [i["metadata"]["name"] for i in everywhere["items"]] == ["beta-1"]


def test_metrics_server_down_answers_503(sim):
    sim.metrics_available = False
    for call in (lambda: metrics.list_node_metrics(sim), lambda: metrics.get_node_metrics(sim, "h100-0"),
                 lambda: metrics.list_pod_metrics(sim, None), lambda: metrics.get_pod_metrics(sim, "default", "x")):
        with pytest.raises(ApiError) as caught:
            call()
        assert caught.value.code == 503
        assert caught.value.reason == "ServiceUnavailable"


def test_pods_on_an_unreachable_node_have_no_metrics(sim):
    add_node(sim, "h100-2", ready="Unknown")
    rs = add_deployment(sim, "llama")
    add_pod(sim, "llama-lost", owner=rs, node="h100-2")
    add_pod(sim, "llama-fine", owner=rs, node="h100-0")
    assert [i["metadata"]["name"] for i in metrics.list_pod_metrics(sim, "default")["items"]] == ["llama-fine"]
    with pytest.raises(ApiError) as caught:
        metrics.get_pod_metrics(sim, "default", "llama-lost")
    assert caught.value.code == 404
