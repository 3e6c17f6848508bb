"""The allow-list of extra vLLM server arguments a client may pass, with value validation.

The arguments end up in the container's ``args`` list (exec form, never a shell), but vLLM itself
would still happily load remote code, bind other ports or read arbitrary files if asked, so only
tuning flags are accepted. Arguments the service sets itself (``--model``, ``--port``,
``--tensor-parallel-size``, ``--max-model-len``, ``--dtype``) are refused here, naming the request field that
sets them, and so is ``--pipeline-parallel-size``, whose GPUs a replica would not request.
``--trust-remote-code`` is allowed because many Hugging Face models need it; it runs code from the model
repository inside the (unprivileged) model container only.

Accepted forms: ``--flag value``, ``--flag=value`` and bare boolean flags. The result is normalised to
``--flag=value`` / ``--flag`` so the stored list is canonical (and idempotency fingerprints are stable).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from workers.domain import InvalidRequestError

Validator = Callable[[str], bool]

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}\Z")
_REVISION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}\Z")


def _float_between(low: float, high: float) -> Validator:
    def check(value: str) -> bool:
        if not value.isascii():  # float() also reads other scripts' digits ("١٢"), which vLLM's argparse may not
            return False
        try:
            number = float(value)
        except ValueError:
            return False
        return low <= number <= high

    return check


def _int_between(low: int, high: int) -> Validator:
    def check(value: str) -> bool:
        if not re.fullmatch(r"-?[0-9]{1,12}", value):  # ASCII digits only (\\d also matches "١٢")
            return False
        return low <= int(value) <= high

    return check


def _matches(pattern: re.Pattern[str]) -> Validator:
    return lambda value: pattern.fullmatch(value) is not None


def _one_of(*choices: str) -> Validator:
    return lambda value: value in choices


@dataclass(frozen=True)
class ArgSpec:
    """One allowed flag: ``validator`` is None for boolean flags that take no value."""

    validator: Validator | None
    description: str


ALLOWED_VLLM_ARGS: dict[str, ArgSpec] = {
    "--gpu-memory-utilization": ArgSpec(_float_between(0.05, 0.99), "fraction of GPU memory, 0.05-0.99"),
    "--max-num-seqs": ArgSpec(_int_between(1, 65536), "integer 1-65536"),
    "--max-num-batched-tokens": ArgSpec(_int_between(1, 10_000_000), "integer 1-10000000"),
    "--enable-prefix-caching": ArgSpec(None, "flag"),
    "--enable-chunked-prefill": ArgSpec(None, "flag"),
    "--quantization": ArgSpec(
        _one_of("awq", "gptq", "fp8", "bitsandbytes", "marlin", "awq_marlin", "gptq_marlin", "compressed-tensors"),
        "one of awq, gptq, fp8, bitsandbytes, marlin, awq_marlin, gptq_marlin, compressed-tensors",
    ),
    "--kv-cache-dtype": ArgSpec(_one_of("auto", "fp8", "fp8_e4m3", "fp8_e5m2"), "auto, fp8, fp8_e4m3, fp8_e5m2"),
    "--trust-remote-code": ArgSpec(None, "flag"),
    "--revision": ArgSpec(_matches(_REVISION_PATTERN), "a git revision, branch or tag"),
    "--tokenizer-revision": ArgSpec(_matches(_REVISION_PATTERN), "a git revision, branch or tag"),
    "--served-model-name": ArgSpec(_matches(_NAME_PATTERN), "a model name ([A-Za-z0-9._/-])"),
    "--enforce-eager": ArgSpec(None, "flag"),
    "--swap-space": ArgSpec(_float_between(0, 1024), "GiB, 0-1024"),
    "--seed": ArgSpec(_int_between(0, 2**31 - 1), "integer 0-2147483647"),
    "--block-size": ArgSpec(_one_of("8", "16", "32", "64", "128"), "8, 16, 32, 64 or 128"),
    "--max-logprobs": ArgSpec(_int_between(0, 1024), "integer 0-1024"),
    "--disable-log-requests": ArgSpec(None, "flag"),
    "--rope-theta": ArgSpec(_float_between(1, 1e9), "number"),
    "--tokenizer-mode": ArgSpec(_one_of("auto", "slow", "mistral"), "auto, slow or mistral"),
    "--generation-config": ArgSpec(_one_of("auto", "vllm"), "auto or vllm"),
}

# Set by the service (from a request field, or fixed); accepting them here would let the two disagree.
RESERVED_VLLM_ARGS: dict[str, str] = {
    "--model": "is set by the service from model_id",
    "--tensor-parallel-size": "is set by the service from gpus_per_replica",
    "--max-model-len": "is set by the service from max_model_len",
    "--dtype": "is set by the service from dtype",
    "--port": "is set by the service (its Service routes to that port)",
    "--host": "is set by the service (its Service routes to that address)",
    # A replica holds gpus_per_replica GPUs and vLLM needs tensor x pipeline parallel of them: a pipeline size
    # would make every pod ask for fewer GPUs than it uses, and admission and quotas undercount.
    "--pipeline-parallel-size": "is not supported: a replica's GPUs are set by gpus_per_replica (tensor parallel)",
}


def _invalid(arg: str, reason: str) -> InvalidRequestError:
    return InvalidRequestError("invalid_vllm_arg", f"vllm_args: {arg!r} {reason}", {"field": "vllm_args", "arg": arg})


def validate_vllm_args(args: list[str]) -> list[str]:
    """Return ``args`` normalised (``--flag=value`` / ``--flag``), or raise InvalidRequestError naming the
    first offending argument."""
    normalised: list[str] = []
    seen: set[str] = set()
    index = 0
    while index < len(args):
        raw = args[index]
        if not isinstance(raw, str) or not raw.startswith("--") or any(ch in raw for ch in "\n\r\0"):
            raise _invalid(str(raw), "is not a --flag")
        flag, has_equals, inline_value = raw.partition("=")
        if flag in RESERVED_VLLM_ARGS:
            raise _invalid(raw, RESERVED_VLLM_ARGS[flag])
        spec = ALLOWED_VLLM_ARGS.get(flag)
        if spec is None:
            raise _invalid(raw, "is not an allowed vLLM argument")
        if flag in seen:
            raise _invalid(raw, "is given more than once")
        seen.add(flag)
        if spec.validator is None:
            if has_equals:
                raise _invalid(raw, "is a flag and takes no value")
            normalised.append(flag)
            index += 1
            continue
        if has_equals:
            value = inline_value
            index += 1
        else:
            if index + 1 >= len(args) or not isinstance(args[index + 1], str):
                raise _invalid(raw, f"needs a value ({spec.description})")
            value = args[index + 1]
            index += 2
        if not spec.validator(value):
            raise _invalid(f"{flag}={value}", f"has an invalid value (expected {spec.description})")
        normalised.append(f"{flag}={value}")
    return normalised
