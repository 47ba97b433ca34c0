"""Where a CPU training step's time goes: model forward + backward vs clipping + AdamW.

    .venv/bin/python benchmarks/bench_step_breakdown.py [--preset micro-4l-256] [--threads 1]

Why: bench_trainer.py finds our loop and transformers.Trainer equally fast. This splits one
step of the same model and batch into the part both loops share (the Hugging Face model's
forward and backward) and the part a loop owns (clipping and the optimizer step), for plain,
foreach and fused AdamW, interleaved so each sees the same machine load.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import GPTNeoXForCausalLM

from proximity.training.presets import model_config


def time_steps(model, batch, optimizer_kind: str, steps: int, skip: int) -> tuple[float, float]:
    """Median seconds of (forward + backward) and of (clip + optimizer step + zero_grad)."""
    options = {"plain": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **options[optimizer_kind])
    vocab = model.config.vocab_size
    model_times, loop_times = [], []
    for step in range(steps + skip):
        start = time.perf_counter()
        logits = model(input_ids=batch[:, :-1]).logits
        F.cross_entropy(logits.view(-1, vocab), batch[:, 1:].reshape(-1)).backward()
        middle = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end = time.perf_counter()
        if step >= skip:
            model_times.append(middle - start)
            loop_times.append(end - middle)
    return statistics.median(model_times), statistics.median(loop_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="micro-4l-256")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(model_config(args.preset, vocab_size=args.vocab)).train()
    batch = torch.randint(0, args.vocab, (args.batch, args.seq_len + 1))
    shape = f"batch {args.batch}x{args.seq_len}, {args.threads} thread(s)"
    print(f"{args.preset}, vocab {args.vocab}, {shape}, median of {args.steps} steps")
    for round_index in range(args.rounds):
        for kind in ("plain", "foreach", "fused"):
            model_s, loop_s = time_steps(model, batch, kind, args.steps, skip=2)
            share = loop_s / (model_s + loop_s)
            print(
                f"round {round_index + 1} AdamW {kind:7s}  "
                f"forward+backward {model_s * 1e3:7.1f} ms  "
                f"clip+optimizer {loop_s * 1e3:6.1f} ms  ({share:.1%} of the step)"
            )


if __name__ == "__main__":
    main()
