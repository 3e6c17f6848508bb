"""The resource types kubesim serves, with what discovery, routing and field selectors need.

The store keys objects by the resource's plural (`pods`, `deployments`, …); plurals are unique
across the groups served here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    field_selectors: frozenset[str] = field(default=COMMON_FIELDS)
    has_status: bool = True  # a /status subresource owns .status; writes to the main resource keep it
    has_spec_generation: bool = True  # metadata.generation tracks spec changes

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


READ_ONLY = ("get", "list")
READ_WATCH = ("get", "list", "watch")

_POD_FIELDS = COMMON_FIELDS | {
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
}
_EVENT_FIELDS = COMMON_FIELDS | {
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
}

TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "namespace", "Namespace", False, short_names=("ns",),
                 subresources=("status",), field_selectors=COMMON_FIELDS | {"status.phase"},
                 has_spec_generation=False),
    ResourceType("", "v1", "nodes", "node", "Node", False, short_names=("no",), subresources=("status",),
                 field_selectors=COMMON_FIELDS | {"spec.unschedulable"}, has_spec_generation=False),
    ResourceType("", "v1", "pods", "pod", "Pod", True, short_names=("po",), categories=("all",),
                 subresources=("status", "eviction", "log", "binding"), field_selectors=_POD_FIELDS,
                 has_spec_generation=False),
    ResourceType("", "v1", "services", "service", "Service", True, short_names=("svc",),
                 categories=("all",), subresources=("status",), has_spec_generation=False),
    ResourceType("", "v1", "endpoints", "endpoints", "Endpoints", True, short_names=("ep",),
                 has_status=False, has_spec_generation=False),
    ResourceType("", "v1", "events", "event", "Event", True, short_names=("ev",),
                 field_selectors=_EVENT_FIELDS, has_status=False, has_spec_generation=False),
    ResourceType("apps", "v1", "deployments", "deployment", "Deployment", True, short_names=("deploy",),
                 categories=("all",), subresources=("status", "scale")),
    ResourceType("apps", "v1", "replicasets", "replicaset", "ReplicaSet", True, short_names=("rs",),
                 categories=("all",), subresources=("status", "scale")),
    ResourceType("apps", "v1", "daemonsets", "daemonset", "DaemonSet", True, short_names=("ds",),
                 categories=("all",), subresources=("status",)),
    ResourceType("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", True,
                 short_names=("pdb",), subresources=("status",)),
    ResourceType("coordination.k8s.io", "v1", "leases", "lease", "Lease", True, has_status=False,
                 has_spec_generation=False),
)

BY_PLURAL: dict[str, ResourceType] = {t.plural: t for t in TYPES}
BY_KIND: dict[str, ResourceType] = {t.kind: t for t in TYPES}


def resource(plural: str) -> ResourceType:
    return BY_PLURAL[plural]


def group_versions() -> dict[str, list[ResourceType]]:
    """Resource types by group-version, in the order discovery lists them."""
    out: dict[str, list[ResourceType]] = {}
    for rtype in TYPES:
        out.setdefault(rtype.group_version, []).append(rtype)
    return out
