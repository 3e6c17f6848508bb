"""A Prometheus-compatible instant-query API over the simulated cluster's GPU and vLLM metrics.

Real clusters expose GPU utilisation through NVIDIA's DCGM exporter and vLLM's own `/metrics`, both
scraped by Prometheus; the service reads them with PromQL. kubesim serves the same series, computed
from the load model (kubesim/load.py) at the sim clock's current instant:

- `DCGM_FI_DEV_GPU_UTIL` (percent), `DCGM_FI_DEV_FB_USED` and `DCGM_FI_DEV_FB_FREE` (MiB), one series per
  physical GPU of every reachable GPU node, labelled as dcgm-exporter labels them (`gpu`, `UUID`,
  `device`, `modelName`, `Hostname`) plus `namespace`/`pod`/`container` for GPUs allocated to a pod;
- `vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:gpu_cache_usage_perc`, one series per
  Ready model-server pod (`namespace`, `pod`, `model_name`, `instance`).

Only a PromQL subset is understood (see `parse` and kubesim/README.md). Anything outside it is refused
with Prometheus's `bad_data` error rather than answered approximately: a wrong number would be silently
trusted, an error is seen. kubesim keeps no history, so every instant query is answered from the current
state, stamped with the requested `time` (or the sim's now).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import heapq
import math
import operator
import re
import threading
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from kubesim.load import GPU_RESOURCE, LoadContext, container_requests, parse_quantity, pod_load, shared_context

Obj = dict[str, Any]
Labels = dict[str, str]

# --------------------------------------------------------------------------- PromQL: syntax tree

AGGREGATORS = ("sum", "avg", "max", "min", "count")
UNSUPPORTED_AGGREGATORS = ("topk", "bottomk", "quantile", "stddev", "stdvar", "count_values", "group",
                           "limitk", "limit_ratio")


class PromQLError(Exception):
    """A query outside the supported subset or malformed; rendered as Prometheus's bad_data error."""


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # = != =~ !~
    value: str
    regex: re.Pattern[str] | None = None

    def matches(self, labels: Labels) -> bool:
        actual = labels.get(self.name, "")  # a missing label matches as the empty string, as in Prometheus
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.regex is not None
        found = self.regex.fullmatch(actual) is not None  # Prometheus anchors regexes at both ends
        return found if self.op == "=~" else not found


@dataclass(frozen=True)
class VectorSelector:
    matchers: tuple[Matcher, ...]

    @property
    def metric_name(self) -> str | None:
        for matcher in self.matchers:
            if matcher.name == "__name__" and matcher.op == "=":
                return matcher.value
        return None


@dataclass(frozen=True)
class NumberLiteral:
    value: float


@dataclass(frozen=True)
class Aggregation:
    op: str
    expr: Expr
    grouping: tuple[str, ...] = ()
    without: bool = False
    has_grouping: bool = False


Expr = VectorSelector | NumberLiteral | Aggregation

# --------------------------------------------------------------------------- PromQL: lexer


@dataclass(frozen=True)
class Token:
    kind: str  # IDENT NUMBER STRING OP PUNCT EOF
    text: str
    pos: int


_NUMBER_RE = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OPERATORS = ("!=", "=~", "!~", "==", ">=", "<=", "=", "+", "-", "*", "/", "%", "^", ">", "<")
_PUNCTUATION = "{}()[],@"
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
            '"': '"', "'": "'"}


def _position(query: str, pos: int) -> str:
    line = query.count("\n", 0, pos) + 1
    column = pos - (query.rfind("\n", 0, pos) + 1) + 1
    return f"{line}:{column}"


