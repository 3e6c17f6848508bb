"""Unit tests for kubesim's PromQL subset: the recursive-descent parser, evaluation and value rendering."""

from __future__ import annotations

import math

import pytest

from kubesim.prometheus import (
    Aggregation,
    Matcher,
    NumberLiteral,
    PromQLError,
    Sample,
    VectorSelector,
    evaluate,
    format_value,
    parse,
    tokenize,
)

# --------------------------------------------------------------------------- parsing


def _matchers(expr) -> list[tuple[str, str, str]]:
    assert isinstance(expr, VectorSelector)
    return [(m.name, m.op, m.value) for m in expr.matchers]


def test_metric_name_alone():
    assert _matchers(parse("DCGM_FI_DEV_GPU_UTIL")) == [("__name__", "=", "DCGM_FI_DEV_GPU_UTIL")]


def test_metric_name_with_colons_and_every_matcher_operator():
    expr = parse('vllm:num_requests_running{namespace="a", pod!="b",model_name=~"llama.*", pod!~\'x|y\',}')
    assert _matchers(expr) == [
        ("__name__", "=", "vllm:num_requests_running"),
        ("namespace", "=", "a"),
        ("pod", "!=", "b"),
        ("model_name", "=~", "llama.*"),
        ("pod", "!~", "x|y"),
    ]


def test_name_matcher_inside_braces_and_string_escapes():
    expr = parse('{__name__=~"DCGM_.*", Hostname="a\\"b\\\\c\\u00e9", pod=`raw\\n`}')
    assert _matchers(expr) == [("__name__", "=~", "DCGM_.*"), ("Hostname", "=", 'a"b\\cé'), ("pod", "=", "raw\\n")]


@pytest.mark.parametrize(
    ("query", "op", "grouping", "without"),
    [
        ("sum by (namespace, pod) (DCGM_FI_DEV_GPU_UTIL)", "sum", ("namespace", "pod"), False),
        ("avg(DCGM_FI_DEV_GPU_UTIL) by (Hostname)", "avg", ("Hostname",), False),
        ("max without (gpu, UUID) (DCGM_FI_DEV_FB_USED)", "max", ("gpu", "UUID"), True),
        ("min(DCGM_FI_DEV_FB_USED) without (gpu,)", "min", ("gpu",), True),
        ("count(vllm:num_requests_running)", "count", (), False),
        ("sum by () (vllm:num_requests_running)", "sum", (), False),
    ],
)
def test_aggregations_with_grouping_before_or_after(query, op, grouping, without):
    expr = parse(query)
    assert isinstance(expr, Aggregation)
    assert (expr.op, expr.grouping, expr.without) == (op, grouping, without)
    assert isinstance(expr.expr, VectorSelector)


def test_nested_aggregation():
    expr = parse('max(sum by (pod) (DCGM_FI_DEV_GPU_UTIL{namespace="ml"}))')
    assert isinstance(expr, Aggregation)
    assert isinstance(expr.expr, Aggregation)
    assert expr.expr.grouping == ("pod",)


@pytest.mark.parametrize(
    ("query", "value"),
    [("42", 42.0), ("-1.5", -1.5), ("+2", 2.0), ("1e3", 1000.0), ("0x1f", 31.0), (".5", 0.5), ("Inf", math.inf),
     ("-inf", -math.inf)],
)
def test_number_literals(query, value):
    expr = parse(query)
    assert isinstance(expr, NumberLiteral)
    assert expr.value == value


def test_nan_literal():
    expr = parse("NaN")
    assert isinstance(expr, NumberLiteral)
    assert math.isnan(expr.value)


