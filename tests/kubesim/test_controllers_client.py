"""Controllers driven through the official Python client and kubectl, over HTTP."""

from __future__ import annotations

import json

import pytest
from kubernetes.client import V1DeleteOptions
from kubernetes.client.exceptions import ApiException

from tests.kubesim.test_controllers_support import deployment, deployment_ready


def _ready(k8s, name, namespace="default"):
    dep = k8s.apps.read_namespaced_deployment(name, namespace)
    status = dep.status
    return (status.observed_generation == dep.metadata.generation and status.updated_replicas == dep.spec.replicas
            and status.available_replicas == dep.spec.replicas and status.replicas == dep.spec.replicas)


def _wait_ready(cluster, k8s, name, namespace="default"):
    """Advance until the store says ready (cheap per step), then confirm through the client."""
    assert cluster.run_until(lambda: deployment_ready(cluster.sim, name, namespace), timeout=600)
    assert _ready(k8s, name, namespace)


def test_deployment_becomes_ready_through_the_client(sim_cluster, k8s):
    k8s.apps.create_namespaced_deployment("default", deployment("llama", replicas=2))
    sim_cluster.settle()
    pods = k8s.core.list_namespaced_pod("default", label_selector="app=llama").items
    assert len(pods) == 2
    assert all(p.status.phase == "Pending" for p in pods)
    _wait_ready(sim_cluster, k8s, "llama")
    for pod in k8s.core.list_namespaced_pod("default", label_selector="app=llama").items:
        assert pod.status.phase == "Running"
        assert pod.spec.node_name
        assert pod.status.container_statuses[0].ready
        assert pod.status.pod_ip


def test_rollout_restart_deadlocks_a_gpu_full_cluster(sim_cluster, k8s, kubectl):
    k8s.apps.create_namespaced_deployment("default", deployment("full", replicas=3))
    _wait_ready(sim_cluster, k8s, "full")
    kubectl("rollout", "restart", "deployment/full")
    sim_cluster.advance(60)
    pending = [p for p in k8s.core.list_namespaced_pod("default", label_selector="app=full").items
               if p.status.phase == "Pending"]
    assert len(pending) == 1
    scheduled = next(c for c in pending[0].status.conditions if c.type == "PodScheduled")
    assert scheduled.reason == "Unschedulable"
    assert scheduled.message.startswith("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    events = k8s.core.list_namespaced_event(
        "default", field_selector=f"involvedObject.name={pending[0].metadata.name},reason=FailedScheduling").items
    assert len(events) == 1
    assert events[0].type == "Warning"
    assert events[0].source.component == "default-scheduler"
    status = kubectl("rollout", "status", "deployment/full", "--timeout=2s", check=False)
    assert status.returncode != 0


def test_scale_subresource_and_kubectl_scale(sim_cluster, k8s, kubectl):
    k8s.apps.create_namespaced_deployment("default", deployment("web", replicas=1, gpus=1))
    sim_cluster.settle()
    k8s.apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 3}})
    sim_cluster.settle()
    assert len(k8s.core.list_namespaced_pod("default", label_selector="app=web").items) == 3
    kubectl("scale", "deployment/web", "--replicas=2")
    sim_cluster.advance(10)
    assert len(k8s.core.list_namespaced_pod("default", label_selector="app=web").items) == 2


def test_cordon_shows_scheduling_disabled(sim_cluster, kubectl):
    kubectl("cordon", "l40s-0")
    sim_cluster.settle()
    out = kubectl("get", "nodes").stdout
    row = next(line for line in out.splitlines() if line.startswith("l40s-0"))
    assert "Ready,SchedulingDisabled" in row
    kubectl("uncordon", "l40s-0")
    sim_cluster.settle()
    node = json.loads(kubectl("get", "node", "l40s-0", "-o", "json").stdout)
    assert not any(t["key"] == "node.kubernetes.io/unschedulable" for t in node["spec"].get("taints", []))


def test_pdb_status_through_policy_v1(sim_cluster, k8s):
    k8s.apps.create_namespaced_deployment("default", deployment("api", replicas=2, gpus=1))
    _wait_ready(sim_cluster, k8s, "api")
    k8s.policy.create_namespaced_pod_disruption_budget("default", {
        "metadata": {"name": "api"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "api"}}}})
    sim_cluster.settle()
    status = k8s.policy.read_namespaced_pod_disruption_budget("api", "default").status
    assert (status.expected_pods, status.current_healthy, status.desired_healthy, status.disruptions_allowed) == \
        (2, 2, 1, 1)


@pytest.mark.parametrize("policy", ["Background", "Foreground", "Orphan"])
def test_cascading_delete_policies(sim_cluster, k8s, policy):
    k8s.apps.create_namespaced_deployment("default", deployment("cas", replicas=1, gpus=1))
    sim_cluster.advance(200)
    k8s.apps.delete_namespaced_deployment("cas", "default", body=V1DeleteOptions(propagation_policy=policy))
    sim_cluster.advance(10)
    with pytest.raises(ApiException) as missing:
        k8s.apps.read_namespaced_deployment("cas", "default")
    assert missing.value.status == 404
    replicasets = k8s.apps.list_namespaced_replica_set("default").items
    pods = k8s.core.list_namespaced_pod("default").items
    if policy == "Orphan":
        assert len(replicasets) == 1
        assert replicasets[0].metadata.owner_references is None
        assert len(pods) == 1
    else:
        assert replicasets == []
        assert pods == []


def test_namespace_deletion_through_the_client(sim_cluster, k8s):
    k8s.core.create_namespace({"metadata": {"name": "tenant"}})
    k8s.apps.create_namespaced_deployment("tenant", deployment("x", replicas=1, gpus=1))
    sim_cluster.advance(200)
    k8s.core.delete_namespace("tenant")
    assert k8s.core.read_namespace("tenant").status.phase == "Terminating"
    with pytest.raises(ApiException) as refused:
        k8s.core.create_namespaced_pod("tenant", {"metadata": {"name": "late"}, "spec": {
            "containers": [{"name": "c", "image": "busybox"}]}})
    assert refused.value.status == 403
    sim_cluster.advance(10)
    assert "tenant" not in [n.metadata.name for n in k8s.core.list_namespace().items]


def test_node_failure_evicts_pods_after_toleration_seconds(sim_cluster, k8s):
    k8s.apps.create_namespaced_deployment("default", deployment("ha", replicas=2, gpus=8))
    _wait_ready(sim_cluster, k8s, "ha")
    victim = k8s.core.list_namespaced_pod("default", label_selector="app=ha").items[0]
    sim_cluster.sim.fail_node(victim.spec.node_name, "NotReady")
    sim_cluster.settle()
    pod = k8s.core.read_namespaced_pod(victim.metadata.name, "default")
    assert next(c for c in pod.status.conditions if c.type == "Ready").status == "False"
    sim_cluster.advance(310)
    names = [p.metadata.name for p in k8s.core.list_namespaced_pod("default", label_selector="app=ha").items]
    assert victim.metadata.name not in names
    assert len(names) == 2  # the ReplicaSet replaced it on the free node