def _error(query: str, pos: int, message: str) -> PromQLError:
    return PromQLError(f"{_position(query, pos)}: parse error: {message}")


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(query):
        char = query[pos]
        if char.isspace():
            pos += 1
            continue
        if char == "#":  # a comment runs to the end of the line
            newline = query.find("\n", pos)
            pos = len(query) if newline < 0 else newline
            continue
        if char in "\"'`":
            text, end = _read_string(query, pos)
            tokens.append(Token("STRING", text, pos))
            pos = end
            continue
        number = _NUMBER_RE.match(query, pos)
        if number and (char.isdigit() or char == "."):
            tokens.append(Token("NUMBER", number.group(), pos))
            pos = number.end()
            continue
        ident = _IDENT_RE.match(query, pos)
        if ident:
            tokens.append(Token("IDENT", ident.group(), pos))
            pos = ident.end()
            continue
        operator = next((op for op in _OPERATORS if query.startswith(op, pos)), None)
        if operator:
            tokens.append(Token("OP", operator, pos))
            pos += len(operator)
            continue
        if char in _PUNCTUATION:
            tokens.append(Token("PUNCT", char, pos))
            pos += 1
            continue
        raise _error(query, pos, f"unexpected character: {char!r}")
    tokens.append(Token("EOF", "", len(query)))
    return tokens


def _read_string(query: str, start: int) -> tuple[str, int]:
    quote = query[start]
    pos = start + 1
    out: list[str] = []
    while pos < len(query):
        char = query[pos]
        if char == quote:
            return "".join(out), pos + 1
        if quote != "`" and char == "\\":
            pos += 1
            if pos >= len(query):
                break
            escape = query[pos]
            if escape in _ESCAPES:
                out.append(_ESCAPES[escape])
                pos += 1
            elif escape in "uU" or escape == "x":
                width = {"x": 2, "u": 4, "U": 8}[escape]
                digits = query[pos + 1 : pos + 1 + width]
                if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                    raise _error(query, pos - 1, "invalid escape sequence in string")
                out.append(chr(int(digits, 16)))
                pos += 1 + width
            else:
                raise _error(query, pos - 1, f"unknown escape sequence {escape!r}")
            continue
        if char == "\n" and quote != "`":
            break
        out.append(char)
        pos += 1
    raise _error(query, start, "unterminated quoted string")


# --------------------------------------------------------------------------- PromQL: parser


