"""The one place analysis/ asks proximity/ for similarities: PA of each grid pair, the heatmap.

PA is computed on exactly the specs the grid trained on (`mixture_spec`, `target_spec`,
`pretrain_spec` of results.csv), mixture-aware (`expected` by default), with the Pythia
tokenizer by default as the paper, or the grid's own tokenizer (`tokenizer="grid"`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from proximity.errors import ProximityError
from proximity.metrics import METRICS, get_metric
from proximity.readers import looks_like_local_path
from proximity.settings import SimilaritySettings
from proximity.similarity import advantage_table, similarity_table
from proximity.specs import parse_mixture, split_label
from proximity.stats import StatsOptions

METRIC_NAMES = tuple(METRICS)
PA_COLUMNS = ["metric", "pretrain_spec", "mixture_spec", "target_spec", "advantage",
              "sim_mix_target", "sim_pretrain_target", "pa_notes"]  # fmt: skip


def metrics_for(choice: str) -> list[str]:
    """`all` -> every metric; otherwise the one named (checked)."""
    if choice == "all":
        return list(METRIC_NAMES)
    if choice not in METRICS:
        raise ProximityError(
            f"--metric must be one of {', '.join(METRIC_NAMES)} or all, got {choice!r}"
        )
    return [choice]


def grid_tokenizer(config: dict[str, Any], root: Path | None = None) -> str:
    """The tokenizer the grid trained with (for `--tokenizer grid`), from grid.yaml.

    `tokenizer` is a name or path, or a table whose `name` is one; `train` means the grid
    learned its own as its first node, read back from that node's folder.
    """
    value = config.get("tokenizer")
    name = value.get("name") if isinstance(value, dict) else value
    if isinstance(name, str) and name and name != "train":
        return name
    if name == "train" and root is not None:
        found = sorted((root / "nodes").glob("*/tokenizer.json"))
        found = found or sorted((root / "nodes").glob("*/tokenizer/tokenizer.json"))
        if found:
            return str(found[0])
        raise ProximityError(
            f"--tokenizer grid: {root}/nodes holds no tokenizer.json yet (the grid trains its "
            "own tokenizer as its first node); run the grid or pass --tokenizer pythia"
        )
    raise ProximityError(
        "--tokenizer grid: grid.yaml names no tokenizer (key `tokenizer`); pass "
        "--tokenizer pythia or a tokenizer.json path"
    )


def grid_data_dir(config: dict[str, Any]) -> str | None:
    """The data folder grid.yaml recorded (`data.data_dir`, or a top-level `data_dir`)."""
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    return data.get("data_dir") or config.get("data_dir")


def pair_advantages(
    pairs: pd.DataFrame,
    metrics: Sequence[str],
    *,
    tokenizer: str,
    options: StatsOptions,
    mixture: str = "expected",
    data_dir: str | Path | None = None,
    use_cache: bool = True,
    on_target: Callable[[str, str], None] | None = None,
) -> pd.DataFrame:
    """PA of every (pretrain_spec, mixture_spec, target_spec) in `pairs`, per metric.

    Returns one row per (metric, pretrain_spec, mixture_spec, target_spec) with `advantage`,
    `sim_mix_target`, `sim_pretrain_target` and `pa_notes`. Control rows (the pretraining
    data itself) get PA 0 by definition and are not asked for.
    """
    rows = []
    wanted = pairs[["pretrain_spec", "mixture_spec", "target_spec"]].drop_duplicates()
    for metric in metrics:
        settings = SimilaritySettings(get_metric(metric), options, mixture)  # type: ignore[arg-type]  # checked there
        for (pretrain, target), group in wanted.groupby(["pretrain_spec", "target_spec"]):
            base = parse_mixture(pretrain).canonical()
            specs = [s for s in pd.unique(group["mixture_spec"]) if _differs(s, base)]
            if not specs:
                continue
            if on_target:
                on_target(metric, target)
            labelled = [f"m{i}={spec}" for i, spec in enumerate(specs)]
            table = advantage_table(
                pretrain, target, labelled, settings, tokenizer=tokenizer, data_dir=data_dir,
                use_cache=use_cache,
            )  # fmt: skip
            by_label = table.set_index("mix")
            for i, spec in enumerate(specs):
                row = by_label.loc[f"m{i}"]
                rows.append({
                    "metric": metric, "pretrain_spec": pretrain, "mixture_spec": spec,
                    "target_spec": target, "advantage": float(row["advantage"]),
                    "sim_mix_target": float(row["sim_mix_target"]),
                    "sim_pretrain_target": float(row["sim_pretrain_target"]),
                    "pa_notes": row["notes"],
                })  # fmt: skip
    return pd.DataFrame(rows, columns=PA_COLUMNS)  # the columns even when no pair has PA yet


def _differs(spec: str, base: str) -> bool:
    return parse_mixture(spec).canonical() != base


def similarity_matrix(
    datasets: Sequence[str],
    *,
    metric: str,
    tokenizer: str,
    options: StatsOptions,
    data_dir: str | Path | None = None,
    use_cache: bool = True,
) -> pd.DataFrame:
    """Square similarity matrix of `datasets` (labels as rows and columns), for figure 1."""
    table = similarity_table(
        list(datasets), SimilaritySettings(get_metric(metric), options), tokenizer=tokenizer,
        data_dir=data_dir, use_cache=use_cache,
    )  # fmt: skip
    labels = list(pd.unique(table["a"]))
    return table.pivot(index="a", columns="b", values="value").loc[labels, labels]


def heatmap_datasets(pairs: pd.DataFrame) -> list[str]:
    """Figure 1's rows: the pretraining data, every specialised dataset, every target.

    A specialised dataset is a part of a trained mixture other than the pretraining data,
    labelled by the grid's short name of the mixture that adds it alone (`mathword`, not its
    spec `gsm8k?format=plain&split=test`); a mixture adding several keeps the specs.
    """
    pretrain = [parse_mixture(s).canonical() for s in pd.unique(pairs["pretrain_spec"])]
    specialised: dict[str, str] = {}
    for row in pairs.drop_duplicates("mixture_spec").itertuples():
        added = [s for s in parse_mixture(row.mixture_spec).datasets
                 if s.canonical() not in pretrain]  # fmt: skip
        for spec in added:
            specialised.setdefault(spec.canonical(), row.mixture if len(added) == 1 else "")
    targets = {}
    for row in pairs.drop_duplicates("target_spec").itertuples():
        targets[row.target_spec] = row.target
    named = [*pretrain]
    for text, label in [*specialised.items(), *targets.items()]:
        named.append(text if label in ("", text) else f"{label}={text}")
    return list(dict.fromkeys(named))


def heatmap_display_names(named: Sequence[str]) -> dict[str, str]:
    """Figure 1's tick labels for `heatmap_datasets`' rows: `label: dataset` where the label
    is not the dataset's own name (`mathword: gsm8k`, `code: starcoder`), as figure 2's
    legend names mixtures; the matrix rows are keyed by the label alone."""
    names = {}
    for text in named:
        label, body = split_label(text)
        if label is None:
            continue
        source = parse_mixture(body).single().source
        dataset = Path(source).stem if looks_like_local_path(source) else source
        names[label] = label if dataset == label else f"{label}: {dataset}"
    return names
