"""The allow-list of extra vLLM arguments."""

from __future__ import annotations

import pytest

from workers.domain import InvalidRequestError
from workers.vllm_args import validate_vllm_args


def test_normalises_separate_and_inline_values_and_flags():
    args = ["--gpu-memory-utilization", "0.9", "--max-num-seqs=64", "--enable-prefix-caching", "--quantization", "awq"]
    assert validate_vllm_args(args) == [
        "--gpu-memory-utilization=0.9",
        "--max-num-seqs=64",
        "--enable-prefix-caching",
        "--quantization=awq",
    ]


def test_empty_is_fine():
    assert validate_vllm_args([]) == []


@pytest.mark.parametrize(
    ("args", "offending"),
    [
        (["--model", "x"], "--model"),
        (["--tensor-parallel-size=2"], "--tensor-parallel-size=2"),
        (["--port=9000"], "--port=9000"),
        (["--download-dir=/etc"], "--download-dir=/etc"),
        (["--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization=1.5"),
        (["--max-num-seqs", "many"], "--max-num-seqs=many"),
        (["--quantization=evil"], "--quantization=evil"),
        (["--enable-prefix-caching=true"], "--enable-prefix-caching=true"),
        (["--seed"], "--seed"),
        (["; rm -rf /"], "; rm -rf /"),
        (["--served-model-name", "a b"], "--served-model-name=a b"),
        (["--seed=1", "--seed=2"], "--seed=2"),
    ],
)
def test_rejects_with_the_offending_argument(args, offending):
    with pytest.raises(InvalidRequestError) as caught:
        validate_vllm_args(args)
    assert caught.value.code == "invalid_vllm_arg"
    assert caught.value.details["arg"] == offending
    assert caught.value.http_status == 422
