"""Inventory sync against kubesim: node and pod rows, foreign pods, vanished nodes, constant list calls."""

from __future__ import annotations

import pytest
from sqlalchemy import select

import settings as settings_module
from kubesim.cluster import SimCluster
from models import GpuNode, PodAllocation
from models.db import get_sessionmaker
from workers import admission, k8s
from workers.inventory import run_inventory_sweep


@pytest.fixture
def cluster(clean_tables, tmp_path, monkeypatch):
    with SimCluster(nodes="3xnvidia-l40s:8,1xnvidia-h100-80gb:8", seed=11) as sim_cluster:
        monkeypatch.setenv("KUBECONFIG", str(sim_cluster.write_kubeconfig(tmp_path / "kubeconfig")))
        settings_module.get_settings.cache_clear()
        k8s.reset_client()
        yield sim_cluster
        k8s.reset_client()
        settings_module.get_settings.cache_clear()


def foreign_gpu_pod(name: str, gpus: int, node: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {"name": "main", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
            ],
        },
    }


def test_sync_nodes_and_foreign_pods(cluster):
    core = k8s.get_clients().core
    core.create_namespaced_pod("default", foreign_gpu_pod("trainer", 5, "l40s-1"))
    cluster.sim.advance(30)
    cluster.server.request_log.clear()
    summary = run_inventory_sweep()
    assert summary["nodes"] == 4
    assert summary["pods"] == 1
    list_requests = list(cluster.server.request_log.entries(method="GET"))
    assert len(list_requests) == summary["list_calls"] == 2
    with get_sessionmaker()() as session:
        nodes = {node.name: node for node in session.execute(select(GpuNode)).scalars()}
        assert set(nodes) == {"l40s-0", "l40s-1", "l40s-2", "h100-80gb-0"}
        l40s = nodes["l40s-1"]
        assert (l40s.gpu_product, l40s.gpu_allocatable, l40s.gpu_allocated) == ("nvidia-l40s", 8, 5)
        assert l40s.ready_status == "Ready"
        assert l40s.gpu_memory_mb
        assert l40s.cpu_allocatable_millicores > 0
        assert l40s.memory_allocatable_bytes > 0
        assert any(taint["key"] == "nvidia.com/gpu" for taint in l40s.taints)
        pod = session.execute(select(PodAllocation)).scalar_one()
        assert (pod.pod_name, pod.node_name, pod.gpus, pod.deployment_id) == ("trainer", "l40s-1", 5, None)
        capacity = admission.current_capacity(session)
        assert capacity.free_by_type["nvidia-l40s"] == {"l40s-0": 8, "l40s-1": 3, "l40s-2": 8}

    cluster.sim.remove_node("l40s-2")
    core.delete_namespaced_pod("trainer", "default", grace_period_seconds=0)
    cluster.sim.advance(30)
    run_inventory_sweep()
    with get_sessionmaker()() as session:
        gone = session.get(GpuNode, "l40s-2")
        assert gone.present is False
        pod = session.execute(select(PodAllocation)).scalar_one()
        assert pod.terminated_at is not None
        assert "l40s-2" not in admission.current_capacity(session).free_by_type["nvidia-l40s"]


def test_sync_is_paginated_with_a_constant_number_of_calls(cluster):
    core = k8s.get_clients().core
    for index in range(12):
        core.create_namespaced_pod("default", foreign_gpu_pod(f"p{index}", 1, f"l40s-{index % 3}"))
    cluster.sim.advance(30)
    from workers import kube_calls

    original = kube_calls.LIST_PAGE_SIZE
    kube_calls.LIST_PAGE_SIZE = 5
    try:
        summary = run_inventory_sweep()
    finally:
        kube_calls.LIST_PAGE_SIZE = original
    assert summary["pods"] == 12
    assert summary["list_calls"] == 1 + 3  # one page of nodes, three pages of pods
    with get_sessionmaker()() as session:
        allocated = dict(session.execute(select(GpuNode.name, GpuNode.gpu_allocated)).all())
    assert allocated == {"l40s-0": 4, "l40s-1": 4, "l40s-2": 4, "h100-80gb-0": 0}
