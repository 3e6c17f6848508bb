"""Label and field selectors, parsed as the apiserver parses them (kubesim-reference §3.6).

Parsing happens once per request; the result is a predicate over stored objects. Anything the
apiserver would reject becomes a 400 BadRequest with an apiserver-shaped message, because clients
that build selectors by string concatenation must fail here exactly as they would on a cluster.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubesim import errors
from kubesim.resources import ResourceType

Obj = dict[str, Any]
Predicate = Callable[[Obj], bool]

# A label key is an optional DNS-subdomain prefix and a name of at most 63 characters.
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY_RE = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}\Z")
_VALUE_RE = re.compile(rf"^({_NAME})?\Z")
_TOKEN_RE = re.compile(r"\s*(!=|==|=|\(|\)|,|!|[^\s!=(),]+)")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # = != in notin exists !exists
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!exists":
            return not present
        if self.operator in ("=", "in"):
            return present and labels[self.key] in self.values
        # != and notin also match objects without the key, as labels.Selector does.
        return not present or labels[self.key] not in self.values


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise errors.bad_request(f"unable to parse requirement: invalid selector: {text!r}")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


def _check_key(key: str, selector: str) -> None:
    if not _KEY_RE.match(key):
        raise errors.bad_request(
            f'unable to parse requirement: values[0][{key}]: Invalid value: "{key}": name part must consist of '
            "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character "
            f"(in selector {selector!r})"
        )


def _check_value(value: str, selector: str) -> None:
    if not _VALUE_RE.match(value):
        raise errors.bad_request(
            f'unable to parse requirement: values[0]: Invalid value: "{value}": a valid label must be an empty '
            "string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            f"alphanumeric character (in selector {selector!r})"
        )


def parse_label_selector(selector: str | None) -> list[Requirement]:
    """`a=b,c in (x,y),!d` → requirements (ANDed). Raises 400 on anything unparsable."""
    if not selector or not selector.strip():
        return []
    tokens = _tokens(selector)
    requirements: list[Requirement] = []
    i = 0

    def bad(why: str) -> errors.ApiError:
        return errors.bad_request(f"unable to parse requirement: {why} (in selector {selector!r})")

    while i < len(tokens):
        token = tokens[i]
        if token == "!":  # noqa: S105 (a selector token, not a secret)
            if i + 1 >= len(tokens):
                raise bad("found '', expected: identifier")
            key = tokens[i + 1]
            _check_key(key, selector)
            requirements.append(Requirement(key, "!exists"))
            i += 2
        elif token in ("=", "==", "!=", "(", ")", ","):
            raise bad(f"found '{token}', expected: !, identifier, or 'end of string'")
        else:
            key = token
            _check_key(key, selector)
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if nxt is None or nxt == ",":
                requirements.append(Requirement(key, "exists"))
                i += 1
            elif nxt in ("=", "==", "!="):
                value = tokens[i + 2] if i + 2 < len(tokens) else ""
                if value in ("=", "==", "!=", "(", ")", "!"):
                    raise bad(f"found '{value}', expected: identifier")
                if value == ",":
                    value = ""
                    i += 2
                else:
                    i += 3 if i + 2 < len(tokens) else 2
                _check_value(value, selector)
                requirements.append(Requirement(key, "!=" if nxt == "!=" else "=", (value,)))
            elif nxt in ("in", "notin"):
                if i + 2 >= len(tokens) or tokens[i + 2] != "(":
                    raise bad("found '', expected: '('")
                j = i + 3
                values: list[str] = []
                expecting_value = True
                while j < len(tokens) and tokens[j] != ")":
                    if tokens[j] == ",":
                        if expecting_value:
                            values.append("")
                        expecting_value = True
                    elif expecting_value:
                        _check_value(tokens[j], selector)
                        values.append(tokens[j])
                        expecting_value = False
                    else:
                        raise bad(f"found '{tokens[j]}', expected: ',', or ')'")
                    j += 1
                if j >= len(tokens):
                    raise bad("found '', expected: ')'")
                if not values:
                    raise bad("for 'in', 'notin' operators, values set can't be empty")
                requirements.append(Requirement(key, nxt, tuple(values)))
                i = j + 1
            else:
                raise bad(f"found '{nxt}', expected: in, notin, =, ==, !=, gt, lt, or ','")
        if i < len(tokens):
            if tokens[i] != ",":
                raise bad(f"found '{tokens[i]}', expected: ',' or 'end of string'")
            i += 1
            if i >= len(tokens):
                raise bad("found '', expected: identifier after ','")
    return requirements


def label_predicate(selector: str | None) -> Predicate | None:
    return requirements_predicate(parse_label_selector(selector))


def requirements_predicate(requirements: list[Requirement]) -> Predicate | None:
    """The predicate of parsed requirements (None for none: everything matches)."""
    if not requirements:
        return None

    def predicate(obj: Obj) -> bool:
        labels = obj["metadata"].get("labels") or {}
        return all(r.matches(labels) for r in requirements)

    return predicate


def required_labels(requirements: list[Requirement]) -> dict[str, str]:
    """The labels every match carries: one per `a=b` (or single-valued `a in (b)`) requirement."""
    return {r.key: r.values[0] for r in requirements if r.operator in ("=", "in") and len(r.values) == 1}


def match_label_selector_object(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """metav1.LabelSelector (matchLabels + matchExpressions) against labels; empty selects everything."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def selector_to_string(selector: dict[str, Any] | None) -> str:
    """metav1.LabelSelector → the string form (`app=x,tier in (a,b)`), as Scale.status.selector carries."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


# ----------------------------------------------------------------------------- field selectors


def _field_value(obj: Obj, path: str) -> str:
    if path == "metadata.namespace":
        return obj["metadata"].get("namespace", "")
    if path == "source":  # events: source.component
        return (obj.get("source") or {}).get("component", "")
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if value is None:
        # The apiserver's field sets render absent booleans as "false" and absent strings as "".
        return "false" if path in ("spec.unschedulable", "spec.hostNetwork") else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class FieldSelection:
    predicate: Predicate | None
    node_name: str | None  # spec.nodeName=X on pods: answered from the store's node index


def parse_field_selector(selector: str | None, rtype: ResourceType) -> FieldSelection:
    """`spec.nodeName=n1,status.phase!=Failed` → predicate; 400 on unknown fields or operators."""
    if not selector or not selector.strip():
        return FieldSelection(None, None)
    terms: list[tuple[str, bool, str]] = []
    for raw in selector.split(","):
        term = raw.strip()
        if not term:
            continue
        for op in ("!=", "==", "="):
            if op in term:
                field, value = term.split(op, 1)
                field = field.strip()
                negate = op == "!="
                break
        else:
            raise errors.bad_request(f"invalid selector: '{selector}'; can't understand '{term}'")
        if field not in rtype.field_selectors:
            raise errors.bad_request(f'field label not supported: {field}')
        terms.append((field, negate, value.strip()))
    node_name = None
    for field, negate, value in terms:
        if rtype.plural == "pods" and field == "spec.nodeName" and not negate and value:
            node_name = value

    def predicate(obj: Obj) -> bool:
        return all((_field_value(obj, field) == value) != negate for field, negate, value in terms)

    return FieldSelection(predicate, node_name)


def combine(*predicates: Predicate | None) -> Predicate | None:
    active = [p for p in predicates if p is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]
    return lambda obj: all(p(obj) for p in active)


# ----------------------------------------------------------------------------- selector index

IndexKey = tuple[str, str]  # (namespace, name) of the object that owns a selector
Anchor = tuple[str, str, str]  # (namespace, label key, label value)


class SelectorIndex:
    """Which objects' label selectors select a given set of labels, without testing every selector.

    Controllers ask this on every pod event ("which Services / budgets select this pod?"); testing each
    selector of the namespace made that cost grow with the number of deployments. A selector that
    requires fixed labels is filed under one of them, the one the fewest selectors are filed under at
    that moment, so selectors sharing most labels (every Service of one tenant) still land in separate
    buckets. A query gathers the buckets of the labels it carries, plus the selectors that require no
    fixed label (an empty selector, or matchExpressions alone), and tests only those with `matches`.
    Any selector that selects the labels requires each of its fixed labels, its anchor included, so
    the answer is the same as testing every selector.
    """

    def __init__(self, matches: Callable[[Any, dict[str, str]], bool]) -> None:
        self._matches = matches
        self._selectors: dict[IndexKey, tuple[Any, Anchor | None]] = {}
        self._anchored: dict[Anchor, set[IndexKey]] = {}
        self._unanchored: dict[str, set[IndexKey]] = {}

    def put(self, key: IndexKey, selector: Any, required_labels: Any) -> None:
        """File `selector` (tested with `matches`) for object `key`; `required_labels` are labels it demands."""
        self.remove(key)
        namespace = key[0]
        anchors = [(namespace, label, value) for label, value in required_labels.items()
                   if isinstance(value, str)] if isinstance(required_labels, dict) else []
        anchor = min(anchors, key=lambda a: (len(self._anchored.get(a, ())), a)) if anchors else None
        if anchor is None:
            self._unanchored.setdefault(namespace, set()).add(key)
        else:
            self._anchored.setdefault(anchor, set()).add(key)
        self._selectors[key] = (selector, anchor)

    def remove(self, key: IndexKey) -> None:
        entry = self._selectors.pop(key, None)
        if entry is None:
            return
        anchor = entry[1]
        bucket_key: Any = key[0] if anchor is None else anchor
        buckets: dict[Any, set[IndexKey]] = self._unanchored if anchor is None else self._anchored
        bucket = buckets[bucket_key]
        bucket.discard(key)
        if not bucket:
            del buckets[bucket_key]

    def matching(self, namespace: str, labels: dict[str, str]) -> list[IndexKey]:
        """Keys, sorted, of the objects in `namespace` whose selector selects `labels`."""
        candidates = set(self._unanchored.get(namespace, ()))
        for label, value in labels.items():
            if isinstance(value, str):
                bucket = self._anchored.get((namespace, label, value))
                if bucket:
                    candidates.update(bucket)
        return sorted(key for key in candidates if self._matches(self._selectors[key][0], labels))
