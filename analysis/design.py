"""What the grid's design delivered, read from its files: is it in the regime it claims?

Three checks issue 15 asks the report to show beside the correlation, each "not recorded" for
a grid written before the file or column existed (figures/micro):

- per model size, the pretrained model's C4 validation loss beside unigram and interpolated
  bigram models counted from the same pretraining tokens (pretraining.csv,
  training/ngram_baseline.py): a model that does not beat the bigram has learnt little beyond
  token frequencies;
- per SFT target, the examples trained and scored, how many were cut or dropped at seq_len and
  the optimizer steps (results.csv `sft_*` columns);
- per model size, how many selected learning rates sit at each edge of the sweep: a selection
  at the largest LR says the optimum may lie beyond it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from proximity.analysis.results import BRANCH_KEYS, Grid

PRETRAINING = "pretraining.csv"
SFT_COLUMNS = {
    "sft_train_examples": "train_examples",
    "sft_val_examples": "val_examples",
    "sft_truncated": "truncated",
    "sft_dropped": "dropped",
    "sft_steps": "steps",
}


def design_summary(grid: Grid) -> dict[str, Any]:
    """The three checks as one JSON-ready record (statistics.json `design`)."""
    return {
        "pretraining": pretraining_baselines(grid),
        "sft": sft_accounting(grid.results),
        "lr_edges": lr_edges(grid.results),
    }


def pretraining_baselines(grid: Grid) -> dict[str, Any]:
    """Per model size: mean over seeds of the C4 validation loss and of both baselines, and
    by how much the model beats the bigram (nats per token; positive: better)."""
    path = grid.root / PRETRAINING
    if not path.exists():
        return {"recorded": False, "why": f"no {PRETRAINING} in {grid.root}"}
    table = pd.read_csv(path)
    needed = ["model", "seed", "c4_val_loss", "unigram_val_loss", "bigram_val_loss"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        return {"recorded": False, "why": f"{path}: no column {missing[0]}"}
    models = {}
    for model, group in table.groupby("model", sort=True):
        means = group[needed[2:]].mean()
        models[str(model)] = {
            "n_seeds": int(group["seed"].nunique()),
            "c4_val_loss": float(means["c4_val_loss"]),
            "c4_val_loss_std": _std(group["c4_val_loss"]),
            "unigram_val_loss": float(means["unigram_val_loss"]),
            "bigram_val_loss": float(means["bigram_val_loss"]),
            "beats_bigram_by": float(means["bigram_val_loss"] - means["c4_val_loss"]),
            "beats_bigram_every_seed": bool(
                (group["c4_val_loss"] < group["bigram_val_loss"]).all()
            ),
        }
    return {"recorded": True, "models": models}


def _std(values: pd.Series) -> float | None:
    return float(values.std(ddof=1)) if len(values) > 1 else None


def sft_accounting(results: pd.DataFrame) -> dict[str, Any]:
    """Per (model, target): examples trained and scored, cut, dropped, optimizer steps (the
    values of its selected runs; min and max when they differ between runs)."""
    missing = [c for c in SFT_COLUMNS if c not in results.columns]
    if missing:
        return {"recorded": False, "why": f"results.csv has no column {missing[0]}"}
    chosen = results[results["selected"]]
    rows = []
    for (model, target), group in chosen.groupby(["model", "target"], sort=True):
        row: dict[str, Any] = {"model": str(model), "target": str(target)}
        for column, name in SFT_COLUMNS.items():
            values = pd.to_numeric(group[column], errors="coerce").dropna()
            if values.empty:
                row[name] = None
            elif values.min() == values.max():
                row[name] = int(values.iloc[0])
            else:
                row[name] = [int(values.min()), int(values.max())]
        rows.append(row)
    return {"recorded": True, "targets": rows}


def lr_edges(results: pd.DataFrame) -> dict[str, Any]:
    """Per model size: of the (seed, branch, target) groups, how many selected the lowest and
    the highest LR that group swept, and how many one inside."""
    keys = ["seed", *BRANCH_KEYS]
    models = {}
    for model, runs in results.groupby("model", sort=True):
        counts = {"groups": 0, "lowest": 0, "highest": 0, "inside": 0}
        sweeps = set()
        for _, group in runs.groupby(keys, dropna=False, sort=False):
            picked = group.loc[group["selected"], "lr"]
            if picked.empty:
                continue  # not finished: nothing selected yet
            swept = sorted(group["lr"].unique())
            sweeps.add(tuple(float(v) for v in swept))
            lr = float(picked.iloc[0])
            counts["groups"] += 1
            if len(swept) < 2:
                continue  # a single LR is no sweep: neither edge means anything
            where = "lowest" if lr == swept[0] else "highest" if lr == swept[-1] else "inside"
            counts[where] += 1
        models[str(model)] = {**counts, "sweeps": [list(s) for s in sorted(sweeps)]}
    return {"models": models}


def design_lines(design: dict[str, Any] | None) -> list[str]:
    """The three checks in words, for the terminal and the report's summary."""
    if not design:
        return ["design checks: not recorded (old analysis; re-run proximity correlate)"]
    lines = []
    pre = design["pretraining"]
    if not pre["recorded"]:
        lines.append(f"pretrained models against n-gram baselines: not recorded ({pre['why']})")
    for model, m in (pre.get("models") or {}).items():
        verb = "beats" if m["beats_bigram_by"] > 0 else "does NOT beat"
        lines.append(
            f"pretrained {model}: C4 validation loss {m['c4_val_loss']:.3f} nats (mean of "
            f"{m['n_seeds']} seed(s)) vs bigram {m['bigram_val_loss']:.3f}, unigram "
            f"{m['unigram_val_loss']:.3f}: {verb} the bigram by {abs(m['beats_bigram_by']):.3f}"
        )
    for model, m in design["lr_edges"]["models"].items():
        sweeps = "; ".join(", ".join(f"{v:g}" for v in s) for s in m["sweeps"])
        note = (
            " (two LRs: every selection is at an edge)"
            if all(len(s) == 2 for s in m["sweeps"])
            else ""
        )
        lines.append(
            f"LR selections {model}: {m['highest']} of {m['groups']} at the highest LR swept, "
            f"{m['lowest']} at the lowest, {m['inside']} inside (sweep {sweeps}){note}"
        )
    sft = design["sft"]
    if not sft["recorded"]:
        lines.append(f"SFT examples per target: not recorded ({sft['why']})")
    for model in sorted({row["model"] for row in sft.get("targets", [])}):
        cells = [
            f"{row['target']} {'/'.join(_cell(row[k]) for k in SFT_COLUMNS.values())}"
            for row in sft["targets"]
            if row["model"] == model
        ]
        lines.append(
            f"SFT {model}, per target train/val examples/truncated/dropped/steps: "
            + "; ".join(cells)
        )
    return lines


