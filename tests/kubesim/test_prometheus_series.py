"""Unit tests for the simulated DCGM/vLLM series and `handle_query`, over a Store populated directly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kubesim.load import validate_load
from kubesim.prometheus import handle_query
from tests.kubesim.test_metrics_support import START, add_deployment, add_node, add_pod, make_sim


@pytest.fixture
def sim():
    sim = make_sim()
    add_node(sim, "h100-0", gpus=8, memory_mib=81559)
    add_node(sim, "l40s-0", gpus=4, product="nvidia-l40s", memory_mib=46068)
    add_node(sim, "cpu-0", gpus=0)
    return sim


def _query(sim, query: str, **extra: str) -> list[dict]:
    status, body = handle_query(sim, {"query": query, **extra})
    assert status == 200, body
    assert body["status"] == "success"
    assert body["data"]["resultType"] == "vector"
    return body["data"]["result"]


def _values(result: list[dict], key: str) -> dict[str, float]:
    return {r["metric"].get(key, ""): float(r["value"][1]) for r in result}


def test_one_dcgm_series_per_physical_gpu_with_exporter_labels(sim):
    result = _query(sim, "DCGM_FI_DEV_GPU_UTIL")
    assert len(result) == 12
    first = result[0]["metric"]
    assert first["__name__"] == "DCGM_FI_DEV_GPU_UTIL"
    assert {"gpu", "UUID", "device", "modelName", "Hostname", "instance"} <= set(first)
    by_host = {}
    for series in result:
        by_host.setdefault(series["metric"]["Hostname"], set()).add(series["metric"]["gpu"])
        assert series["metric"]["device"] == f"nvidia{series['metric']['gpu']}"
        assert series["metric"]["UUID"].startswith("GPU-")
        assert "pod" not in series["metric"]
        assert series["value"][1] == "0"
    assert by_host == {"h100-0": {str(i) for i in range(8)}, "l40s-0": {str(i) for i in range(4)}}
    models = {r["metric"]["Hostname"]: r["metric"]["modelName"] for r in result}
    assert models == {"h100-0": "NVIDIA H100 80GB HBM3", "l40s-0": "NVIDIA L40S"}
    assert len({r["metric"]["UUID"] for r in result}) == 12


def test_gpus_of_a_loaded_pod_carry_its_labels_and_load(sim):
    rs = add_deployment(sim, "llama", namespace="team-a")
    add_pod(sim, "llama-tp2", owner=rs, namespace="team-a", node="h100-0", gpus=2)
    sim.loads[("team-a", "llama")] = validate_load({"concurrency": 40})
    util = _query(sim, 'DCGM_FI_DEV_GPU_UTIL{pod!=""}')
    assert [(r["metric"]["gpu"], r["metric"]["namespace"], r["metric"]["pod"], r["metric"]["container"])
            for r in util] == [("0", "team-a", "llama-tp2", "vllm"), ("1", "team-a", "llama-tp2", "vllm")]
    assert all(95 <= float(r["value"][1]) <= 99 for r in util)
    used = _values(_query(sim, 'DCGM_FI_DEV_FB_USED{Hostname="h100-0"}'), "gpu")
    free = _values(_query(sim, 'DCGM_FI_DEV_FB_FREE{Hostname="h100-0"}'), "gpu")
    assert used["0"] == used["1"] == round(81559 * 0.9)
    assert used["2"] == 0
    assert free["2"] == 81559
    assert used["0"] + free["0"] == 81559


def test_gpu_indexes_stay_with_their_pod(sim):
    rs = add_deployment(sim, "llama")
    add_pod(sim, "llama-a", owner=rs, gpus=2)
    sim.advance(1)
    add_pod(sim, "llama-b", owner=rs, gpus=1)
    assert _values(_query(sim, 'DCGM_FI_DEV_GPU_UTIL{pod!=""}'), "gpu").keys() == {"0", "1", "2"}
    before = {r["metric"]["gpu"]: r["metric"]["pod"] for r in _query(sim, 'DCGM_FI_DEV_GPU_UTIL{pod!=""}')}
    assert before == {"0": "llama-a", "1": "llama-a", "2": "llama-b"}
    sim.store.delete("pods", "default", "llama-a", grace_period_seconds=0)
    sim.advance(1)
    add_pod(sim, "llama-c", owner=rs, gpus=1)
    after = {r["metric"]["gpu"]: r["metric"]["pod"] for r in _query(sim, 'DCGM_FI_DEV_GPU_UTIL{pod!=""}')}
    assert after == {"0": "llama-c", "2": "llama-b"}  # llama-b kept GPU 2; the newcomer took the lowest free


def test_unreachable_node_exports_nothing(sim):
    add_node(sim, "h100-9", gpus=8, ready="Unknown")
    assert "h100-9" not in _values(_query(sim, "DCGM_FI_DEV_GPU_UTIL"), "Hostname")


def test_vllm_series_for_ready_model_servers_only(sim):
    rs = add_deployment(sim, "llama", namespace="team-a")
    add_pod(sim, "llama-1", owner=rs, namespace="team-a")
    add_pod(sim, "llama-2", owner=rs, namespace="team-a", args=["--model=org/other", "--served-model-name", "chat"])
    add_pod(sim, "llama-3", owner=rs, namespace="team-a", state="loading")
    add_pod(sim, "tool-1", gpus=0, args=[], image="busybox")
    sim.loads[("team-a", "llama")] = validate_load({"concurrency": 40})
    running = sorted(_query(sim, "vllm:num_requests_running"), key=lambda r: r["metric"]["pod"])
    assert [r["metric"]["pod"] for r in running] == ["llama-1", "llama-2"]
    assert running[0]["metric"]["model_name"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert running[1]["metric"]["model_name"] == "chat"
    assert running[0]["metric"]["instance"].endswith(":8000")
    assert [r["value"][1] for r in running] == ["16", "16"]
    waiting = _query(sim, 'vllm:num_requests_waiting{namespace="team-a"}')
    assert [r["value"][1] for r in waiting] == ["4", "4"]
    kv = _query(sim, "max(vllm:gpu_cache_usage_perc)")
    assert 0.9 < float(kv[0]["value"][1]) <= 1.0


def test_aggregation_over_live_series(sim):
    rs = add_deployment(sim, "llama", namespace="team-a")
    for i in range(3):
        add_pod(sim, f"llama-{i}", owner=rs, namespace="team-a", node="l40s-0")
    sim.loads[("team-a", "llama")] = validate_load({"concurrency": 30})
    total = _query(sim, 'sum by (namespace) (vllm:num_requests_running{namespace="team-a"})')
    assert total == [{"metric": {"namespace": "team-a"}, "value": [START, "30"]}]
    per_node = _query(sim, "avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL)")
    values = _values(per_node, "Hostname")
    assert values["h100-0"] == 0
    # three of the four L40S GPUs are busy at ~10/16 of capacity: 97·0.625^0.6 ≈ 73 ± 2 each
    assert 3 * 71 / 4 <= values["l40s-0"] <= 3 * 75 / 4
    counted = _query(sim, 'count({__name__=~"DCGM_FI_DEV_.*"})')
    assert counted[0]["value"][1] == str(3 * 12)


def test_repeated_queries_in_one_scrape_interval_agree(sim):
    rs = add_deployment(sim, "llama")
    add_pod(sim, "llama-1", owner=rs)
    sim.loads[("default", "llama")] = validate_load({"concurrency": 5})
    first = _query(sim, "DCGM_FI_DEV_GPU_UTIL")
    sim.advance(3)
    second = _query(sim, "DCGM_FI_DEV_GPU_UTIL")
    assert [r["value"][1] for r in first] == [r["value"][1] for r in second]


def test_time_parameter_stamps_the_result(sim):
    result = _query(sim, "count(DCGM_FI_DEV_GPU_UTIL)", time="1800000123.5")
    assert result[0]["value"] == [1800000123.5, "12"]
    result = _query(sim, "count(DCGM_FI_DEV_GPU_UTIL)", time="2027-01-15T08:00:00Z")
    assert result[0]["value"][0] == datetime(2027, 1, 15, 8, 0, tzinfo=UTC).timestamp()
    status, body = handle_query(sim, {"query": "up", "time": "yesterday"})
    assert (status, body["errorType"]) == (400, "bad_data")
    assert body["error"] == 'invalid parameter "time": cannot parse "yesterday" to a valid timestamp'


def test_scalar_literal(sim):
    status, body = handle_query(sim, {"query": "1.5"})
    assert (status, body) == (200, {"status": "success", "data": {"resultType": "scalar", "result": [START, "1.5"]}})


@pytest.mark.parametrize(
    "params",
    [{}, {"query": ""}, {"query": "rate(DCGM_FI_DEV_GPU_UTIL[5m])"}, {"query": "DCGM_FI_DEV_GPU_UTIL * 2"},
     {"query": "quantile(0.9, DCGM_FI_DEV_GPU_UTIL)"}],
)
def test_unsupported_queries_get_prometheus_bad_data(sim, params):
    status, body = handle_query(sim, params)
    assert status == 400
    assert body["status"] == "error"
    assert body["errorType"] == "bad_data"
    assert body["error"].startswith('invalid parameter "query": 1:')


def test_unknown_metric_is_an_empty_vector(sim):
    assert _query(sim, "up") == []


def test_name_regex_selects_families_as_the_service_queries_them(sim):
    rs = add_deployment(sim, "llama")
    add_pod(sim, "llama-1", owner=rs)
    names = {r["metric"]["__name__"] for r in _query(sim, '{__name__=~"DCGM_FI_DEV_GPU_UTIL|DCGM_FI_DEV_FB_USED"}')}
    assert names == {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"}
    vllm = _query(sim, '{__name__=~"vllm:num_requests_waiting|vllm:gpu_cache_usage_perc",namespace="default"}')
    assert sorted(r["metric"]["__name__"] for r in vllm) == ["vllm:gpu_cache_usage_perc", "vllm:num_requests_waiting"]
    everything = {r["metric"]["__name__"] for r in _query(sim, '{__name__!=""}')}
    assert len(everything) == 6