class _Parser:
    """Recursive descent over the grammar:

        expr        := aggregation | selector | number
        aggregation := AGGREGATOR grouping? "(" expr ")" grouping?      (at most one grouping)
        grouping    := ("by" | "without") "(" [label ("," label)* [","]] ")"
        selector    := metric_name ["{" matchers "}"] | "{" matchers "}"
        matchers    := [matcher ("," matcher)* [","]]
        matcher     := label ("=" | "!=" | "=~" | "!~") string
        number      := ["+" | "-"] (decimal | hex | "Inf" | "NaN")
    """

    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = tokenize(query)
        self.index = 0

    def peek(self, offset: int = 0) -> Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.peek()
        self.index += 1
        return token

    def error(self, token: Token, message: str) -> PromQLError:
        return _error(self.query, token.pos, message)

    def expect(self, kind: str, text: str | None = None) -> Token:
        token = self.take()
        if token.kind != kind or (text is not None and token.text != text):
            wanted = repr(text) if text is not None else kind.lower()
            raise self.error(token, f"unexpected {self.describe(token)}, expected {wanted}")
        return token

    @staticmethod
    def describe(token: Token) -> str:
        return "end of input" if token.kind == "EOF" else repr(token.text)

    def parse(self) -> Expr:
        if self.peek().kind == "EOF":
            raise self.error(self.peek(), "no expression found in input")
        expr = self.expression()
        token = self.peek()
        if token.kind != "EOF":
            raise self.error(token, self.unsupported_after_expression(token))
        return expr

    def unsupported_after_expression(self, token: Token) -> str:
        if token.kind == "OP" and token.text not in ("=", "=~", "!~"):
            return f"binary operator {token.text!r} is not supported by kubesim's PromQL subset"
        if token.kind == "PUNCT" and token.text == "[":
            return "range vectors and subqueries are not supported by kubesim's PromQL subset"
        if token.kind == "PUNCT" and token.text == "@":
            return "the @ modifier is not supported by kubesim's PromQL subset"
        if token.kind == "IDENT" and token.text in ("offset", "and", "or", "unless", "bool", "on", "ignoring",
                                                     "group_left", "group_right"):
            return f"{token.text!r} is not supported by kubesim's PromQL subset"
        return f"unexpected {self.describe(token)}"

    def expression(self) -> Expr:
        token = self.peek()
        if token.kind == "NUMBER" or (token.kind == "OP" and token.text in "+-"):
            return self.number()
        if token.kind == "IDENT":
            name = token.text
            if name in AGGREGATORS:
                return self.aggregation()
            if name in UNSUPPORTED_AGGREGATORS:
                raise self.error(token, f"aggregation {name!r} is not supported by kubesim's PromQL subset")
            if name.lower() in ("inf", "nan"):
                return self.number()
            if self.peek(1).kind == "PUNCT" and self.peek(1).text == "(":
                raise self.error(token, f"function {name!r} is not supported by kubesim's PromQL subset")
            if name in ("by", "without"):
                raise self.error(token, f"unexpected {name!r}")
            return self.selector()
        if token.kind == "PUNCT" and token.text == "{":
            return self.selector()
        if token.kind == "PUNCT" and token.text == "(":
            raise self.error(token, "parenthesised expressions are not supported by kubesim's PromQL subset")
        if token.kind == "STRING":
            raise self.error(token, "string literals are not supported by kubesim's PromQL subset")
        raise self.error(token, f"unexpected {self.describe(token)}")

    def number(self) -> NumberLiteral:
        sign = 1.0
        token = self.peek()
        if token.kind == "OP":
            self.take()
            sign = -1.0 if token.text == "-" else 1.0
            token = self.peek()
        token = self.take()
        if token.kind == "NUMBER":
            text = token.text
            value = float(int(text, 16)) if text[:2].lower() == "0x" else float(text)
        elif token.kind == "IDENT" and token.text.lower() in ("inf", "nan"):
            value = math.inf if token.text.lower() == "inf" else math.nan
        else:
            raise self.error(token, "unary operators are only supported on number literals in kubesim's subset")
        return NumberLiteral(sign * value)

    def aggregation(self) -> Aggregation:
        op_token = self.take()
        grouping: tuple[str, ...] = ()
        without = False
        has_grouping = False
        if self.peek().kind == "IDENT" and self.peek().text in ("by", "without"):
            without, grouping = self.grouping()
            has_grouping = True
        self.expect("PUNCT", "(")
        if self.peek().kind == "PUNCT" and self.peek().text == ")":
            raise self.error(self.peek(), f"no arguments for aggregate expression provided to {op_token.text!r}")
        inner = self.expression()
        closing = self.peek()
        if closing.kind == "PUNCT" and closing.text == ",":
            raise self.error(closing, f"wrong number of arguments for aggregate expression {op_token.text!r}")
        if not (closing.kind == "PUNCT" and closing.text == ")"):
            raise self.error(closing, self.unsupported_after_expression(closing))
        self.take()
        if self.peek().kind == "IDENT" and self.peek().text in ("by", "without"):
            if has_grouping:
                raise self.error(self.peek(), "aggregation can only have one grouping clause")
            without, grouping = self.grouping()
            has_grouping = True
        if not isinstance(inner, VectorSelector | Aggregation):
            raise self.error(op_token, "expected type instant vector in aggregation expression, got scalar")
        return Aggregation(op_token.text, inner, grouping, without, has_grouping)

    def grouping(self) -> tuple[bool, tuple[str, ...]]:
        keyword = self.take()
        self.expect("PUNCT", "(")
        labels: list[str] = []
        while not (self.peek().kind == "PUNCT" and self.peek().text == ")"):
            token = self.take()
            if token.kind != "IDENT" or not _LABEL_NAME_RE.fullmatch(token.text):
                raise self.error(token, f"unexpected {self.describe(token)} in grouping opts, expected label")
            labels.append(token.text)
            separator = self.peek()
            if separator.kind == "PUNCT" and separator.text == ",":
                self.take()
            elif not (separator.kind == "PUNCT" and separator.text == ")"):
                raise self.error(separator, f"unexpected {self.describe(separator)} in grouping opts, expected ','")
        self.take()
        return keyword.text == "without", tuple(labels)

    def selector(self) -> VectorSelector:
        start = self.peek()
        matchers: list[Matcher] = []
        if start.kind == "IDENT":
            self.take()
            matchers.append(Matcher("__name__", "=", start.text))
        if self.peek().kind == "PUNCT" and self.peek().text == "{":
            self.take()
            while not (self.peek().kind == "PUNCT" and self.peek().text == "}"):
                matchers.append(self.matcher())
                separator = self.peek()
                if separator.kind == "PUNCT" and separator.text == ",":
                    self.take()
                elif not (separator.kind == "PUNCT" and separator.text == "}"):
                    raise self.error(separator, f"unexpected {self.describe(separator)} in label matching, "
                                                "expected ',' or '}'")
            self.take()
        if start.kind == "IDENT" and sum(m.name == "__name__" for m in matchers) > 1:
            raise self.error(start, f"metric name must not be set twice: {start.text!r}")
        if not any(not m.matches({}) for m in matchers):
            raise self.error(start, "vector selector must contain at least one non-empty matcher")
        return VectorSelector(tuple(matchers))

    def matcher(self) -> Matcher:
        label = self.take()
        if label.kind != "IDENT" or not _LABEL_NAME_RE.fullmatch(label.text):
            raise self.error(label, f"unexpected {self.describe(label)} in label matching, expected label")
        op = self.take()
        if op.kind != "OP" or op.text not in ("=", "!=", "=~", "!~"):
            raise self.error(op, f"unexpected {self.describe(op)} in label matching, expected one of "
                                 "'=', '!=', '=~' or '!~'")
        value = self.take()
        if value.kind != "STRING":
            raise self.error(value, f"unexpected {self.describe(value)} in label matching, expected string")
        regex = None
        if op.text in ("=~", "!~"):
            try:
                regex = re.compile(value.text)
            except re.error as exc:
                raise self.error(value, f"error parsing regexp: {exc}") from exc
        return Matcher(label.text, op.text, value.text, regex)


