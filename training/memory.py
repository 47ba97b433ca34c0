"""Peak accelerator memory of one training step, estimated from the model's shape (no torch).

The loop refuses a CUDA run that would not fit its GPU, and `train-grid --dry-run` prints the
estimate per node kind and refuses a plan that does not fit the GPU the spec names; both use
`training_memory`. The model is GPT-NeoX as training/presets.py builds it (parallel residual,
untied output head, SDPA attention that saves only its inputs, output and a log-sum-exp per
head: the Flash/memory-efficient kernels on CUDA, the flash kernel on CPU), trained with AdamW
and the loop's loss (training/losses.py). Bytes held at the peak of a step, which comes at the
start of the backward pass of a micro-batch after the first (the gradients of the earlier
micro-batches exist, every activation is still held, the loss's vocabulary-wide tensors are
alive):

* weights, gradients: 4 bytes per parameter each (fp32: autocast keeps fp32 master weights);
* AdamW: 8 bytes per parameter (two fp32 moments); DDP adds 4 (its gradient buckets);
* under bf16 autocast, the bf16 copy of every matmul weight (all but the input embedding, a
  lookup), which autocast caches for the forward pass and backward keeps: 2 bytes each;
* activations saved for backward, per token and layer, with `e` bytes per activation element
  (2 under bf16 autocast, 4 in fp32) and the residual stream in fp32 (the fp32 embeddings
  make every residual sum fp32 under autocast): the residual (4h, the layer norms' input),
  the two layer norms' outputs as the matmuls see them (2eh), fused QKV (3eh), the rotary
  query and key (2eh), the attention output and its contiguous copy (2eh), the MLP's 4h-wide
  input and output of GELU (8eh), and the attention's log-sum-exp (4 bytes per head): 4h + 17eh
  + 4a bytes; plus the final layer norm's input and output (4h + eh);
* logits and loss: per token and vocabulary entry, 12 bytes: the largest of the forward pass
  (the logits, e, their fp32 copy under bf16, 4, and the fp32 log-probabilities the loss
  keeps, 4) and of its backward (those log-probabilities and two fp32 gradients, 12); the
  logits themselves are freed when the loss function returns.

Checked against the CPU allocator's measured peak (torch.profiler's memory events) for small
GPT-NeoX shapes in fp32 and bf16 autocast, within MEASURED_TOLERANCE
(tests/test_memory_estimate.py). Not in the estimate (so a GPU needs headroom, FIT_FRACTION):
the CUDA context, cuBLAS and NCCL workspaces, and the caching allocator's fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

from proximity.errors import ProximityError

GIB = 2**30
# The estimate must stay under this fraction of the GPU's memory: the rest is for what it does
# not count (CUDA context ~0.5 GiB, cuBLAS/NCCL workspaces, allocator fragmentation).
FIT_FRACTION = 0.85
# The estimate's largest relative error against the measured CPU peak (tested).
MEASURED_TOLERANCE = 0.02

# Memory of one GPU in GiB as `nvidia-smi` / torch report it, matched in order against a
# device name (as in PEAK_FLOPS in training/throughput.py: specific names first). A plain "a100"
# is taken as the 40 GB part, the smaller one.
GPU_MEMORY_GIB: tuple[tuple[str, float], ...] = (
    ("H100 NVL", 93.0),
    ("H100", 79.1),
    ("GH200", 94.5),
    ("H200", 139.8),
    ("A100-80", 79.1),
    ("A100 80", 79.1),
    ("A100", 39.4),
    ("L40S", 44.4),
    ("A10G", 22.0),
)


def gpu_memory_gib(device_name: str) -> float | None:
    """One GPU's memory for a device name (h100, NVIDIA H100 80GB HBM3); None if unknown."""
    name = device_name.upper()
    return next((gib for key, gib in GPU_MEMORY_GIB if key.upper() in name), None)


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a GPT-NeoX model (vocab: the padded output rows)."""

    layers: int
    hidden: int
    heads: int
    vocab: int
    parameters: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of each part at the step's peak; `total` is their sum."""

    weights: int
    gradients: int
    optimizer: int
    ddp_buckets: int
    autocast_copies: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return (
            self.weights
            + self.gradients
            + self.optimizer
            + self.ddp_buckets
            + self.autocast_copies
            + self.activations
            + self.logits
        )

    def gib(self) -> dict[str, float]:
        parts = (
            "weights", "gradients", "optimizer", "ddp_buckets", "autocast_copies",
            "activations", "logits",
        )  # fmt: skip
        return {**{p: getattr(self, p) / GIB for p in parts}, "total": self.total / GIB}

    def fits(self, device_gib: float) -> bool:
        return self.total <= FIT_FRACTION * device_gib * GIB


