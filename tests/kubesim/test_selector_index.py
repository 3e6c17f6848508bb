"""The indexes that let Services and PodDisruptionBudgets find their pods (and pods their selectors) without
testing every object of the namespace: they must answer exactly what a full scan answers."""

from __future__ import annotations

import random

from kubesim.clock import VirtualClock
from kubesim.selectors import (
    SelectorIndex,
    match_label_selector_object,
    parse_label_selector,
    required_labels,
    requirements_predicate,
)
from kubesim.store import Store
from tests.kubesim.test_controllers_support import bare_pod, deployment, deployment_ready, is_ready

LABEL_KEYS = ("app", "tier", "team")
LABEL_VALUES = ("a", "b", "c")


def _random_labels(rng: random.Random) -> dict[str, str]:
    return {key: rng.choice(LABEL_VALUES) for key in LABEL_KEYS if rng.random() < 0.7}


def _random_label_selector(rng: random.Random) -> dict | None:
    """metav1.LabelSelector shapes: absent, empty, matchLabels, matchExpressions, or both."""
    shape = rng.randrange(5)
    if shape == 0:
        return None
    if shape == 1:
        return {}
    selector: dict = {}
    if shape in (2, 4):
        selector["matchLabels"] = _random_labels(rng)
    if shape in (3, 4):
        operator = rng.choice(["In", "NotIn", "Exists", "DoesNotExist"])
        selector["matchExpressions"] = [{"key": rng.choice(LABEL_KEYS), "operator": operator,
                                         "values": rng.sample(LABEL_VALUES, 2)}]
    return selector


def test_selector_index_answers_what_testing_every_selector_answers():
    rng = random.Random(3)
    index = SelectorIndex(match_label_selector_object)
    selectors: dict[tuple[str, str], dict | None] = {}
    for step in range(600):
        key = (rng.choice(["ns-1", "ns-2"]), f"pdb-{rng.randrange(40)}")
        if rng.random() < 0.2:
            index.remove(key)
            selectors.pop(key, None)
        else:
            selector = _random_label_selector(rng)
            index.put(key, selector, (selector or {}).get("matchLabels"))
            selectors[key] = selector
        namespace, labels = rng.choice(["ns-1", "ns-2"]), _random_labels(rng)
        expected = sorted(key for key, selector in selectors.items()
                          if key[0] == namespace and match_label_selector_object(selector, labels))
        assert index.matching(namespace, labels) == expected, step


def test_selectors_sharing_labels_are_filed_apart():
    index = SelectorIndex(match_label_selector_object)
    for number in range(3):
        index.put(("ns", f"pdb-{number}"), None, {"tenant": "t1", "instance": f"i{number}"})
    # Every selector demands tenant=t1, yet only the one for instance i1 is a candidate for i1's pods.
    assert index.matching("ns", {"tenant": "t1", "instance": "i1"}) == [("ns", "pdb-1")]
    assert index.matching("ns", {"tenant": "t1"}) == []


def _store_with_random_pods(rng: random.Random, count: int) -> Store:
    """Pods ``pod-000``... with random labels, spread over the namespaces default and other."""
    store = Store(VirtualClock(start=1_800_000_000), seed=1)
    for namespace in ("default", "other"):
        store.create("namespaces", {"metadata": {"name": namespace}})
    for number in range(count):
        store.create("pods", bare_pod(f"pod-{number:03}", labels=_random_labels(rng)), rng.choice(["default", "other"]))
    return store