def parse(query: str) -> Expr:
    """Parse a query of the supported subset; PromQLError (with a `line:col` position) otherwise."""
    return _Parser(query).parse()


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Sample:
    labels: Labels
    value: float


SortKey = tuple[tuple[str, str], ...]  # a label set in label-name order: results are sorted by it


def _selectors(expr: Expr) -> list[VectorSelector]:
    if isinstance(expr, VectorSelector):
        return [expr]
    if isinstance(expr, Aggregation):
        return _selectors(expr.expr)
    return []


def evaluate(expr: Expr, series: list[Sample]) -> list[Sample]:
    """An instant vector from `series` (every sample the cluster exports now)."""
    if isinstance(expr, VectorSelector):
        return [s for s in series if all(m.matches(s.labels) for m in expr.matchers)]
    if isinstance(expr, Aggregation):
        return _aggregate(expr, evaluate(expr.expr, series))
    raise TypeError(f"not a vector expression: {expr!r}")


def _aggregate(agg: Aggregation, samples: list[Sample]) -> list[Sample]:
    return [sample for _, sample in _aggregate_keyed(agg, samples)]


def _aggregate_keyed(agg: Aggregation, samples: list[Sample]) -> list[tuple[SortKey, Sample]]:
    """The aggregation's output series, each with its label set in sorted order (its sort key)."""
    groups: dict[SortKey, list[float]] = {}
    if agg.without:
        dropped = {*agg.grouping, "__name__"}
        for sample in samples:
            key = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in dropped))
            groups.setdefault(key, []).append(sample.value)
    else:
        # The group key is built in label-name order directly: no per-sample dict or sort (8,000 GPUs).
        names = sorted(set(agg.grouping))
        for sample in samples:
            labels = sample.labels
            key = tuple((name, labels[name]) for name in names if labels.get(name, "") != "")
            groups.setdefault(key, []).append(sample.value)
    out = []
    for key, values in groups.items():
        if agg.op == "count":
            value = float(len(values))
        elif len(values) == 1:
            value = values[0]  # what sum, avg, max and min of one value all are (NaN included)
        elif agg.op == "sum":
            value = math.fsum(values)
        elif agg.op == "avg":
            value = math.fsum(values) / len(values)
        elif agg.op == "max":
            value = max(values, key=lambda v: -math.inf if math.isnan(v) else v)
        else:
            value = min(values, key=lambda v: math.inf if math.isnan(v) else v)
        out.append((key, Sample(dict(key), value)))
    return out


