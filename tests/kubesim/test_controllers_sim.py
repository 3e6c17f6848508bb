"""The Simulation itself and the node catalogue: clock, settling, determinism, snapshots, node specs."""

from __future__ import annotations

import pytest

from kubesim.clock import ScaledClock
from kubesim.nodes import parse_spec
from kubesim.sim import Simulation
from tests.kubesim.test_controllers_support import (
    bare_pod,
    deployment,
    deployment_ready,
    is_ready,
    pods,
    start_sim,
)


def test_node_spec_parsing_and_junk():
    pools = parse_spec("4xnvidia-l40s:8, 2xnvidia-h100-80gb:8")
    assert [(p.count, p.product, p.gpus_per_node) for p in pools] == [(4, "nvidia-l40s", 8),
                                                                      (2, "nvidia-h100-80gb", 8)]
    for junk in ("", "4xl40s", "x:8", "4xnvidia-l40s:eight", "0xnvidia-l40s:8", "4*nvidia-l40s:8", "1xa:99"):
        with pytest.raises(ValueError, match=r"."):
            parse_spec(junk)


def test_nodes_look_like_real_gpu_nodes(sim):
    node = sim.store.get("nodes", "", "h100-80gb-0")
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "nvidia-h100-80gb"
    assert labels["nvidia.com/gpu.count"] == "8"
    assert labels["nvidia.com/gpu.memory"] == "81559"
    assert labels["nvidia.com/gpu.present"] == "true"
    assert labels["kubernetes.io/hostname"] == "h100-80gb-0"
    assert labels["node-role.kubernetes.io/gpu-worker"] == ""
    assert node["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    status = node["status"]
    assert status["capacity"]["nvidia.com/gpu"] == "8"
    assert status["capacity"]["cpu"] == "192"
    assert status["capacity"]["pods"] == "110"
    assert int(status["allocatable"]["memory"][:-2]) < int(status["capacity"]["memory"][:-2])
    assert {c["type"] for c in status["conditions"]} == {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure"}
    assert {a["type"] for a in status["addresses"]} == {"InternalIP", "Hostname"}
    assert len(status["nodeInfo"]) == 10
    assert status["nodeInfo"]["kubeletVersion"].startswith("v1.34.")
    assert status["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250
    l40s = sim.store.get("nodes", "", "l40s-1")
    assert l40s["metadata"]["labels"]["nvidia.com/gpu.memory"] == "46068"


def test_add_nodes_continues_names_and_addresses(sim):
    assert sim.add_nodes("2xnvidia-l40s:4") == ["l40s-2", "l40s-3"]
    ips = [next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
           for n in sim.store.list("nodes")[0]]
    assert len(set(ips)) == len(ips) == 5
    with pytest.raises(ValueError, match="invalid node pool"):
        sim.add_nodes("lots of gpus")


def test_advance_needs_a_virtual_clock():
    scaled = Simulation(nodes="1xnvidia-l40s:8", clock=ScaledClock(10.0))
    scaled.start()
    try:
        with pytest.raises(ValueError, match="virtual clock"):
            scaled.advance(1)
    finally:
        scaled.stop()


def test_advance_runs_chained_stages_in_one_call(sim):
    sim.store.create("pods", bare_pod("chain", gpus=1))
    start = sim.clock.now()
    sim.advance(600)  # pull → start → model load → Ready, all inside one advance
    assert is_ready(sim.store.get("pods", "default", "chain"))
    assert sim.clock.now() == start + 600


def test_run_until_reports_timeouts(sim):
    assert sim.run_until(lambda: False, timeout=5) is False
    with pytest.raises(ValueError, match="step"):
        sim.run_until(lambda: True, timeout=5, step=0)


def _scenario(seed):
    simulation = start_sim(seed=seed)
    try:
        simulation.store.create("deployments", deployment("det", replicas=2, gpus=2))
        # The controllers' creates (ReplicaSet, pods) draw names and uids from the seeded generator too: let
        # them finish first, or the solo pod's create races them for the next draws and the runs differ.
        simulation.settle()
        simulation.store.create("pods", bare_pod("solo", gpus=1))
        simulation.advance(75)
        snapshot = simulation.store.snapshot()
    finally:
        simulation.stop()
    return [(p["metadata"]["name"], p["metadata"]["uid"], p["spec"].get("nodeName"), p["status"]) for p in
            snapshot["objects"]["pods"]]


def test_same_seed_same_cluster():
    first = _scenario(3)
    assert first == _scenario(3)
    assert first != _scenario(4)


def test_snapshot_restore_and_reset(sim):
    saved = sim.snapshot()
    sim.store.create("deployments", deployment("temp", replicas=1, gpus=1))
    sim.advance(200)
    assert pods(sim, app="temp")
    sim.restore(saved)
    sim.settle()
    assert sim.store.list("deployments", "default")[0] == []
    assert pods(sim) == []
    sim.store.create("deployments", deployment("again", replicas=1, gpus=1))
    assert sim.run_until(lambda: deployment_ready(sim, "again"), timeout=600)
    sim.add_nodes("1xnvidia-t4:1")
    sim.reset()
    sim.settle()
    assert sorted(n["metadata"]["name"] for n in sim.store.list("nodes")[0]) == ["h100-80gb-0", "l40s-0", "l40s-1"]
    assert sim.store.list("deployments", "default")[0] == []
    with pytest.raises(ValueError, match="store"):
        sim.restore({"nothing": True})


def test_set_load_is_validated(sim):
    sim.set_load("default", "llama", {"concurrency": 5})
    assert ("default", "llama") in sim.loads
    with pytest.raises(ValueError, match=r"."):
        sim.set_load("default", "llama", {"concurrency": "lots"})


def test_scaled_clock_fires_timers_in_real_time():
    scaled = Simulation(nodes="1xnvidia-l40s:8", seed=1, clock=ScaledClock(1000.0))
    scaled.start()
    try:
        scaled.store.create("pods", bare_pod("fast", gpus=1))
        # 60 s pull + 90 s load at 1000× is well under a second of real time; allow ample slack.
        assert scaled.run_until(lambda: is_ready(scaled.store.get("pods", "default", "fast")), timeout=3000,
                                step=50)
        assert scaled.errors == []
    finally:
        scaled.stop()


def test_port_in_use_fails_start_cleanly():
    from kubesim.cluster import SimCluster

    with SimCluster(nodes="1xnvidia-l40s:8") as first:
        port = int(first.url.rsplit(":", 1)[1])
        second = SimCluster(nodes="1xnvidia-l40s:8", port=port)
        # The bind fails with OSError; KubeSimServer.server_close currently masks it with an
        # AttributeError (reported to kubesim-api), so this checks the clean-up, not the type.
        with pytest.raises(Exception):  # noqa: B017, PT011
            second.start()
        assert second.sim._thread is None