def _cell(value: Any) -> str:
    if value is None:
        return "?"
    return f"{value[0]}–{value[1]}" if isinstance(value, list) else str(value)


def sft_table(design: dict[str, Any] | None) -> pd.DataFrame | None:
    """Per target (and model size where they differ): the SFT accounting as a table."""
    sft = (design or {}).get("sft") or {}
    if not sft.get("recorded"):
        return None
    table = pd.DataFrame(sft["targets"]).astype(str)
    by_target = table.drop(columns="model").groupby("target", sort=False).nunique()
    if (by_target <= 1).all().all():  # the same for every model size: one row per target
        table = table.drop_duplicates("target").drop(columns="model")
    else:
        table = table.sort_values(["target", "model"], kind="stable")
        table = table[["target", "model", *table.columns.drop(["target", "model"])]]
    return table.rename(columns=lambda c: c.replace("_", " "))


def pretraining_table(design: dict[str, Any] | None) -> pd.DataFrame | None:
    pre = (design or {}).get("pretraining") or {}
    if not pre.get("recorded"):
        return None
    rows = [
        {
            "model": model,
            "seeds": m["n_seeds"],
            "C4 val loss (model)": f"{m['c4_val_loss']:.3f}"
            + (f" ± {m['c4_val_loss_std']:.3f}" if m["c4_val_loss_std"] is not None else ""),
            "bigram": f"{m['bigram_val_loss']:.3f}",
            "unigram": f"{m['unigram_val_loss']:.3f}",
            "model beats bigram by": f"{m['beats_bigram_by']:+.3f}",
            "every seed": "yes" if m["beats_bigram_every_seed"] else "no",
        }
        for model, m in pre["models"].items()
    ]
    return pd.DataFrame(rows)


def lr_table(design: dict[str, Any] | None) -> pd.DataFrame | None:
    models = ((design or {}).get("lr_edges") or {}).get("models") or {}
    if not models:
        return None
    return pd.DataFrame(
        [
            {
                "model": model,
                "groups": m["groups"],
                "at the highest LR": m["highest"],
                "at the lowest LR": m["lowest"],
                "inside": m["inside"],
                "sweep": "; ".join(", ".join(f"{v:g}" for v in s) for s in m["sweeps"]),
            }
            for model, m in models.items()
        ]
    )
