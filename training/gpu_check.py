"""The prepared first-GPU check (`make gpu-check`): what issue 16 fixed by reading, confirmed on
one CUDA GPU in a few minutes, no data needed (random tokens at the paper's shapes).

    python -m proximity.training.gpu_check [--preset 70m] [--micro-batch 32] [--steps 3]

For eager and compiled runs of the loop's model (causal-only attention, bf16 autocast, fused
AdamW, lm_loss, 2 accumulation steps) it prints: the peak of torch.cuda.max_memory_allocated
against training/memory.py's estimate; whether SDPA ran a Flash kernel (CUDA kernel names in
the profiler); and whether the steady-state steps synchronised with the host
(torch.cuda.set_sync_debug_mode("error") raises on a synchronising call). It exits non-zero if
memory is off by more than GPU_TOLERANCE or a check fails. Never run yet (written without a GPU).
"""

from __future__ import annotations

import argparse
import sys

import torch
from transformers import GPTNeoXForCausalLM

from proximity.errors import ProximityError
from proximity.training.attention import use_causal_attention
from proximity.training.grid.presets import PYTHIA_VOCAB
from proximity.training.losses import lm_loss
from proximity.training.memory import GIB, training_memory
from proximity.training.presets import memory_shape, model_config

GPU_TOLERANCE = 0.15  # the CPU check agrees to 2%; CUDA kernels keep other workspaces


def run(preset: str, micro: int, seq_len: int, steps: int, compile_: bool) -> dict[str, object]:
    device = torch.device("cuda")
    torch.manual_seed(0)
    config = model_config(preset, vocab_size=PYTHIA_VOCAB)
    model = GPTNeoXForCausalLM(config).to(device)
    use_causal_attention(model)
    forward = torch.compile(model) if compile_ else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, config.vocab_size, (micro, seq_len), device=device)

    def step() -> None:
        for _ in range(2):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = lm_loss(forward, x, x) / 2
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # compiles, allocates the AdamW state
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    synced: str | bool = False
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(steps):
            step()
    except RuntimeError as error:  # a synchronising call under sync debug mode "error"
        synced = str(error).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    kernels = {e.key for e in prof.key_averages()}
    estimate = training_memory(
        memory_shape(config), micro_batch=micro, seq_len=seq_len, bf16=True, ddp=False
    )
    return {
        "measured_gib": torch.cuda.max_memory_allocated(device) / GIB,
        "estimated_gib": estimate.total / GIB,
        "flash": any("flash" in k.lower() for k in kernels),
        "host_sync": synced,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="70m")
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise ProximityError("gpu-check needs a CUDA GPU; none is visible")
    failed = False
    print(f"{torch.cuda.get_device_name()}: {args.preset}, {args.micro_batch} x {args.seq_len}")
    for compile_ in (False, True):
        r = run(args.preset, args.micro_batch, args.seq_len, args.steps, compile_)
        off = r["measured_gib"] / r["estimated_gib"] - 1
        ok = abs(off) <= GPU_TOLERANCE and r["flash"] and not r["host_sync"]
        failed |= not ok
        print(
            f"{'compiled' if compile_ else 'eager   '}: peak {r['measured_gib']:.2f} GiB, "
            f"estimate {r['estimated_gib']:.2f} ({off:+.1%}); flash kernel {r['flash']}; "
            f"host sync {r['host_sync'] or 'none'}; {'ok' if ok else 'FAILED'}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ProximityError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
