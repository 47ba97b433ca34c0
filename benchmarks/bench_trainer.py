"""Benchmark our training loop against a Hugging Face `Trainer` loop; prints absolute numbers.

    .venv/bin/python benchmarks/bench_trainer.py --data-dir ../shared/data
    .venv/bin/python benchmarks/bench_trainer.py --data-dir ../shared/data --tokenizer pythia

CPU part (always): the same model (`--preset`, default micro-4l-256), the same tokenised C4
batches in the same order, the same batch, AdamW settings, warmup + cosine schedule and gradient
clipping, trained by `proximity.training.loop.train` and by `transformers.Trainer`, interleaved
(`--repeats` rounds, ours then theirs) so both see the same machine load. Reported: tokens/s
(median over rounds, first `--skip` steps of each run excluded as warm-up), the ratio
ours / Trainer (goal >= 1.2), and model FLOPs utilisation against the measured fp32 matmul
peak of this CPU at the same thread count (CPUs have no datasheet number we could trust).

GPU part (only when CUDA is visible): MFU of our loop for Pythia 70m and 160m at seq_len 2048,
bf16 autocast, fused AdamW, against the GPU's dense bf16 peak. `benchmarks/gpu_check.py`
(`make gpu-check`) runs the three loops below side by side on a GPU with compile.

The three loops (`run_ours`, `run_trainer`, `run_bare`) take one `Bench` (model, batch,
device, dtype, compile) and return seconds per step, so gpu_check.py times exactly these.

By default the tokenizer is an 8k BPE trained on the C4 sample (the micro grid's setup: on CPU a
50k output head dominates a tiny model). Needs `accelerate` (Trainer's dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from proximity.training.config import RunConfig
from proximity.training.presets import flops_per_token, model_config

LR, MIN_LR, WARMUP = 1e-3, 1e-4, 5


@dataclass(frozen=True)
class Bench:
    """One speed comparison: every loop trains this model on these batches with these settings."""

    preset: str
    seq_len: int
    batch_size: int
    steps: int
    skip: int  # warm-up steps (compilation included) left out of the timing
    tokenizer: str
    data_dir: str | None
    cache: Path  # the token cache (one prepared C4 build shared by the loops)
    n_docs: int | None = None
    micro_batch_size: int | None = None
    device: str = "cpu"
    dtype: str = "fp32"  # fp32, or bf16 autocast
    compile: bool = False
    threads: int | None = None

    @property
    def micro(self) -> int:
        return self.micro_batch_size or self.batch_size

    @property
    def step_tokens(self) -> int:
        return self.batch_size * self.seq_len


def our_config(bench: Bench, out_dir: Path) -> RunConfig:
    return RunConfig.from_dict(
        {
            "out_dir": str(out_dir),
            "model": {"preset": bench.preset, "seq_len": bench.seq_len},
            "data": {
                "train": "c4",
                "tokenizer": bench.tokenizer,
                "data_dir": bench.data_dir,
                "cache_dir": str(bench.cache),
                "n_docs": bench.n_docs,
            },
            "optim": {"lr": LR, "min_lr": MIN_LR, "warmup_steps": WARMUP, "weight_decay": 0.1},
            "train": {
                "steps": bench.steps,
                "batch_size": bench.batch_size,
                "micro_batch_size": bench.micro_batch_size,
                "log_every": 1,
            },
            "eval": {"every": 0, "max_batches": 1},
            "checkpoint": {"every": 0},
            "system": {
                "device": bench.device,
                "threads": bench.threads,
                "dtype": bench.dtype,
                "compile": bench.compile,
                "progress": False,
            },
        }
    )


def _synchronize(device: str) -> None:
    # GPU work is queued: a step's end is when the device has finished it, not the host.
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_ours(bench: Bench) -> list[float]:
    """Seconds per step of proximity.training.loop.train, steps skip+1 .. steps (1-step metrics
    windows; log_every=1 reads the loss every step, so each window ends with the GPU caught up)."""
    from proximity.training.loop import train
    from proximity.training.metrics_log import read_metrics

    with tempfile.TemporaryDirectory() as tmp:
        train(our_config(bench, Path(tmp)))
        lines = [m for m in read_metrics(Path(tmp) / "metrics.jsonl") if m["split"] == "train"]
    return [bench.step_tokens / m["tokens_per_s"] for m in lines if m["step"] > bench.skip]


def _same_batches(bench: Bench):
    """Our data for `bench` (the prepared C4 build): step -> (inputs, targets) on the CPU."""
    from proximity.tokenizer import load_tokenizer
    from proximity.training import phases
    from proximity.training.distributed import DistInfo

    tokenizer = load_tokenizer(bench.tokenizer, data_dir=bench.data_dir)
    info = DistInfo(0, 0, 1, torch.device("cpu"))
    cfg = our_config(bench, Path("unused"))
    return phases.pretraining_data(cfg, tokenizer, info, progress=False), tokenizer


def _fresh_model(bench: Bench, vocab: int):
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(0)
    return GPTNeoXForCausalLM(model_config(bench.preset, vocab_size=vocab))


def run_trainer(bench: Bench) -> list[float]:
    """The same model, batches and optimiser through transformers.Trainer (needs accelerate)."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    if bench.threads:
        torch.set_num_threads(bench.threads)
    data, tokenizer = _same_batches(bench)

    class SameBatches(torch.utils.data.IterableDataset):
        # Rows in exactly our order (an iterable dataset gets no shuffling sampler).
        def __iter__(self):
            for step in range(bench.steps):
                inputs, _ = data.batch(step)
                for row in inputs:
                    # Trainer's model shifts labels itself: same forward/backward cost as ours.
                    yield {"input_ids": row, "labels": row}

    model = _fresh_model(bench, tokenizer.get_vocab_size())
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            _synchronize(bench.device)
            stamps.append(time.perf_counter())

        def on_train_begin(self, *_, **__):
            stamps.append(time.perf_counter())

    cuda = bench.device.startswith("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=bench.micro,
            gradient_accumulation_steps=bench.batch_size // bench.micro,
            max_steps=bench.steps,
            learning_rate=LR,
            weight_decay=0.1,
            adam_beta1=0.9,
            adam_beta2=0.95,
            max_grad_norm=1.0,
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr": MIN_LR},
            warmup_steps=WARMUP,
            optim="adamw_torch_fused" if cuda else "adamw_torch",  # ours: fused on CUDA
            use_cpu=not cuda,
            bf16=bench.dtype == "bf16",  # autocast, like ours
            torch_compile=bench.compile,
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            dataloader_pin_memory=cuda,
            seed=0,
        )
        Trainer(
            model=model, args=training_args, train_dataset=SameBatches(), callbacks=[Clock()]
        ).train()
    # stamps[0] = train begin, stamps[i] = end of step i; time steps skip+1 .. steps.
    return [b - a for a, b in zip(stamps[bench.skip : -1], stamps[bench.skip + 1 :], strict=True)]


