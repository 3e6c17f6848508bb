"""Per-GPU samples from dcgm-exporter through Prometheus."""

from __future__ import annotations

from typing import Any

GPU_UTIL_METRIC = "DCGM_FI_DEV_GPU_UTIL"
GPU_MEMORY_USED_METRIC = "DCGM_FI_DEV_FB_USED"  # MiB, as dcgm-exporter reports it


def dcgm_gpus(prometheus: Any) -> list[dict[str, Any]]:
    """Per-GPU samples from DCGM: node, GPU index, pod (if allocated), utilization and memory used."""
    gpus: dict[tuple[str, str], dict[str, Any]] = {}
    for metric, field_name in ((GPU_UTIL_METRIC, "utilization_percent"), (GPU_MEMORY_USED_METRIC, "memory_used_mb")):
        for sample in prometheus.query(metric):
            node = sample.labels.get("Hostname") or sample.labels.get("node") or sample.labels.get("instance", "")
            key = (node, sample.labels.get("gpu", "0"))
            entry = gpus.setdefault(
                key,
                {"node": node, "gpu": key[1], "namespace": None, "pod": None,
                 "utilization_percent": None, "memory_used_mb": None},
            )
            entry[field_name] = round(sample.value, 2)
            if sample.labels.get("pod"):
                entry["namespace"] = sample.labels.get("namespace") or None
                entry["pod"] = sample.labels["pod"]
    return sorted(gpus.values(), key=lambda gpu: (gpu["node"], _gpu_index(gpu["gpu"])))


def _gpu_index(text: str) -> int:
    return int(text) if text.isdigit() else 0
