"""What --dry-run prints: tokens and FLOPs per node and in total, the tokens a naive grid would
train (every SFT run retraining its whole lineage: pretraining prefix, branch, SFT), and time.

Time comes from a quick throughput measurement of each model shape here (estimate.device=cpu)
or from a GPU's bf16 peak FLOP/s times an assumed MFU (paper presets; estimate.device=h100).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from proximity.data import resolve
from proximity.errors import ProximityError
from proximity.tokenizer import load_tokenizer
from proximity.training.data.sft_data import build_sft_data
from proximity.training.data.tokenized import SPLIT_SEED
from proximity.training.grid.plan import Plan
from proximity.training.grid.presets import PYTHIA_VOCAB
from proximity.training.memory import (
    MemoryEstimate,
    ModelShape,
    check_fits,
    gpu_memory_gib,
    training_memory,
)
from proximity.training.presets import flops_per_token, memory_shape, model_config
from proximity.training.throughput import peak_flops_for


@dataclass
class NodeEstimate:
    tokens: int | None
    flops: float | None
    seconds: float | None


def vocab_size(plan: Plan, data_dir: str | None) -> int:
    t = plan.spec.tokenizer
    if t.name == "train":
        return t.vocab_size
    try:
        return load_tokenizer(t.name, data_dir=data_dir).get_vocab_size(with_added_tokens=True)
    except Exception:  # offline without the files: the Pythia size is the paper's
        return PYTHIA_VOCAB


@dataclass(frozen=True)
class SFTCount:
    """Training examples of an SFT target as the trainer will keep them, and how that is known."""

    examples: int | None  # None when the target cannot be read here (e.g. hub-only, offline)
    how: str  # "exact", or why it is approximate
    substitute: str | None = None  # the local stand-in counted, when it is one


def estimate_tokenizer(plan: Plan, data_dir: str | None, trained: str | None):
    """The tokenizer SFT examples are counted with: the grid's own (a file, pythia, or the
    tokenizer node's output when it has run), else Pythia's as a stand-in for one not trained
    yet; (None, why) when neither loads here."""
    name = plan.spec.tokenizer.name
    choice = trained if name == "train" else name
    try:
        if choice is not None:
            return load_tokenizer(choice, data_dir=data_dir), "exact"
        return load_tokenizer("pythia", data_dir=data_dir), (
            "approximate: counted with the Pythia tokenizer, the grid's is not trained yet"
        )
    except Exception as error:  # offline without the files
        return None, f"approximate: no tokenizer here ({error})"


def sft_examples(target: str, plan: Plan, data_dir: str | None, tokenizer, how: str) -> SFTCount:
    """Training examples of an SFT target after the trainer's split and length filter
    (`build_sft_data`: examples whose masked prompt alone fills seq_len are dropped)."""
    s, d = plan.spec.sft, plan.spec.data
    try:
        source = resolve(target, data_dir=data_dir)
        if tokenizer is None:
            n = sum(1 for _ in source.examples(n_docs=s.n_docs))
            held_out = s.val_docs if s.val_docs is not None else n * d.sft_val_fraction
            return SFTCount(int(n - held_out), how, source.info.substitute)
        train, _ = build_sft_data(
            target, tokenizer, seq_len=s.seq_len, mask_prompt=source.info.mask_prompt,
            data_dir=data_dir, n_docs=s.n_docs, val_fraction=d.sft_val_fraction,
            val_docs=s.val_docs, seed=SPLIT_SEED, warn=False,
        )  # fmt: skip
        return SFTCount(len(train), how, source.info.substitute)
    except Exception as error:  # offline without the data, or a spec this machine cannot read
        return SFTCount(None, f"not readable here ({error})")


def measure_tokens_per_s(preset: str, vocab: int, seq_len: int, batch: int) -> float:
    """Tokens/s of a few AdamW steps of this shape on this CPU (after one warm-up step)."""
    # transformers' model code (seconds): only a CPU grid's dry run builds a model
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(model_config(preset, vocab_size=vocab))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, vocab, (batch, seq_len))
    timings = []
    for _ in range(4):
        start = time.perf_counter()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        timings.append(time.perf_counter() - start)
    return batch * seq_len / min(timings[1:])


def estimate(
    plan: Plan,
    data_dir: str | None,
    *,
    measure: bool = True,
    trained_tokenizer: str | None = None,
    sft_counts: dict[str, SFTCount] | None = None,
) -> dict[str, NodeEstimate]:
    """Tokens, FLOPs and time per node. `trained_tokenizer`: the tokenizer node's output when
    it has run, so SFT examples are counted exactly; `sft_counts` receives each target's count."""
    spec = plan.spec
    vocab = vocab_size(plan, data_dir)
    s = spec.sft
    tokenizer, how = estimate_tokenizer(plan, data_dir, trained_tokenizer)
    examples = {t: sft_examples(t, plan, data_dir, tokenizer, how) for t in s.targets}
    if sft_counts is not None:
        sft_counts.update(examples)
    speed: dict[tuple, float] = {}
    peak = peak_flops_for(spec.estimate.device)
    out: dict[str, NodeEstimate] = {}
    for node in plan.nodes:
        if node.kind in ("tokenizer", "prepare"):
            out[node.id] = NodeEstimate(0, 0.0, None)
            continue
        cfg = node.settings
        seq, batch = cfg["model"]["seq_len"], cfg["train"]["batch_size"]
        tokens = node.tokens
        if node.kind == "sft":
            n = examples[node.info["target"]].examples
            if n is not None:
                # Token slots at seq_len, as results.csv's tokens_sft counts them.
                tokens = s.epochs * (n // batch) * batch * seq
        preset = cfg["model"]["preset"]
        per_token = flops_per_token(model_config(preset, vocab_size=vocab), seq)
        flops = per_token * tokens if tokens is not None else None
        seconds = None
        if flops is not None and peak is not None:
            seconds = flops / (peak * spec.estimate.mfu * spec.estimate.gpus)
        elif tokens is not None and spec.estimate.device == "cpu" and measure:
            key = (preset, seq, batch)
            if key not in speed:
                speed[key] = measure_tokens_per_s(preset, vocab, seq, batch)
            seconds = tokens / speed[key]
        out[node.id] = NodeEstimate(tokens, flops, seconds)
    return out


@dataclass(frozen=True)
class KindMemory:
    """Peak GPU memory of one node kind's training step, and the geometry it assumes."""

    kind: str
    model: str
    gpus: int  # ranks the kind's run is split over
    per_rank_batch: int
    micro_batch: int
    seq_len: int
    bf16: bool
    shape: ModelShape
    estimate: MemoryEstimate


def plan_gpu(plan: Plan) -> tuple[str, float] | None:
    """The GPU the spec names and its memory in GiB: estimate.device, else a GPU name in a
    slurm.sbatch option (e.g. constraint=h100); None when it names none (a CPU grid)."""
    spec = plan.spec
    if spec.estimate.gpu_memory_gib is not None:
        return spec.estimate.device, spec.estimate.gpu_memory_gib
    names = [spec.estimate.device, *(item.partition("=")[2] for item in spec.slurm.sbatch)]
    return next(((n, gib) for n in names if (gib := gpu_memory_gib(n)) is not None), None)


def memory_by_kind(plan: Plan, vocab: int) -> list[KindMemory]:
    """The estimated peak per training node kind and model, at each node's own micro-batch
    (train.micro_batch_size capped at the per-GPU batch, else that whole batch, as the loop
    runs it); a kind runs on its slurm section's GPUs, else on estimate.gpus."""
    spec = plan.spec
    out: dict[tuple[str, str], KindMemory] = {}
    for node in plan.nodes:
        cfg = node.settings
        if node.kind not in ("pretrain", "midtrain", "sft"):
            continue
        if (node.kind, cfg["model"]["preset"]) in out:
            continue
        resources = spec.slurm.for_kind(node.kind)
        gpus = resources.nodes * resources.ranks_per_node if resources.gpus_per_node else 0
        gpus = gpus or spec.estimate.gpus
        per_rank = max(1, cfg["train"]["batch_size"] // gpus)
        micro = min(cfg["train"]["micro_batch_size"] or per_rank, per_rank)
        seq, bf16 = cfg["model"]["seq_len"], cfg["system"]["dtype"] != "fp32"
        shape = memory_shape(model_config(cfg["model"]["preset"], vocab_size=vocab))
        estimate = training_memory(shape, micro_batch=micro, seq_len=seq, bf16=bf16, ddp=gpus > 1)
        out[node.kind, cfg["model"]["preset"]] = KindMemory(
            node.kind, cfg["model"]["preset"], gpus, per_rank, micro, seq, bf16, shape, estimate
        )
    return list(out.values())


def check_memory(plan: Plan, memory: list[KindMemory]) -> None:
    """Refuse, in one line naming the key to set, a plan whose training nodes do not fit the
    GPU the spec names (nothing to check on a CPU grid)."""
    gpu = plan_gpu(plan)
    if gpu is None:
        return
    for m in memory:
        try:
            check_fits(
                m.shape, micro_batch=m.micro_batch, per_rank_batch=m.per_rank_batch,
                seq_len=m.seq_len, bf16=m.bf16, ddp=m.gpus > 1, device_gib=gpu[1],
                device=gpu[0], key="train_set: train.micro_batch_size",
            )  # fmt: skip
        except ProximityError as error:
            raise ProximityError(
                f"grid {m.kind} nodes ({m.model}, {m.gpus} GPUs): {error}"
            ) from None


def check_plan_memory(plan: Plan, data_dir: str | None) -> list[KindMemory]:
    """`check_memory` before a plan runs; the estimates ([] on a CPU grid, nothing loaded)."""
    if plan_gpu(plan) is None:
        return []
    memory = memory_by_kind(plan, vocab_size(plan, data_dir))
    check_memory(plan, memory)
    return memory


def naive_tokens(plan: Plan, estimates: dict[str, NodeEstimate]) -> int | None:
    """Tokens of the same grid without shared prefixes: each SFT run trains its whole lineage."""
    by_id = plan.by_id()
    total = 0
    for node in plan.sft_nodes():
        chain = node
        while True:
            tokens = estimates[chain.id].tokens
            if tokens is None:
                return None
            if chain.kind == "midtrain":
                start = chain.init_from[1] if chain.init_from else 0
                step_tokens = plan.spec.pretrain.batch_size * plan.spec.pretrain.seq_len
                total += tokens + (start or 0) * step_tokens  # its own pretraining prefix
                break
            total += tokens
            if chain.kind == "pretrain" or not chain.parents:
                break
            chain = by_id[chain.parents[0]]
    return total