def test_comments_and_whitespace_are_ignored():
    assert _matchers(parse("  # all GPUs\n DCGM_FI_DEV_GPU_UTIL  ")) == [("__name__", "=", "DCGM_FI_DEV_GPU_UTIL")]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "1:1: parse error: no expression found in input"),
        ("rate(DCGM_FI_DEV_GPU_UTIL[5m])", "1:1: parse error: function 'rate' is not supported"),
        ("DCGM_FI_DEV_GPU_UTIL[5m]", "1:21: parse error: range vectors and subqueries are not supported"),
        ("DCGM_FI_DEV_GPU_UTIL > 50", "1:22: parse error: binary operator '>' is not supported"),
        ("sum(x) / count(x)", "1:8: parse error: binary operator '/' is not supported"),
        ("x offset 5m", "1:3: parse error: 'offset' is not supported"),
        ("x @ 1700000000", "1:3: parse error: the @ modifier is not supported"),
        ("topk(3, x)", "1:1: parse error: aggregation 'topk' is not supported"),
        ("(x)", "1:1: parse error: parenthesised expressions are not supported"),
        ("{}", "1:1: parse error: vector selector must contain at least one non-empty matcher"),
        ('{pod=~".*"}', "1:1: parse error: vector selector must contain at least one non-empty matcher"),
        ('x{__name__="y"}', "1:1: parse error: metric name must not be set twice"),
        ("sum by (a) (x) by (b)", "1:16: parse error: aggregation can only have one grouping clause"),
        ("sum()", "1:5: parse error: no arguments for aggregate expression provided to 'sum'"),
        ("sum(1)", "1:1: parse error: expected type instant vector in aggregation expression, got scalar"),
        ("sum(x, y)", "1:6: parse error: wrong number of arguments for aggregate expression 'sum'"),
        ('x{a="b"', "1:8: parse error: unexpected end of input in label matching"),
        ('x{a=="b"}', "1:4: parse error: unexpected '==' in label matching"),
        ("x{a=b}", "1:5: parse error: unexpected 'b' in label matching, expected string"),
        ('x{a="b}', "1:5: parse error: unterminated quoted string"),
        ('x{a=~"("}', "1:6: parse error: error parsing regexp"),
        ('x{a="\\q"}', "1:6: parse error: unknown escape sequence 'q'"),
        ("sum by (a:b) (x)", "1:9: parse error: unexpected 'a:b' in grouping opts, expected label"),
        ("x y", "1:3: parse error: unexpected 'y'"),
        ("x$", "1:2: parse error: unexpected character: '$'"),
        ('"text"', "1:1: parse error: string literals are not supported"),
        ("-x", "1:2: parse error: unary operators are only supported on number literals"),
        ("sum", "1:4: parse error: unexpected end of input, expected '('"),
        ("by", "1:1: parse error: unexpected 'by'"),
    ],
)
def test_outside_the_subset_is_an_error_never_an_answer(query, message):
    with pytest.raises(PromQLError) as caught:
        parse(query)
    assert str(caught.value).startswith(message)


def test_error_positions_count_lines():
    with pytest.raises(PromQLError, match=r"^2:5: parse error: binary operator"):
        parse("sum(\n  x + 1)")


def test_tokenize_keeps_positions():
    assert [(t.kind, t.text, t.pos) for t in tokenize('a{b="c"}')] == [
        ("IDENT", "a", 0), ("PUNCT", "{", 1), ("IDENT", "b", 2), ("OP", "=", 3), ("STRING", "c", 4),
        ("PUNCT", "}", 7), ("EOF", "", 8),
    ]


# --------------------------------------------------------------------------- evaluation

SERIES = [
    Sample({"__name__": "util", "node": "a", "gpu": "0", "pod": "p1"}, 10.0),
    Sample({"__name__": "util", "node": "a", "gpu": "1", "pod": "p1"}, 30.0),
    Sample({"__name__": "util", "node": "b", "gpu": "0"}, 0.0),
    Sample({"__name__": "util", "node": "foobar", "gpu": "0"}, 5.0),
    Sample({"__name__": "mem", "node": "a", "gpu": "0"}, 100.0),
]


def _evaluate(query: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in evaluate(parse(query), SERIES)}


def test_selector_matches_name_and_labels():
    assert len(_evaluate("util")) == 4
    assert list(_evaluate('util{node="a", gpu!="0"}').values()) == [30.0]


def test_regex_matchers_are_fully_anchored():
    assert sorted(_evaluate('util{node=~"foo"}').values()) == []
    assert sorted(_evaluate('util{node=~"foo.*"}').values()) == [5.0]
    assert sorted(_evaluate('util{node!~"a|b"}').values()) == [5.0]


def test_missing_label_matches_the_empty_string():
    assert sorted(_evaluate('util{pod=""}').values()) == [0.0, 5.0]
    assert sorted(_evaluate('util{pod!=""}').values()) == [10.0, 30.0]
    assert len(_evaluate('{__name__=~"util|mem"}')) == 5


def test_aggregations_by_and_without():
    assert _evaluate("sum by (node) (util)") == {(("node", "a"),): 40.0, (("node", "b"),): 0.0,
                                                  (("node", "foobar"),): 5.0}
    assert _evaluate("avg(util) by (pod)") == {(("pod", "p1"),): 20.0, (): 2.5}
    assert _evaluate("max(util)") == {(): 30.0}
    assert _evaluate("min(util)") == {(): 0.0}
    assert _evaluate("count(util)") == {(): 4.0}
    assert _evaluate("sum without (gpu) (util)") == {
        (("node", "a"), ("pod", "p1")): 40.0, (("node", "b"),): 0.0, (("node", "foobar"),): 5.0,
    }
    assert _evaluate("max(sum by (node) (util))") == {(): 40.0}


def test_aggregating_nothing_gives_an_empty_vector():
    assert _evaluate('sum(util{node="zzz"})') == {}


def test_matcher_object():
    assert Matcher("a", "=", "").matches({})
    assert not Matcher("a", "!=", "").matches({})


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0, "0"), (42.0, "42"), (0.25, "0.25"), (1e21, "1000000000000000000000"), (1e-7, "0.0000001"),
     (math.nan, "NaN"), (math.inf, "+Inf"), (-math.inf, "-Inf"), (-3.5, "-3.5")],
)
def test_values_render_as_prometheus_renders_them(value, text):
    assert format_value(value) == text
