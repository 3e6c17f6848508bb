"""Self-reviews for `kubectl auth can-i` and `kubectl auth whoami` (authorization/authentication.k8s.io/v1).

kubesim has no RBAC and no authentication, so every caller is the cluster admin: an access review is
always allowed, a rules review grants everything, and whoami names the admin with the groups a real
cluster-admin carries. A request without credentials is the admin too: the kubeconfig kubesim writes
holds a token, but client-go does not send bearer tokens over plain http, so kubectl's requests reach
kubesim with no Authorization header at all.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from kubesim import errors

AUTHORIZATION_GROUP_VERSION = "authorization.k8s.io/v1"
AUTHENTICATION_GROUP_VERSION = "authentication.k8s.io/v1"
ADMIN_USER = "kubesim-admin"
ADMIN_GROUPS = ["system:masters", "system:authenticated"]
ALLOWED_REASON = "kubesim has no RBAC"

# plural → kind, per group-version; all are create-only, cluster-scoped virtual resources.
REVIEWS: dict[str, dict[str, str]] = {
    AUTHORIZATION_GROUP_VERSION: {"selfsubjectaccessreviews": "SelfSubjectAccessReview",
                                  "selfsubjectrulesreviews": "SelfSubjectRulesReview"},
    AUTHENTICATION_GROUP_VERSION: {"selfsubjectreviews": "SelfSubjectReview"},
}


def resource_entries(group_version: str) -> list[dict[str, Any]]:
    """APIResourceList entries for one of the review group-versions."""
    return [{"name": plural, "singularName": kind.lower(), "namespaced": False, "kind": kind, "verbs": ["create"]}
            for plural, kind in REVIEWS.get(group_version, {}).items()]


def user_info(authorization: str | None) -> dict[str, Any]:
    """Who the caller is: basic auth keeps its username; a bearer token, or no credentials, is the admin."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() == "basic" and credentials.strip():
        try:
            username = base64.b64decode(credentials.strip(), validate=True).decode().split(":", 1)[0]
        except (binascii.Error, UnicodeDecodeError):
            username = ""
        if username:
            return {"username": username, "groups": list(ADMIN_GROUPS)}
    return {"username": ADMIN_USER, "groups": list(ADMIN_GROUPS)}


def review(group_version: str, plural: str, body: Any, authorization: str | None) -> dict[str, Any]:
    """Answer a POSTed review with its status filled in (the request's spec echoed, as the apiserver does)."""
    kind = REVIEWS.get(group_version, {}).get(plural)
    if kind is None:
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
    if not isinstance(body, dict):
        raise errors.bad_request(f"the body of a {kind} must be an object")
    sent_kind = body.get("kind")
    if sent_kind and sent_kind != kind:
        raise errors.bad_request(f"the kind in the data ({sent_kind}) does not match the URL ({kind})")
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    answer: dict[str, Any] = {"kind": kind, "apiVersion": group_version,
                              "metadata": {"creationTimestamp": None}}
    if kind == "SelfSubjectAccessReview":
        if not spec.get("resourceAttributes") and not spec.get("nonResourceAttributes"):
            raise errors.invalid(kind, "authorization.k8s.io", "", [
                ("spec.resourceAttributes", "FieldValueRequired",
                 "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified")])
        answer["spec"] = spec
        answer["status"] = {"allowed": True, "reason": ALLOWED_REASON}
    elif kind == "SelfSubjectRulesReview":
        answer["spec"] = spec
        answer["status"] = {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    else:
        answer["status"] = {"userInfo": user_info(authorization)}
    return answer
