"""GPU hardware profiles: the one place that knows what a GPU type can hold and do.

Figures are vendor specifications (see the team notes qwen36.md). ``memory_bytes`` is the
usable device memory as the driver reports it, not the marketing number.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

GIB = 1 << 30


class GpuType(StrEnum):
    H100 = "h100"
    H200 = "h200"
    B200 = "b200"
    CPU = "cpu"


@dataclass(frozen=True)
class GpuProfile:
    name: str
    memory_bytes: int
    hbm_bandwidth_bytes_s: float
    bf16_flops: float  # dense, no sparsity
    fp8_flops: float
    nvlink_bandwidth_bytes_s: float
    k8s_product_label: str  # nvidia.com/gpu.product as GPU feature discovery labels it


GPU_PROFILES: dict[GpuType, GpuProfile] = {
    GpuType.H100: GpuProfile(
        "NVIDIA H100 80GB HBM3", int(79.6 * GIB), 3.35e12, 989e12, 1979e12, 450e9, "NVIDIA-H100-80GB-HBM3"
    ),
    GpuType.H200: GpuProfile(
        "NVIDIA H200 141GB HBM3e", int(139.8 * GIB), 4.8e12, 989e12, 1979e12, 450e9, "NVIDIA-H200"
    ),
    GpuType.B200: GpuProfile(
        "NVIDIA B200 180GB HBM3e", int(178.4 * GIB), 8.0e12, 2250e12, 4500e12, 900e9, "NVIDIA-B200"
    ),
    # A CPU "GPU" for the local llama.cpp default: memory is the host's, nothing is sharded.
    GpuType.CPU: GpuProfile("CPU (llama.cpp)", 16 * GIB, 50e9, 1e12, 1e12, 0.0, ""),
}
