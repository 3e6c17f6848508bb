"""Discovery documents (kubesim-reference §3.1): /version, /api, /apis, /apis/{g}, APIResourceLists.

Only the legacy (non-aggregated) documents are served; client-go falls back to them when /api and
/apis answer plain `application/json`. Two details matter to kubectl: `pods/eviction` must carry both
group and version (else drain silently bypasses PDBs), and `deployments/scale` is autoscaling/v1 Scale.
"""

from __future__ import annotations

from typing import Any

from kubesim import auth_reviews
from kubesim.resources import TYPES, ResourceType, group_versions

KUBE_VERSION = "v1.34.1"
METRICS_GROUP = "metrics.k8s.io"
METRICS_VERSION = "v1beta1"
METRICS_GROUP_VERSION = f"{METRICS_GROUP}/{METRICS_VERSION}"

# Subresources whose kind/group differ from the parent resource's.
_SUBRESOURCE_SHAPES: dict[str, dict[str, Any]] = {
    "eviction": {"group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]},
    "scale": {"group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]},
    "binding": {"kind": "Binding", "verbs": ["create"]},
    "log": {"kind": "Pod", "verbs": ["get"]},
}


def version() -> dict[str, Any]:
    return {
        "major": "1",
        "minor": KUBE_VERSION.split(".")[1],
        "emulationMajor": "1",
        "emulationMinor": KUBE_VERSION.split(".")[1],
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": str(int(KUBE_VERSION.split(".")[1]) - 1),
        "gitVersion": KUBE_VERSION,
        "gitCommit": "93248f9ae092f571eb870b7664c534bfc7d00f03",
        "gitTreeState": "clean",
        "buildDate": "2025-09-09T19:44:50Z",
        "goVersion": "go1.24.6",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions() -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
    }


def _groups() -> dict[str, list[str]]:
    """group name → versions, API groups only (the core group lives under /api)."""
    out: dict[str, list[str]] = {}
    for rtype in TYPES:
        if rtype.group:
            versions = out.setdefault(rtype.group, [])
            if rtype.version not in versions:
                versions.append(rtype.version)
    out.setdefault(METRICS_GROUP, [METRICS_VERSION])
    for group_version in auth_reviews.REVIEWS:  # create-only review APIs (`kubectl auth can-i|whoami`)
        name, review_version = group_version.split("/")
        out.setdefault(name, [review_version])
    return out


def _group_doc(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def group_list() -> dict[str, Any]:
    """The APIGroupList. metrics.k8s.io stays listed when unavailable, as an APIService that is down does."""
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group_doc(name, versions) for name, versions in _groups().items()]}


def group(name: str) -> dict[str, Any] | None:
    versions = _groups().get(name)
    if versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(name, versions)}


def _resource_entries(rtype: ResourceType) -> list[dict[str, Any]]:
    main: dict[str, Any] = {
        "name": rtype.plural,
        "singularName": rtype.singular,
        "namespaced": rtype.namespaced,
        "kind": rtype.kind,
        "verbs": list(rtype.verbs),
        "storageVersionHash": "",
    }
    if rtype.short_names:
        main["shortNames"] = list(rtype.short_names)
    if rtype.categories:
        main["categories"] = list(rtype.categories)
    entries = [main]
    for sub in rtype.subresources:
        shape = _SUBRESOURCE_SHAPES.get(sub, {"kind": rtype.kind, "verbs": ["get", "patch", "update"]})
        entry: dict[str, Any] = {"name": f"{rtype.plural}/{sub}", "singularName": "", "namespaced": rtype.namespaced,
                                 "kind": shape["kind"], "verbs": list(shape["verbs"])}
        if "group" in shape:
            entry["group"] = shape["group"]
            entry["version"] = shape["version"]
        entries.append(entry)
    return entries


def resource_list(group_version: str) -> dict[str, Any] | None:
    if group_version == METRICS_GROUP_VERSION:
        return metrics_resource_list()
    if group_version in auth_reviews.REVIEWS:
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                "resources": auth_reviews.resource_entries(group_version)}
    types = group_versions().get(group_version)
    if types is None:
        return None
    resources: list[dict[str, Any]] = []
    for rtype in types:
        resources.extend(_resource_entries(rtype))
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


def metrics_resource_list() -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": METRICS_GROUP_VERSION,
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": False, "kind": "NodeMetrics",
             "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": True, "kind": "PodMetrics", "verbs": ["get", "list"]},
        ],
    }