def format_value(value: float) -> str:
    """Prometheus's rendering of a sample value (Go's FormatFloat(v, 'f', -1, 64))."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value):
        return str(int(value))
    return format(Decimal(repr(value)), "f")


# --------------------------------------------------------------------------- the series

DCGM_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
DCGM_FB_USED = "DCGM_FI_DEV_FB_USED"
DCGM_FB_FREE = "DCGM_FI_DEV_FB_FREE"
VLLM_RUNNING = "vllm:num_requests_running"
VLLM_WAITING = "vllm:num_requests_waiting"
VLLM_KV_CACHE = "vllm:gpu_cache_usage_perc"
DCGM_FAMILIES = (DCGM_GPU_UTIL, DCGM_FB_USED, DCGM_FB_FREE)
VLLM_FAMILIES = (VLLM_RUNNING, VLLM_WAITING, VLLM_KV_CACHE)
DCGM_EXPORTER_PORT = 9400
VLLM_DEFAULT_PORT = 8000

# The modelName DCGM reports (the driver's product name) for the products kubesim knows.
_MODEL_NAMES = {
    "nvidia-h100-80gb": "NVIDIA H100 80GB HBM3",
    "nvidia-h200": "NVIDIA H200",
    "nvidia-a100-80gb": "NVIDIA A100-SXM4-80GB",
    "nvidia-a100-40gb": "NVIDIA A100-SXM4-40GB",
    "nvidia-l40s": "NVIDIA L40S",
    "nvidia-l40": "NVIDIA L40",
    "nvidia-l4": "NVIDIA L4",
    "nvidia-a10g": "NVIDIA A10G",
    "nvidia-t4": "Tesla T4",
}
DEFAULT_GPU_MEMORY_MIB = 81920


def _model_name(product: str) -> str:
    if product in _MODEL_NAMES:
        return _MODEL_NAMES[product]
    rest = product.removeprefix("nvidia-")
    return f"NVIDIA {rest.replace('-', ' ').upper()}" if rest else "NVIDIA GPU"


class _GpuAllocator:
    """Which pod holds which GPU index on each node, kept stable while the pod lives (as the device
    plugin's allocation is): new pods take the lowest free indexes, in creation order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # node -> pod uid -> [(container name, gpu index)]
        self.by_node: dict[str, dict[str, list[tuple[str, int]]]] = {}

    def assign(self, node: str, gpu_total: int, pods: list[Obj]) -> dict[int, tuple[Obj, str]]:
        with self.lock:
            held = self.by_node.setdefault(node, {})
            live = {p["metadata"]["uid"]: p for p in pods}
            for uid in [u for u in held if u not in live]:
                del held[uid]
            used = {index for slots in held.values() for _, index in slots}
            ordered = sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp", ""),
                                                  p["metadata"].get("namespace", ""), p["metadata"]["name"]))
            for pod in ordered:
                uid = pod["metadata"]["uid"]
                if uid in held:
                    continue
                slots = []
                for container in pod["spec"].get("containers") or []:
                    wanted = int(parse_quantity(container_requests(container).get(GPU_RESOURCE, 0) or 0))
                    for _ in range(wanted):
                        free = next((i for i in range(gpu_total) if i not in used), None)
                        if free is None:
                            break
                        used.add(free)
                        slots.append((container.get("name", ""), free))
                held[uid] = slots
            return {index: (live[uid], name) for uid, slots in held.items() for name, index in slots}


