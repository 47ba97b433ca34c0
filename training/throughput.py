"""Training throughput and model FLOPs utilisation (MFU), measured between two logged steps.

No torch here: the peak table is read by the grid's cost estimate and the GPU benchmarks too,
and a `train-grid --dry-run` has no reason to load torch for it.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator

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


def mfu(flops_per_token: float, tokens_per_s: float, world_size: int, peak: float) -> float:
    """Model FLOPs utilisation of ONE GPU: the global throughput shared over world_size GPUs."""
    return flops_per_token * tokens_per_s / world_size / peak


class ThroughputMeter:
    """Tokens per second and MFU of one window: the steps since the last logged step.

    Only training time counts: evaluation and checkpoint saving inside a window run under
    `pause()` and are subtracted. A step's tokens (and FLOPs) follow its batch's width: seq_len
    for packed pretraining batches, the longest example (rounded up) for SFT batches, so the
    FLOPs per token are looked up per width.
    """

    def __init__(
        self, flops_per_token: Callable[[int], float], peak: float | None, world_size: int
    ) -> None:
        self._flops_per_token = functools.cache(flops_per_token)
        self.peak = peak  # None (CPU, or a GPU not in PEAK_FLOPS): no MFU
        self.world_size = world_size
        self.restart()

    def restart(self) -> None:
        """Start a new window now."""
        self.started = time.perf_counter()
        self.tokens = 0
        self.flops = 0.0
        self.paused_s = 0.0

    def add(self, tokens: int, width: int) -> None:
        """Count one step of `tokens` (the global batch) at batch width `width`."""
        self.tokens += tokens
        self.flops += tokens * self._flops_per_token(width)

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        """Leave the time spent inside out of the window (evaluation, checkpointing)."""
        began = time.perf_counter()
        yield
        self.paused_s += time.perf_counter() - began

    def read(self) -> tuple[float, float | None]:
        """(tokens per second, MFU of one GPU or None) of the window so far."""
        elapsed = time.perf_counter() - self.started - self.paused_s
        tokens_per_s = self.tokens / elapsed if elapsed > 0 else 0.0
        if not (self.peak and self.tokens):
            return tokens_per_s, None
        return tokens_per_s, mfu(self.flops / self.tokens, tokens_per_s, self.world_size, self.peak)