def run_bare(bench: Bench) -> list[float]:
    """The ceiling: the same model and batches in the plainest loop PyTorch allows (forward,
    loss, backward per micro-batch, then the clipping and AdamW step both loops above do; fused
    AdamW on CUDA), with nothing else: no schedule, logging, checks or checkpoints."""
    import contextlib

    import torch.nn.functional as F

    if bench.threads:
        torch.set_num_threads(bench.threads)
    data, tokenizer = _same_batches(bench)
    device = torch.device(bench.device)
    model = _fresh_model(bench, tokenizer.get_vocab_size()).to(device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.1,
        fused=device.type == "cuda",
    )  # fmt: skip
    forward = torch.compile(model) if bench.compile else model
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if bench.dtype == "bf16"
        else contextlib.nullcontext()
    )
    accumulation = bench.batch_size // bench.micro
    times = []
    for step in range(bench.steps):
        start = time.perf_counter()
        inputs, targets = data.batch(step)
        inputs, targets = inputs.to(device), targets.to(device)
        for i in range(accumulation):
            rows = slice(i * bench.micro, (i + 1) * bench.micro)
            with autocast:
                logits = forward(input_ids=inputs[rows], use_cache=False).logits
                loss = F.cross_entropy(
                    logits.float().view(-1, logits.size(-1)), targets[rows].reshape(-1)
                )
            (loss / accumulation).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _synchronize(bench.device)
        times.append(time.perf_counter() - start)
    return times[bench.skip :]