_ALLOCATORS: weakref.WeakKeyDictionary[Any, _GpuAllocator] = weakref.WeakKeyDictionary()
_ALLOCATORS_LOCK = threading.Lock()


def _allocator(sim: Any) -> _GpuAllocator:
    with _ALLOCATORS_LOCK:
        if sim not in _ALLOCATORS:
            _ALLOCATORS[sim] = _GpuAllocator()
        return _ALLOCATORS[sim]


@functools.lru_cache(maxsize=65536)  # fixed per GPU; 8,000 hashes per scrape otherwise
def _gpu_uuid(node_identity: str, index: int) -> str:
    digest = hashlib.sha256(f"{node_identity}/{index}".encode()).digest()
    return f"GPU-{uuid.UUID(bytes=digest[:16])}"


def _node_ip(node: Obj) -> str:
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            return address.get("address", "")
    return node["metadata"]["name"]


def _holds_gpus(ctx: LoadContext, pod: Obj) -> bool:
    """Pods the device plugin has given GPUs: bound, not finished, requesting nvidia.com/gpu."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    return ctx.gpu_count(pod) > 0


def _dcgm_series(ctx: LoadContext) -> dict[str, list[Sample]]:
    """Every DCGM family, per physical GPU of every reachable GPU node, in one pass over the nodes."""
    sim = ctx.sim
    out: dict[str, list[Sample]] = {family: [] for family in DCGM_FAMILIES}
    util_series, used_series, free_series = out[DCGM_GPU_UTIL], out[DCGM_FB_USED], out[DCGM_FB_FREE]
    nodes, _ = sim.store.list("nodes")
    for node in nodes:
        conditions = (node.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "Unknown" for c in conditions):
            continue  # the exporter on an unreachable node cannot be scraped
        capacity = (node.get("status") or {}).get("capacity") or {}
        try:
            gpu_total = int(parse_quantity(capacity.get(GPU_RESOURCE, 0)))
        except ValueError:
            gpu_total = 0
        if gpu_total <= 0:
            continue
        name = node["metadata"]["name"]
        identity = node["metadata"].get("uid", name)
        labels = node["metadata"].get("labels") or {}
        try:
            memory_mib = int(parse_quantity(labels.get("nvidia.com/gpu.memory", DEFAULT_GPU_MEMORY_MIB)))
        except ValueError:
            memory_mib = DEFAULT_GPU_MEMORY_MIB
        model = _model_name(labels.get("nvidia.com/gpu.product", ""))
        instance = f"{_node_ip(node)}:{DCGM_EXPORTER_PORT}"
        gpu_pods = [p for p in sim.store.pods_on_node(name) if _holds_gpus(ctx, p)]
        holders = _allocator(sim).assign(name, gpu_total, gpu_pods)
        for index in range(gpu_total):
            base = {"gpu": str(index), "UUID": _gpu_uuid(identity, index), "device": f"nvidia{index}",
                    "modelName": model, "Hostname": name, "instance": instance, "job": "dcgm-exporter"}
            utilization, memory_fraction = 0.0, 0.0
            if index in holders:
                pod, container = holders[index]
                base.update(namespace=pod["metadata"]["namespace"], pod=pod["metadata"]["name"], container=container)
                usage = pod_load(sim, pod, ctx)
                utilization, memory_fraction = usage.gpu_utilization, usage.gpu_memory_fraction
            used_mib = round(memory_mib * memory_fraction)
            util_series.append(Sample({"__name__": DCGM_GPU_UTIL, **base}, float(round(utilization))))
            used_series.append(Sample({"__name__": DCGM_FB_USED, **base}, float(used_mib)))
            free_series.append(Sample({"__name__": DCGM_FB_FREE, **base}, float(memory_mib - used_mib)))
    return out


def _served_model_name(pod: Obj) -> str | None:
    """The model vLLM serves: --served-model-name, else --model, else `vllm serve <model>`."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        words = [*(container.get("command") or []), *(container.get("args") or [])]
        found: dict[str, str] = {}
        for i, word in enumerate(words):
            for flag in ("--served-model-name", "--model"):
                if word == flag and i + 1 < len(words):
                    found.setdefault(flag, words[i + 1])
                elif word.startswith(flag + "="):
                    found.setdefault(flag, word.split("=", 1)[1])
            is_serve = word == "serve" and i > 0 and words[i - 1].endswith("vllm")
            if is_serve and i + 1 < len(words) and not words[i + 1].startswith("-"):
                found.setdefault("serve", words[i + 1])
        for key in ("--served-model-name", "--model", "serve"):
            if key in found:
                return found[key]
    return None


