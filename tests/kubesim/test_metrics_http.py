"""metrics.k8s.io and the Prometheus API over HTTP, through the official client, on a directly populated Store.

The server is real (kubesim.server over loopback); the Simulation is the stand-in from
test_metrics_support, so every figure is deterministic and no controller runs.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import kubernetes
import pytest

from kubesim.load import validate_load
from kubesim.server import make_server
from tests.kubesim.test_metrics_support import START, StandInSim, add_deployment, add_node, add_pod, make_sim


@pytest.fixture
def served() -> Iterator[tuple[StandInSim, str]]:
    sim = make_sim()
    add_node(sim, "h100-0")
    add_node(sim, "l40s-0", gpus=4, product="nvidia-l40s", memory_mib=46068)
    rs = add_deployment(sim, "llama", namespace="team-a")
    add_pod(sim, "llama-1", owner=rs, namespace="team-a", node="h100-0", gpus=2)
    add_pod(sim, "llama-2", owner=rs, namespace="team-a", node="l40s-0", started_ago=5)
    sim.loads[("team-a", "llama")] = validate_load({"concurrency": 20})
    server = make_server(sim)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sim, server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def custom(served) -> kubernetes.client.CustomObjectsApi:
    configuration = kubernetes.client.Configuration(host=served[1])
    return kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(configuration))


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_node_metrics_through_the_client(custom):
    body = custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
    assert body["kind"] == "NodeMetricsList"
    assert [item["metadata"]["name"] for item in body["items"]] == ["h100-0", "l40s-0"]
    for item in body["items"]:
        assert item["usage"]["cpu"].endswith("n")
        assert item["usage"]["memory"].endswith("Ki")
        assert item["window"] == "20s"
    single = custom.get_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes", "l40s-0")
    assert single["kind"] == "NodeMetrics"
    selected = custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes",
                                                 label_selector="nvidia.com/gpu.product=nvidia-l40s")
    assert [item["metadata"]["name"] for item in selected["items"]] == ["l40s-0"]


def test_pod_metrics_through_the_client_with_scrape_lag(served, custom):
    sim, _ = served
    listed = custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", "team-a", "pods")
    assert [item["metadata"]["name"] for item in listed["items"]] == ["llama-1"]
    with pytest.raises(kubernetes.client.ApiException) as caught:
        custom.get_namespaced_custom_object("metrics.k8s.io", "v1beta1", "team-a", "pods", "llama-2")
    assert caught.value.status == 404
    assert json.loads(caught.value.body)["message"] == 'podmetrics.metrics.k8s.io "team-a/llama-2" not found'
    sim.advance(15)
    pod = custom.get_namespaced_custom_object("metrics.k8s.io", "v1beta1", "team-a", "pods", "llama-2")
    assert pod["containers"][0]["name"] == "vllm"
    everywhere = custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "pods")
    assert len(everywhere["items"]) == 2


def test_metrics_server_down_is_503(served, custom):
    served[0].metrics_available = False
    with pytest.raises(kubernetes.client.ApiException) as caught:
        custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
    assert caught.value.status == 503
    assert json.loads(caught.value.body)["reason"] == "ServiceUnavailable"


def test_promql_over_http_get_and_post(served):
    _, url = served
    query = 'sum by (namespace) (vllm:num_requests_running{namespace="team-a"})'
    status, body = _get(f"{url}/prometheus/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    assert status == 200
    assert body == {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"namespace": "team-a"}, "value": [START, "20"]}]}}
    form = urllib.parse.urlencode({"query": 'DCGM_FI_DEV_GPU_UTIL{pod="llama-1"}'}).encode()
    request = urllib.request.Request(f"{url}/prometheus/api/v1/query", data=form, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as response:
        posted = json.loads(response.read())
    gpus = sorted((r["metric"]["Hostname"], r["metric"]["gpu"]) for r in posted["data"]["result"])
    assert gpus == [("h100-0", "0"), ("h100-0", "1")]
    assert all(float(r["value"][1]) > 50 for r in posted["data"]["result"])


def test_promql_errors_over_http(served):
    _, url = served
    status, body = _get(f"{url}/prometheus/api/v1/query?" + urllib.parse.urlencode(
        {"query": "rate(DCGM_FI_DEV_GPU_UTIL[5m])"}))
    assert status == 400
    assert body["status"] == "error"
    assert body["errorType"] == "bad_data"
    assert "function 'rate' is not supported" in body["error"]


# --------------------------------------------------------------------------- with the real controllers


def test_end_to_end_with_sim_cluster(tmp_path):
    """Deployment → scheduled GPU pods → model load → load set through the admin API → metrics and PromQL."""
    from kubesim.admin_client import SimAdminClient
    from kubesim.cluster import SimCluster

    with SimCluster(nodes="1xnvidia-h100-80gb:8,1xnvidia-l40s:4", seed=5) as cluster:
        api_client = kubernetes.config.new_client_from_config(
            config_file=str(cluster.write_kubeconfig(tmp_path / "kubeconfig")))
        apps = kubernetes.client.AppsV1Api(api_client)
        custom = kubernetes.client.CustomObjectsApi(api_client)
        apps.create_namespaced_deployment("default", {
            "metadata": {"name": "llama"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "llama"}},
                "template": {"metadata": {"labels": {"app": "llama"}}, "spec": {
                    "nodeSelector": {"nvidia.com/gpu.product": "nvidia-h100-80gb"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{
                        "name": "server", "image": "vllm/vllm-openai:v0.6.3",
                        "args": ["--model", "meta-llama/Llama-3.1-70B-Instruct", "--tensor-parallel-size", "2"],
                        "resources": {"requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"},
                                      "limits": {"nvidia.com/gpu": "2"}},
                    }],
                }},
            },
        })
        assert cluster.run_until(
            lambda: (apps.read_namespaced_deployment("llama", "default").status.ready_replicas or 0) == 2,
            timeout=900, step=5)
        admin = SimAdminClient(cluster.url)
        admin.set_load("default", "llama", {"concurrency": 48})
        cluster.advance(20)  # past metrics-server's first scrape of the newest pod

        nodes = custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
        assert sorted(item["metadata"]["name"] for item in nodes["items"]) == ["h100-80gb-0", "l40s-0"]
        pods = custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", "default", "pods")
        assert len(pods["items"]) == 2

        def promql(query: str) -> list[dict]:
            status, body = _get(f"{cluster.url}/prometheus/api/v1/query?" + urllib.parse.urlencode({"query": query}))
            assert status == 200, body
            return body["data"]["result"]

        running = promql('vllm:num_requests_running{namespace="default"}')
        assert sorted(r["value"][1] for r in running) == ["16", "16"]
        assert {r["metric"]["model_name"] for r in running} == {"meta-llama/Llama-3.1-70B-Instruct"}
        waiting = promql("sum(vllm:num_requests_waiting)")
        assert waiting[0]["value"][1] == "16"
        busy = promql('DCGM_FI_DEV_GPU_UTIL{Hostname="h100-80gb-0", pod=~"llama-.*"}')
        assert len(busy) == 4  # two pods × two GPUs each
        assert all(float(r["value"][1]) >= 90 for r in busy)
        idle = promql('count(DCGM_FI_DEV_GPU_UTIL{pod=""})')
        assert idle[0]["value"][1] == str(8 + 4 - 4)
