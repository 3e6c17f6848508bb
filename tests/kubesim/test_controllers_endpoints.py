"""The Endpoints controller: ready pods behind a Service selector become addresses."""

from __future__ import annotations

from tests.kubesim.test_controllers_support import deployment, deployment_ready


def _service(name, selector, **spec):
    return {"metadata": {"name": name}, "spec": {"selector": selector,
                                                 "ports": [{"name": "http", "port": 80, "targetPort": 8000}],
                                                 **spec}}


def test_endpoints_follow_pod_readiness(sim):
    sim.store.create("deployments", deployment("vllm", replicas=2, gpus=1))
    sim.store.create("services", _service("vllm", {"app": "vllm"}))
    sim.advance(30)
    (subset,) = sim.store.get("endpoints", "default", "vllm")["subsets"]
    assert len(subset["notReadyAddresses"]) == 2
    assert "addresses" not in subset
    assert subset["ports"] == [{"port": 8000, "protocol": "TCP", "name": "http"}]
    assert sim.run_until(lambda: deployment_ready(sim, "vllm"), timeout=600)
    (subset,) = sim.store.get("endpoints", "default", "vllm")["subsets"]
    assert len(subset["addresses"]) == 2
    assert subset["addresses"][0]["targetRef"]["kind"] == "Pod"
    sim.store.mutate("deployments", "default", "vllm", lambda d: d["spec"].__setitem__("replicas", 1))
    sim.settle()
    (subset,) = sim.store.get("endpoints", "default", "vllm")["subsets"]
    assert len(subset["addresses"]) == 1
    sim.store.delete("services", "default", "vllm")
    sim.settle()
    assert sim.store.try_get("endpoints", "default", "vllm") is None


def test_selectorless_service_endpoints_are_left_alone(sim):
    sim.store.create("services", {"metadata": {"name": "external"}, "spec": {"ports": [{"port": 443}]}})
    manual = {"metadata": {"name": "external"}, "subsets": [{"addresses": [{"ip": "192.0.2.10"}],
                                                             "ports": [{"port": 443}]}]}
    sim.store.create("endpoints", manual)
    sim.settle()
    assert sim.store.get("endpoints", "default", "external")["subsets"][0]["addresses"] == [{"ip": "192.0.2.10"}]
