"""Independent reference implementations the tests compare the package against.

Plain Python (dicts, Counter, `random`), written from the paper's description and the
authors' script, sharing no code with `proximity`.
"""

from __future__ import annotations

import math
import random
from collections import Counter

from tokenizers import Tokenizer


def paper_protocol_counter(texts: list[str], tokenizer: Tokenizer) -> Counter:
    """Unigram counts under the paper's protocol: 10,000 characters, then 512 tokens."""
    counter: Counter = Counter()
    for text in texts:
        counter.update(tokenizer.encode(text[:10_000], add_special_tokens=False).ids[:512])
    return counter


def reference_components(counts_a: Counter, counts_b: Counter, top_k: int = 50_000) -> dict:
    """PAPER.md read literally: keep top-k, renormalise on the union, cosine/Jaccard/JS."""

    def top(counter: Counter) -> dict[int, int]:
        ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
        return dict(ranked[:top_k])

    kept_a, kept_b = top(counts_a), top(counts_b)
    union = set(kept_a) | set(kept_b)
    total_a, total_b = sum(kept_a.values()), sum(kept_b.values())
    p = {t: kept_a.get(t, 0) / total_a for t in union}
    q = {t: kept_b.get(t, 0) / total_b for t in union}
    dot = sum(p[t] * q[t] for t in union)
    cosine = dot / (
        math.sqrt(sum(v * v for v in p.values())) * math.sqrt(sum(v * v for v in q.values()))
    )
    jaccard = len(set(kept_a) & set(kept_b)) / len(union)
    jsd = 0.0
    for t in union:
        m = (p[t] + q[t]) / 2
        if p[t] > 0:
            jsd += 0.5 * p[t] * math.log(p[t] / m)
        if q[t] > 0:
            jsd += 0.5 * q[t] * math.log(q[t] / m)
    js = 1 / (1 + jsd)
    return {
        "cosine": cosine,
        "jaccard": jaccard,
        "js": js,
        "paper": 0.4 * cosine + 0.3 * jaccard + 0.3 * js,
    }


def reference_paper(counts_a: Counter, counts_b: Counter, top_k: int = 50_000) -> float:
    return reference_components(counts_a, counts_b, top_k)["paper"]


def authors_mixed_documents(
    pretrain_docs: list[str], special_docs: list[str], weight: float, rng: random.Random
) -> list[str]:
    """The authors' `create_mixed_dataset` (util_scripts/dataset_similarity_syntactic.py in
    nightingal3/midtraining), restated: every specialised document plus
    int(n · (1 − w) / w) pretraining documents drawn with `random.sample`, capped at what
    the pretraining sample holds, shuffled."""
    pretrain_share = 1.0 - weight
    wanted = int(len(special_docs) * pretrain_share / weight)
    mixed = rng.sample(pretrain_docs, min(wanted, len(pretrain_docs))) + special_docs
    rng.shuffle(mixed)
    return mixed
