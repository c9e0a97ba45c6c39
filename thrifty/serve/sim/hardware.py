"""GPU specifications for the serving simulator: dense 16-bit tensor-core peak, memory bandwidth and capacity.

Figures are the vendors' datasheet values for dense (non-sparse) BF16/FP16 tensor-core math:

- A100-SXM4-80GB: 312 TFLOPS, 2,039 GB/s HBM2e, 80 GB (NVIDIA A100 Tensor Core GPU datasheet, 2021; Vidur's
  ``A100DeviceSKUConfig`` uses the same 312 TFLOPS / 80 GB).
- H100-SXM5-80GB: 989.4 TFLOPS (1,979 with 2:4 sparsity), 3,350 GB/s HBM3, 80 GB (NVIDIA H100 Tensor Core GPU
  datasheet; Vidur rounds the peak to 1,000 TFLOPS).
- RTX A6000: 154.8 TFLOPS (309.7 with sparsity), 768 GB/s GDDR6, 48 GB (NVIDIA RTX A6000 datasheet); the GPU of
  SARATHI's LLaMA-13B experiments. No operator profile of it is available: the simulator uses the A100's fitted
  efficiencies for it (same Ampere tensor cores), and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GPUS", "GPUSpec", "UnknownGPUError", "get_gpu"]


class UnknownGPUError(KeyError):
    """An unknown GPU name; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class GPUSpec:
    """One GPU: ``peak_flops`` (dense 16-bit tensor FLOP/s), ``mem_bandwidth`` (bytes/s), ``memory_bytes``.

    ``calibrated_as`` names the GPU whose fitted operator efficiencies the cost model uses (itself when profiled).
    """

    key: str
    name: str
    peak_flops: float
    mem_bandwidth: float
    memory_bytes: float
    source: str
    calibrated_as: str

    def label(self) -> str:
        """How every simulated number is labelled: ``simulated, <GPU> cost model``."""
        return f"simulated, {self.name} cost model"


GPUS: dict[str, GPUSpec] = {
    "a100": GPUSpec(
        "a100",
        "A100-SXM-80GB",
        312e12,
        2039e9,
        80 * 2**30,
        "NVIDIA A100 datasheet: 312 TFLOPS dense BF16, 2,039 GB/s, 80 GB",
        "a100",
    ),
    "h100": GPUSpec(
        "h100",
        "H100-SXM-80GB",
        989.4e12,
        3350e9,
        80 * 2**30,
        "NVIDIA H100 datasheet: 989.4 TFLOPS dense BF16, 3,350 GB/s, 80 GB",
        "h100",
    ),
    "a6000": GPUSpec(
        "a6000",
        "RTX-A6000",
        154.8e12,
        768e9,
        48 * 2**30,
        "NVIDIA RTX A6000 datasheet: 154.8 TFLOPS dense FP16 tensor, 768 GB/s, 48 GB",
        "a100",
    ),
}


def get_gpu(name: str | GPUSpec) -> GPUSpec:
    """The ``GPUSpec`` named ``name`` (case-insensitive: a100, h100, a6000)."""
    if isinstance(name, GPUSpec):
        return name
    try:
        return GPUS[name.lower()]
    except KeyError:
        raise UnknownGPUError(f"unknown GPU {name!r}; known GPUs: {', '.join(GPUS)}") from None
