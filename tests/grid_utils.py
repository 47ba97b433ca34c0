"""Generated grid results (docs/RESULTS.md columns) for the analysis tests.

The losses are drawn here from a known relation, so a test can check a statistic against
the truth it was generated from; the specs are real registry names so PA can be computed on
../shared/data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

MIXTURES = {"starcoder": 0.2, "math": 0.12, "alpaca": 0.05}
TARGETS = ("pycode", "gsm8k", "lima")


def generated_results(
    *,
    models: tuple[str, ...] = ("micro-2l-128",),
    seeds: tuple[int, ...] = (0, 1, 2),
    mixtures: dict[str, float] = MIXTURES,
    targets: tuple[str, ...] = TARGETS,
    gain: dict[tuple[str, str], float] | None = None,
    noise: float = 0.0,
    lrs: tuple[float, ...] = (1e-4, 3e-4),
    cpt: bool = True,
    ablation_steps: tuple[int, ...] = (),
    rng_seed: int = 0,
) -> pd.DataFrame:
    """One row per SFT run; `gain[(mixture, target)]` is the true relative improvement.

    The selected LR has the lowest loss; the other LRs are 5% worse. Control loss per target
    is 3.0 (+ seed noise); a branch's loss is control·(1 − gain) (+ noise).
    """
    rng = np.random.default_rng(rng_seed)
    gain = gain or {(m, t): 0.01 * (i + 1) * (j + 1) for i, m in enumerate(mixtures)
                    for j, t in enumerate(targets)}  # fmt: skip
    rows = []
    for model in models:
        for seed in seeds:
            control = {t: 3.0 + 0.05 * rng.standard_normal() for t in targets}
            branches = [("control", "c4", "c4", 0.0, 1000, False, None)]
            for m, w in mixtures.items():
                spec = f"c4:{1 - w:g}+{m}:{w:g}"
                branches.append(("midtrain", m, spec, w, 600, False, m))
                if cpt:
                    branches.append(("cpt", m, m, 1.0, 600, False, m))
                for step in ablation_steps:
                    for aw in (0.1, 0.5):
                        branches.append(
                            ("midtrain", m, f"c4:{1 - aw:g}+{m}:{aw:g}", aw, step, True, m)
                        )
            for kind, mixture, spec, weight, start, ablation, key in branches:
                for target in targets:
                    g = 0.0 if key is None else gain[(key, target)]
                    if kind == "cpt":
                        g *= 0.8
                    if ablation:
                        g *= 1.0 + (1000 - start) / 1000
                    best = control[target] * (1 - g) + noise * rng.standard_normal()
                    for k, lr in enumerate(lrs):
                        loss = best * (1.05 if k else 1.0)
                        rows.append({
                            "model": model, "seed": seed, "branch_kind": kind,
                            "mixture": mixture, "mixture_spec": spec, "pretrain_spec": "c4",
                            "weight": weight, "start_step": start, "ablation": ablation,
                            "target": target, "target_spec": target, "lr": lr,
                            "selected": k == 0, "sft_val_loss": loss,
                            "c4_val_loss": 4.0 + weight * 0.3 + 0.01 * k,
                            "target_val_loss_before": loss + 1.0,
                            "c4_val_loss_before": 3.9 + weight * 0.2,
                            "tokens_pretrain": 100_000, "tokens_midtrain": 0 if key is None
                            else 50_000, "tokens_sft": 10_000, "wall_time_s": 1.0,
                            "node_id": f"sft-{model}-{seed}-{spec}-{start}-{target}-{lr:g}",
                            "branch_node_id": f"branch-{model}-{seed}-{spec}-{start}",
                            "pretrain_node_id": f"pretrain-{model}-{seed}",
                            "substitutes": "starcoder: python stdlib code for StarCoder"
                            if mixture == "starcoder" else "",
                        })  # fmt: skip
    return pd.DataFrame(rows)


def write_grid(
    results: pd.DataFrame, root: Path, data_dir: Path | None = None, tokenizer: str = "pythia"
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    results.to_csv(root / "results.csv", index=False)
    config = {"name": "generated", "tokenizer": {"name": tokenizer}, "pretrain": {"data": "c4"},
              "seeds": sorted(results["seed"].unique().tolist()),
              "data": {"data_dir": str(data_dir) if data_dir else None}}  # fmt: skip
    (root / "grid.yaml").write_text(yaml.safe_dump(config))
    return root
