"""What --dry-run prints: tokens and FLOPs per node and in total, the tokens a naive grid would
train (every SFT run retraining its whole lineage: pretraining prefix, branch, SFT), and time.

Time comes from a quick throughput measurement of each model shape here (estimate.device=cpu)
or from a GPU's bf16 peak FLOP/s times an assumed MFU (paper presets; estimate.device=h100).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from training.grid.plan import Plan
from training.loop import peak_flops_for
from training.presets import flops_per_token, model_config

PYTHIA_VOCAB = 50_277


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
        from proximity.tokenizer import load_tokenizer

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
    from proximity.tokenizer import load_tokenizer

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
    from proximity.data import describe_source, load_examples
    from training.sft_data import build_sft_data
    from training.tokenized import SPLIT_SEED

    s, d = plan.spec.sft, plan.spec.data
    try:
        source = describe_source(target, data_dir=data_dir)
        if tokenizer is None:
            n = sum(1 for _ in load_examples(target, n_docs=s.n_docs, data_dir=data_dir))
            held_out = s.val_docs if s.val_docs is not None else n * d.sft_val_fraction
            return SFTCount(int(n - held_out), how, source.substitute)
        train, _ = build_sft_data(
            target, tokenizer, seq_len=s.seq_len, mask_prompt=source.mask_prompt,
            data_dir=data_dir, n_docs=s.n_docs, val_fraction=d.sft_val_fraction,
            val_docs=s.val_docs, seed=SPLIT_SEED, warn=False,
        )  # fmt: skip
        return SFTCount(len(train), how, source.substitute)
    except Exception:
        return SFTCount(None, "not readable here")


def measure_tokens_per_s(preset: str, vocab: int, seq_len: int, batch: int) -> float:
    """Tokens/s of a few AdamW steps of this shape on this CPU (after one warm-up step)."""
    import torch
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