def _vllm_port(pod: Obj) -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("containerPort"):
                return int(port["containerPort"])
    return VLLM_DEFAULT_PORT


def _vllm_series(ctx: LoadContext) -> dict[str, list[Sample]]:
    """Every vLLM family, per Ready model-server pod, in one pass over the pods."""
    out: dict[str, list[Sample]] = {family: [] for family in VLLM_FAMILIES}
    pods, _ = ctx.sim.store.list("pods")
    for pod in pods:
        if not (pod.get("spec") or {}).get("nodeName"):
            continue
        usage = pod_load(ctx.sim, pod, ctx)
        if not usage.exports_vllm_metrics:
            continue
        address = (pod.get("status") or {}).get("podIP") or pod["metadata"]["name"]
        labels = {"namespace": pod["metadata"]["namespace"], "pod": pod["metadata"]["name"],
                  "instance": f"{address}:{_vllm_port(pod)}", "job": "vllm"}
        model = _served_model_name(pod)
        if model:
            labels["model_name"] = model
        values = {VLLM_RUNNING: usage.running, VLLM_WAITING: usage.waiting, VLLM_KV_CACHE: usage.kv_cache_usage}
        for family in VLLM_FAMILIES:
            out[family].append(Sample({"__name__": family, **labels}, float(values[family])))
    return out


def _sort_key(sample: Sample) -> SortKey:
    """The order results are returned in: by the sorted label set, as Prometheus sorts label sets."""
    return tuple(sorted(sample.labels.items()))


class SeriesIndex:
    """The samples of one cluster state, indexed by metric name, each family already in result order.

    Built lazily per exporter (the DCGM families together, the vLLM families together) and kept in the
    state's shared `LoadContext` memo: Prometheus answers from its last scrape, so every query at one
    instant of one state reads the same samples, and none recomputes them or re-sorts whole families.
    """

    _BUILDERS = ((DCGM_FAMILIES, _dcgm_series), (VLLM_FAMILIES, _vllm_series))

    def __init__(self, ctx: LoadContext) -> None:
        self.ctx = ctx
        self.families: dict[str, list[tuple[SortKey, Sample]]] = {}

    def ensure(self, families: set[str]) -> None:
        """Compute the exporters behind `families` (call with the store lock held)."""
        for exported, builder in self._BUILDERS:
            if families & set(exported) and exported[0] not in self.families:
                for family, samples in builder(self.ctx).items():
                    keyed = [(_sort_key(sample), sample) for sample in samples]
                    keyed.sort(key=operator.itemgetter(0))
                    self.families[family] = keyed

    def family(self, name: str) -> list[tuple[SortKey, Sample]]:
        return self.families.get(name, [])