def test_pods_with_labels_follows_relabels_and_deletes():
    rng = random.Random(5)
    store = _store_with_random_pods(rng, 30)
    for number in range(0, 30, 3):
        namespace = "default" if store.try_get("pods", "default", f"pod-{number:03}") else "other"
        relabelled = _random_labels(rng)
        store.mutate("pods", namespace, f"pod-{number:03}", lambda pod, labels=relabelled: pod["metadata"].update(
            labels=labels))
    for number in range(0, 30, 7):
        for namespace in ("default", "other"):
            if store.try_get("pods", namespace, f"pod-{number:03}"):
                store.delete("pods", namespace, f"pod-{number:03}")
    for _ in range(50):
        namespace, wanted = rng.choice(["default", "other"]), _random_labels(rng) or {"app": "a"}
        expected = [pod for pod in store.list("pods", namespace)[0]
                    if all((pod["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())]
        assert store.pods_with_labels(namespace, wanted) == expected


def _random_selector_text(rng: random.Random) -> str:
    """A labelSelector query string mixing equality (which the label index serves) with the other operators."""
    parts = []
    for key in rng.sample(LABEL_KEYS, rng.randint(1, 3)):
        shape = rng.randrange(6)
        value = rng.choice(LABEL_VALUES)
        parts.append([f"{key}={value}", f"{key}=={value}", f"{key} in ({value})", f"{key}!={value}",
                      f"{key} in (a,b)", f"!{key}"][shape])
    return ",".join(parts)


def test_label_selected_pages_are_what_a_full_scan_pages():
    rng = random.Random(11)
    store = _store_with_random_pods(rng, 120)
    for number in range(0, 120, 4):
        for namespace in ("default", "other"):
            if store.try_get("pods", namespace, f"pod-{number:03}"):
                relabelled = _random_labels(rng)
                store.mutate("pods", namespace, f"pod-{number:03}", lambda pod, labels=relabelled: pod[
                    "metadata"].update(labels=labels))
    tested = {"hinted": 0, "without": 0}

    def counting(predicate, which):
        def test(obj):
            tested[which] += 1
            return predicate(obj)

        return test

    narrowed = 0
    for _ in range(200):
        namespace, text = rng.choice(["default", "other"]), _random_selector_text(rng)
        requirements = parse_label_selector(text)
        predicate, hint = requirements_predicate(requirements), required_labels(requirements)
        narrowed += bool(hint)
        limit, start_after, pages = rng.choice([0, 1, 3, 50]), None, 0
        while True:
            page = store.list_page("pods", namespace, counting(predicate, "hinted"), start_after=start_after,
                                   limit=limit, pod_labels=hint)
            expected = store.list_page("pods", namespace, counting(predicate, "without"), start_after=start_after,
                                       limit=limit)
            assert (page.items, page.more) == (expected.items, expected.more), (text, start_after)
            pages += 1
            if not page.more:
                break
            start_after = (namespace, page.items[-1]["metadata"]["name"])
        assert pages >= 1
    assert narrowed > 100  # most selectors had an equality the index could serve
    # ... and the index did serve them: far fewer pods were tested against the selector than a scan tests.
    assert tested["hinted"] < tested["without"] / 2


def _service(name: str, selector: dict) -> dict:
    return {"metadata": {"name": name}, "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8000}]}}


def _endpoint_names(sim, name: str) -> list[str]:
    subsets = sim.store.get("endpoints", "default", name).get("subsets") or []
    return sorted(a["targetRef"]["name"] for s in subsets for a in s.get("addresses") or [])


def test_endpoints_follow_a_service_whose_selector_changes(sim):
    for app in ("left", "right"):
        sim.store.create("deployments", deployment(app, replicas=1, gpus=1))
    sim.store.create("services", _service("front", {"app": "left"}))
    assert sim.run_until(lambda: deployment_ready(sim, "left") and deployment_ready(sim, "right"), timeout=600)
    right_pods = [p["metadata"]["name"] for p in sim.store.list("pods", "default")[0]
                  if p["metadata"]["labels"]["app"] == "right"]
    assert _endpoint_names(sim, "front") != right_pods
    sim.store.mutate("services", "default", "front", lambda s: s["spec"].update(selector={"app": "right"}))
    sim.settle()
    assert _endpoint_names(sim, "front") == right_pods
    # A pod event after the change reaches the Service through its new selector: the old pod leaves the
    # endpoints as soon as it is deleted and its replacement joins once Ready.
    sim.store.delete("pods", "default", right_pods[0], grace_period_seconds=0)
    sim.settle()
    assert right_pods[0] not in _endpoint_names(sim, "front")
    assert sim.run_until(lambda: len(_endpoint_names(sim, "front")) == 1, timeout=600)


def test_indexes_are_rebuilt_after_a_restore(sim):
    sim.store.create("deployments", deployment("web", replicas=2, gpus=1))
    sim.store.create("services", _service("web", {"app": "web"}))
    sim.store.create("poddisruptionbudgets", {"metadata": {"name": "web"}, "spec": {
        "maxUnavailable": 1, "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}}})
    snapshot = sim.snapshot()
    sim.reset()
    sim.restore(snapshot)
    assert sim.run_until(lambda: deployment_ready(sim, "web"), timeout=600)
    assert len(_endpoint_names(sim, "web")) == 2
    status = sim.store.get("poddisruptionbudgets", "default", "web")["status"]
    assert (status["currentHealthy"], status["expectedPods"], status["disruptionsAllowed"]) == (2, 2, 1)


def test_budget_counts_only_pods_matching_all_of_its_selector(sim):
    sim.store.create("pods", bare_pod("match", labels={"app": "db", "tier": "primary"}))
    sim.store.create("pods", bare_pod("other-tier", labels={"app": "db", "tier": "replica"}))
    sim.store.create("poddisruptionbudgets", {"metadata": {"name": "db"}, "spec": {
        "minAvailable": 0, "selector": {"matchLabels": {"app": "db"},
                                        "matchExpressions": [{"key": "tier", "operator": "NotIn",
                                                              "values": ["replica"]}]}}})
    assert sim.run_until(lambda: is_ready(sim.store.get("pods", "default", "match")), timeout=600)
    status = sim.store.get("poddisruptionbudgets", "default", "db")["status"]
    assert (status["currentHealthy"], status["expectedPods"]) == (1, 1)