def training_memory(
    shape: ModelShape, *, micro_batch: int, seq_len: int, bf16: bool, ddp: bool
) -> MemoryEstimate:
    """Peak bytes of a training step on one device (see the module docstring for each term)."""
    n, h = shape.parameters, shape.hidden
    e = 2 if bf16 else 4
    tokens = micro_batch * seq_len
    per_layer = 4 * h + 17 * e * h + 4 * shape.heads
    activations = tokens * (shape.layers * per_layer + 4 * h + e * h)
    logits = tokens * shape.vocab * max(e + 4 + 4 if bf16 else e + 4, 12)
    return MemoryEstimate(
        weights=4 * n,
        gradients=4 * n,
        optimizer=8 * n,
        ddp_buckets=4 * n if ddp else 0,
        autocast_copies=2 * (n - shape.vocab * h) if bf16 else 0,
        activations=activations,
        logits=logits,
    )


def largest_fitting_micro_batch(
    shape: ModelShape,
    *,
    per_rank_batch: int,
    seq_len: int,
    bf16: bool,
    ddp: bool,
    device_gib: float,
) -> int | None:
    """The rule the paper presets follow: the largest divisor of the per-rank batch whose
    estimated peak fits FIT_FRACTION of the GPU (divisors only, so accumulation is exact);
    None when not even one sequence fits."""
    for micro in sorted((d for d in range(1, per_rank_batch + 1) if per_rank_batch % d == 0),
                        reverse=True):  # fmt: skip
        estimate = training_memory(shape, micro_batch=micro, seq_len=seq_len, bf16=bf16, ddp=ddp)
        if estimate.fits(device_gib):
            return micro
    return None


def check_fits(
    shape: ModelShape,
    *,
    micro_batch: int,
    per_rank_batch: int,
    seq_len: int,
    bf16: bool,
    ddp: bool,
    device_gib: float,
    device: str,
    key: str = "train.micro_batch_size",
) -> MemoryEstimate:
    """The estimate, or one line naming `key` and the largest value that fits when it does not."""
    estimate = training_memory(shape, micro_batch=micro_batch, seq_len=seq_len, bf16=bf16, ddp=ddp)
    if estimate.fits(device_gib):
        return estimate
    largest = largest_fitting_micro_batch(
        shape, per_rank_batch=per_rank_batch, seq_len=seq_len, bf16=bf16, ddp=ddp,
        device_gib=device_gib,
    )  # fmt: skip
    advice = (
        f"set {key}={largest} (the largest divisor of the per-GPU batch {per_rank_batch} that fits)"
        if largest
        else "not even one sequence fits: use a GPU with more memory or a shorter model.seq_len"
    )
    raise ProximityError(
        f"{key}={micro_batch}: estimated peak {estimate.total / GIB:.1f} GiB per GPU "
        f"(logits and loss {estimate.logits / GIB:.1f}, activations "
        f"{estimate.activations / GIB:.1f}) exceeds {FIT_FRACTION:.0%} of {device}'s "
        f"{device_gib:.1f} GiB; {advice}"
    )