def series_index(sim: Any, families: set[str]) -> SeriesIndex:
    """The current state's index with `families` computed."""
    with sim.store.lock:
        ctx = shared_context(sim)
        index = ctx.memo.get("prometheus-series")
        if index is None:
            index = ctx.memo["prometheus-series"] = SeriesIndex(ctx)
        index.ensure(families)
    return index


def _selector_families(selector: VectorSelector) -> list[str]:
    name_matchers = [m for m in selector.matchers if m.name == "__name__"]
    return [f for f in DCGM_FAMILIES + VLLM_FAMILIES if all(m.matches({"__name__": f}) for m in name_matchers)]


def _families(expr: Expr) -> set[str]:
    """The metric families a query can select: only those are computed (`{__name__=~"a|b"}` included)."""
    wanted: set[str] = set()
    for selector in _selectors(expr):
        wanted.update(_selector_families(selector))
    return wanted


def _select(selector: VectorSelector, index: SeriesIndex) -> list[tuple[SortKey, Sample]]:
    """A selector over the index: name matchers pick whole families, the other matchers test each sample."""
    others = [m for m in selector.matchers if m.name != "__name__"]
    picked = []
    for family in _selector_families(selector):
        keyed = index.family(family)
        picked.append([entry for entry in keyed if all(m.matches(entry[1].labels) for m in others)] if others
                      else keyed)
    if len(picked) == 1:
        return picked[0]
    return list(heapq.merge(*picked, key=operator.itemgetter(0)))


def evaluate_indexed(expr: Expr, index: SeriesIndex) -> list[Sample]:
    """`evaluate` over a `SeriesIndex`, returned in result order (sorted by label set)."""
    if isinstance(expr, VectorSelector):
        return [sample for _, sample in _select(expr, index)]
    if isinstance(expr, Aggregation):
        keyed = _aggregate_keyed(expr, evaluate_indexed(expr.expr, index))
        keyed.sort(key=operator.itemgetter(0))
        return [sample for _, sample in keyed]
    raise TypeError(f"not a vector expression: {expr!r}")


# --------------------------------------------------------------------------- HTTP API


def _bad_data(message: str) -> tuple[int, dict[str, Any]]:
    return 400, {"status": "error", "errorType": "bad_data", "error": message}


def _parse_time(text: str) -> float:
    with contextlib.suppress(ValueError):
        return float(text)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError as exc:
        raise ValueError(f'invalid parameter "time": cannot parse "{text}" to a valid timestamp') from exc


def handle_query(sim: Any, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """`GET|POST /api/v1/query`: (HTTP status, Prometheus JSON body)."""
    query = params.get("query")
    if query is None or not query.strip():
        return _bad_data('invalid parameter "query": 1:1: parse error: no expression found in input')
    instant = sim.clock.now()
    if params.get("time"):
        try:
            instant = _parse_time(params["time"])
        except ValueError as exc:
            return _bad_data(str(exc))
        if not math.isfinite(instant):
            return _bad_data(f'invalid parameter "time": cannot parse "{params["time"]}" to a valid timestamp')
    try:
        expr = parse(query)
    except PromQLError as exc:
        return _bad_data(f'invalid parameter "query": {exc}')
    timestamp = round(instant, 3)
    if isinstance(expr, NumberLiteral):
        return 200, {"status": "success", "data": {"resultType": "scalar",
                                                   "result": [timestamp, format_value(expr.value)]}}
    samples = evaluate_indexed(expr, series_index(sim, _families(expr)))
    result = [{"metric": s.labels, "value": [timestamp, format_value(s.value)]} for s in samples]
    return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}
