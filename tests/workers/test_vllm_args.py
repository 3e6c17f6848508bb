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
        (["--pipeline-parallel-size=8"], "--pipeline-parallel-size=8"),  # its GPUs would not be requested
        (["--seed=\u0661\u0662"], "--seed=\u0661\u0662"),  # Arabic-Indic digits: int() reads them, vLLM may not
        (["--swap-space=\uff11"], "--swap-space=\uff11"),  # a fullwidth 1
    ],
)
def test_rejects_with_the_offending_argument(args, offending):
    with pytest.raises(InvalidRequestError) as caught:
        validate_vllm_args(args)
    assert caught.value.code == "invalid_vllm_arg"
    assert caught.value.details["arg"] == offending
    assert caught.value.http_status == 422


def test_a_reserved_argument_names_the_field_that_sets_it():
    with pytest.raises(InvalidRequestError) as tensor:
        validate_vllm_args(["--tensor-parallel-size=2"])
    with pytest.raises(InvalidRequestError) as port:
        validate_vllm_args(["--port=9000"])

    assert "gpus_per_replica" in tensor.value.message
    assert "dedicated" not in port.value.message  # there is no port field to point at
