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


def sft_examples(target: str, n_docs: int | None, data_dir: str | None) -> int | None:
    """Training examples of an SFT target (None when it cannot be read here, e.g. hub-only)."""
    from proximity.data import load_examples

    try:
        return sum(1 for _ in load_examples(target, n_docs=n_docs, data_dir=data_dir))
    except Exception:
        return None


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


def estimate(plan: Plan, data_dir: str | None, *, measure: bool = True) -> dict[str, NodeEstimate]:
    spec = plan.spec
    vocab = vocab_size(plan, data_dir)
    s = spec.sft
    train_fraction = 1 - spec.data.sft_val_fraction
    examples = {t: sft_examples(t, s.n_docs, data_dir) for t in s.targets}
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
            n = examples[node.info["target"]]
            if n is not None:
                steps_per_epoch = int(n * train_fraction) // batch
                tokens = s.epochs * steps_per_epoch * batch * seq
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
