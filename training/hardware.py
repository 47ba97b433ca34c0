"""What we know of a GPU part from its name: one GPU's dense bf16 peak FLOP/s (no torch).

The loop's model FLOPs utilisation and `train-grid --dry-run`'s time estimate both read this
table; it lives apart from the loop so that a dry run needs no trainer. One GPU's memory is
matched the same way in training/memory.py (`GPU_MEMORY_GIB`).
"""

from __future__ import annotations

# Dense (not sparse) bf16 peak FLOP/s of ONE GPU, from the vendors' data sheets, for model FLOPs
# utilisation. Matched in order, case-insensitively, against torch.cuda.get_device_name(): the
# specific names first ("H100 PCIe" reports e.g. "NVIDIA H100 PCIe"; the SXM part "NVIDIA H100
# 80GB HBM3"). The NVL parts are PCIe cards with a lower clock (1,671 TFLOP/s sparse).
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM5
    ("H200 NVL", 835e12),
    ("GH200", 989e12),
    ("H200", 989e12),  # SXM
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
)


def peak_flops_for(device_name: str) -> float | None:
    """One GPU's dense bf16 peak for a device name (as CUDA reports it, or a user's `h100`);
    None when we do not know the part."""
    name = device_name.upper()
    return next((flops for key, flops in PEAK_FLOPS if key.upper() in name), None)
