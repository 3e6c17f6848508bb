"""API-level fault injection and the request log (kubesim-reference §4.7).

Rules match requests by method, path regex, resource, verb, namespace and name; they fire a limited
number of times (`count`) and/or with a seeded `probability`. Actions: a Status error (with or without
Retry-After), added latency, or a dropped connection. The request log records every request so tests
can assert wire contracts ("the drain used eviction", "it backed off after a 429").
"""

from __future__ import annotations

import random
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kubesim import errors

ERROR_STATUSES = {
    500: ("InternalError", "Internal error occurred: injected fault"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    429: ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
    409: ("Conflict", "Operation cannot be fulfilled: the object has been modified; please apply your changes "
                      "to the latest version and try again"),
    410: ("Expired", "the resourceVersion for the provided list is too old"),
    504: ("Timeout", "the server was unable to return a response in the time allotted, but may still be "
                     "processing the request"),
    403: ("Forbidden", "forbidden: injected fault"),
    400: ("BadRequest", "injected fault"),
    404: ("NotFound", "the server could not find the requested resource"),
}
RULE_KEYS = frozenset({"method", "path", "resource", "verb", "namespace", "name", "count", "probability", "action"})
MATCH_KEYS = ("method", "resource", "verb", "namespace", "name")


@dataclass
class Fault:
    """What to do to one request: exactly one of `error`, `latency`, `drop` is meaningful."""

    rule_id: str
    error: errors.ApiError | None = None
    latency: float = 0.0
    drop: bool = False


@dataclass
class _Rule:
    id: str
    spec: dict[str, Any]
    path_re: re.Pattern[str] | None
    remaining: int | None
    fired: int = 0


def validate_rule(rule: Any) -> dict[str, Any]:
    """Check a rule dict; raises 400 BadRequest describing the first problem."""
    if not isinstance(rule, dict):
        raise errors.bad_request("a fault rule must be a JSON object")
    unknown = set(rule) - RULE_KEYS
    if unknown:
        raise errors.bad_request(f"unknown fault rule fields: {sorted(unknown)}")
    action = rule.get("action")
    if not isinstance(action, dict):
        raise errors.bad_request("fault rule needs an 'action' object")
    kinds = [k for k in ("status", "latency", "drop") if k in action]
    if len(kinds) != 1:
        raise errors.bad_request("fault action needs exactly one of 'status', 'latency', 'drop'")
    if "status" in action and action["status"] not in ERROR_STATUSES:
        raise errors.bad_request(f"unsupported fault status {action['status']!r}; use one of {sorted(ERROR_STATUSES)}")
    if "latency" in action and (not isinstance(action["latency"], int | float) or action["latency"] < 0):
        raise errors.bad_request("fault latency must be a non-negative number of seconds")
    if "drop" in action and action["drop"] is not True:
        raise errors.bad_request("fault drop must be true")
    if "retry_after" in action and (not isinstance(action["retry_after"], int) or action["retry_after"] < 0):
        raise errors.bad_request("retry_after must be a non-negative integer")
    if "count" in rule and (not isinstance(rule["count"], int) or rule["count"] < 1):
        raise errors.bad_request("count must be a positive integer")
    probability = rule.get("probability")
    if probability is not None and (not isinstance(probability, int | float) or not 0 <= probability <= 1):
        raise errors.bad_request("probability must be between 0 and 1")
    for key in (*MATCH_KEYS, "path"):
        if key in rule and not isinstance(rule[key], str):
            raise errors.bad_request(f"{key} must be a string")
    if "path" in rule:
        try:
            re.compile(rule["path"])
        except re.error as exc:
            raise errors.bad_request(f"invalid path regex: {exc}") from exc
    return rule


class FaultInjector:
    """Thread-safe rule set; `match` is called once per request before routing."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._rng = random.Random(seed)
        self._next_id = 1

    def add(self, rule: dict[str, Any]) -> str:
        rule = validate_rule(rule)
        with self._lock:
            rule_id = f"fault-{self._next_id}"
            self._next_id += 1
            path_re = re.compile(rule["path"]) if "path" in rule else None
            self._rules.append(_Rule(rule_id, dict(rule), path_re, rule.get("count")))
            return rule_id

    def remove(self, rule_id: str) -> None:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            if len(self._rules) == before:
                raise errors.ApiError(404, "NotFound", f'fault "{rule_id}" not found')

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"id": r.id, **r.spec, "fired": r.fired, "remaining": r.remaining} for r in self._rules]

    def match(self, method: str, path: str, plural: str | None = None, verb: str | None = None,
              namespace: str | None = None, name: str | None = None) -> Fault | None:
        request = {"method": method.upper(), "resource": plural, "verb": verb, "namespace": namespace, "name": name}
        with self._lock:
            for rule in self._rules:
                spec = rule.spec
                if any(key in spec and (spec[key].upper() if key == "method" else spec[key]) != request[key]
                       for key in MATCH_KEYS):
                    continue
                if rule.path_re is not None and not rule.path_re.search(path):
                    continue
                if "probability" in spec and self._rng.random() >= spec["probability"]:
                    continue
                rule.fired += 1
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                return self._fault(rule)
        return None

    @staticmethod
    def _fault(rule: _Rule) -> Fault:
        action = rule.spec["action"]
        if "latency" in action:
            return Fault(rule.id, latency=float(action["latency"]))
        if "drop" in action:
            return Fault(rule.id, drop=True)
        code = action["status"]
        reason, default_message = ERROR_STATUSES[code]
        headers: dict[str, str] = {}
        details: dict[str, Any] | None = None
        if "retry_after" in action:
            headers["Retry-After"] = str(action["retry_after"])
            details = {"retryAfterSeconds": action["retry_after"]}
        return Fault(rule.id, error=errors.ApiError(code, reason, action.get("message") or default_message,
                                                    details, headers))


@dataclass
class RequestRecord:
    method: str
    path: str
    query: str
    status: int
    duration: float
    time: float  # wall-clock epoch seconds
    sim_time: float
    content_type: str = ""
    fault: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {"method": self.method, "path": self.path, "query": self.query, "status": self.status,
               "duration": round(self.duration, 6), "time": self.time, "sim_time": self.sim_time,
               "content_type": self.content_type}
        if self.fault:
            out["fault"] = self.fault
        return out


class RequestLog:
    """A bounded, thread-safe log of every request the server answered (or dropped)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[RequestRecord] = deque(maxlen=max_entries)

    def record(self, entry: RequestRecord) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self, method: str | None = None, path_regex: str | None = None) -> list[RequestRecord]:
        pattern = re.compile(path_regex) if path_regex else None
        with self._lock:
            items = list(self._entries)
        return [e for e in items if (method is None or e.method == method.upper())
                and (pattern is None or pattern.search(e.path))]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