def matmul_peak(threads: int | None, n: int = 2048, repeats: int = 10, dtype=None) -> float:
    """Measured matmul FLOP/s (fp32, or bf16): the denominator of CPU MFU."""
    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def gpu_part(args, tokenizer: str) -> None:
    from proximity.tokenizer import load_tokenizer
    from proximity.training.throughput import peak_flops_for

    vocab = load_tokenizer(tokenizer, data_dir=args.data_dir).get_vocab_size()
    name = torch.cuda.get_device_name()
    peak = peak_flops_for(name)
    print(f"\nGPU: {name} (dense bf16 peak {peak / 1e12 if peak else 'unknown'} TFLOP/s)")
    for preset, batch, micro in (("70m", 32, 16), ("160m", 32, 8)):
        for compile_ in (False, True):
            bench = Bench(
                preset=preset, seq_len=2048, batch_size=batch, steps=30, skip=10,
                tokenizer=tokenizer, data_dir=args.data_dir, cache=args.cache,
                micro_batch_size=micro, device="cuda", dtype="bf16", compile=compile_,
            )  # fmt: skip
            tps = bench.step_tokens / statistics.median(run_ours(bench))
            fpt = flops_per_token(model_config(preset, vocab_size=vocab), 2048)
            mfu = f"MFU {tps * fpt / peak:.1%}" if peak else "MFU unknown"
            print(
                f"  pythia-{preset:<5} compile={compile_!s:<5} batch {batch}x2048 "
                f"(micro {micro}): {tps:>12,.0f} tokens/s   {mfu}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=os.environ.get("PROXIMITY_DATA_DIR", "../shared/data")
    )
    parser.add_argument("--tokenizer", default=None, help="default: an 8k BPE trained on C4")
    parser.add_argument("--preset", default="micro-4l-256")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps left out of timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n-docs", type=int, default=1000)
    parser.add_argument(
        "--dtype", choices=["fp32", "bf16"], default="fp32", help="both loops (bf16 = autocast)"
    )
    parser.add_argument("--no-gpu", action="store_true")
    args = parser.parse_args()
    args.cache = Path(tempfile.mkdtemp(prefix="bench-trainer-"))

    tokenizer = args.tokenizer
    if tokenizer is None:
        from proximity.data import load_texts
        from proximity.training.tokenizer_training import save_tokenizer, train_tokenizer

        texts = list(load_texts("c4", n_docs=args.n_docs, data_dir=args.data_dir))
        tokenizer = str(save_tokenizer(train_tokenizer(texts, 8192), args.cache / "tok8k"))
    from proximity.tokenizer import load_tokenizer

    vocab = load_tokenizer(tokenizer, data_dir=args.data_dir).get_vocab_size()
    config = model_config(args.preset, vocab_size=vocab)
    fpt = flops_per_token(config, args.seq_len)
    threads = args.threads or torch.get_num_threads()
    print(
        f"CPU: {os.cpu_count()} cores visible, torch threads {threads}; model {args.preset} "
        f"(vocab {config.vocab_size}), batch {args.batch_size}x{args.seq_len}, "
        f"{args.steps} steps ({args.skip} warm-up), {args.repeats} interleaved rounds, "
        f"{args.dtype}"
    )

    # Per-step times pooled over rounds; the median is robust to the other processes that share
    # this machine (a descheduled OpenMP thread makes single steps 10x slower).
    bench = Bench(
        preset=args.preset, seq_len=args.seq_len, batch_size=args.batch_size, steps=args.steps,
        skip=args.skip, tokenizer=tokenizer, data_dir=args.data_dir, cache=args.cache,
        n_docs=args.n_docs, dtype=args.dtype, threads=args.threads,
    )  # fmt: skip
    step_tokens = bench.step_tokens
    ours, theirs = [], []
    for round_ in range(args.repeats):
        ours += run_ours(bench)
        theirs += run_trainer(bench)
        print(
            f"  round {round_ + 1}: median so far ours {step_tokens / statistics.median(ours):,.0f}"
            f" tokens/s, Trainer {step_tokens / statistics.median(theirs):,.0f}"
        )
    peak = matmul_peak(args.threads, dtype=torch.bfloat16 if args.dtype == "bf16" else None)
    ours_m = step_tokens / statistics.median(ours)
    theirs_m = step_tokens / statistics.median(theirs)
    ours_mean = step_tokens * len(ours) / sum(ours)
    theirs_mean = step_tokens * len(theirs) / sum(theirs)
    print(
        f"{args.dtype} matmul peak (measured): {peak / 1e9:,.1f} GFLOP/s; model {fpt / 1e6:.1f} "
        f"MFLOP/token; median step time of {len(ours)} + {len(theirs)} steps"
    )
    for name, value in (("ours   ", ours_m), ("Trainer", theirs_m)):
        print(
            f"{name}: {value:>10,.0f} tokens/s   {value * fpt / 1e9:6.1f} GFLOP/s   "
            f"MFU {value * fpt / peak:.1%}"
        )
    print(
        f"ratio ours / Trainer: {ours_m / theirs_m:.2f}x (goal >= 1.2x); on mean step time "
        f"{ours_mean / theirs_mean:.2f}x ({ours_mean:,.0f} vs {theirs_mean:,.0f} tokens/s)"
    )
    print(
        json.dumps(
            {
                "ours_tokens_per_s": round(ours_m),
                "trainer_tokens_per_s": round(theirs_m),
                "ratio": round(ours_m / theirs_m, 3),
                "cpu_mfu_ours": ours_m * fpt / peak,
                "cpu_mfu_trainer": theirs_m * fpt / peak,
            }
        )
    )
    if torch.cuda.is_available() and not args.no_gpu:
        gpu_part(args, args.tokenizer or "pythia")


if __name__ == "__main__":
    main()
