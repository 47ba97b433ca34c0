"""`proximity report`: one self-contained HTML file (and the same as Markdown) of a grid.

Everything in it comes from files already written: the grid's results.csv and grid.yaml,
and what `proximity correlate` wrote (statistics.json, correlation.csv, outcomes.csv, the
figures). The HTML embeds the figures as data URIs, so it can be mailed or attached as is;
the Markdown links the PNG files beside it.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from proximity import __version__
from proximity.analysis.correlate import PAPER_R, POOLED
from proximity.analysis.design import (
    design_lines,
    design_summary,
    lr_table,
    pretraining_table,
    sft_table,
)
from proximity.analysis.example_bootstrap import sampling_error_lines
from proximity.analysis.figure_set import FIGURES
from proximity.analysis.findings import paper_findings
from proximity.analysis.results import Grid
from proximity.atomic import write_text_atomic
from proximity.errors import ProximityError
from proximity.outputs import portable_path

FINDING_TITLES = {
    "midtrain_beats_cpt_in_domain": "Midtraining beats CPT in-domain (SFT val loss)",
    "less_forgetting_than_cpt": "Midtraining forgets less than CPT (C4 loss after SFT)",
    "earlier_start_helps_more": "An earlier start helps more",
    "pa_predicts_gains": "Proximity advantage predicts the gain",
}


@dataclass
class Table:
    title: str
    frame: pd.DataFrame
    note: str = ""
    after_figures: bool = False


@dataclass
class Report:
    """What the HTML and the Markdown both show, in order."""

    title: str
    summary: list[str]
    tables: list[Table]
    figures: list[tuple[str, str, Path]]
    """(name, caption, PNG path) of each figure drawn."""
    missing_figures: dict[str, str]
    config_yaml: str
    provenance: list[str]
    commands: list[str]
    findings: dict[str, Any] = field(default_factory=dict)


def read_analysis(folder: Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """statistics.json, correlation.csv and outcomes.csv from `proximity correlate`."""
    needed = [folder / n for n in ("statistics.json", "correlation.csv", "outcomes.csv")]
    absent = [p for p in needed if not p.exists()]
    if absent:
        raise ProximityError(
            f"{absent[0]} not found: run `proximity correlate RUNS_DIR --out {folder}` first"
        )
    statistics = json.loads(needed[0].read_text())
    return statistics, pd.read_csv(needed[1]), pd.read_csv(needed[2])


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 10**-digits or value == 0 else f"{value:.2g}"
    return str(value)


def _interval(low: Any, high: Any) -> str:
    if low is None or high is None:
        return "–"
    return f"[{low:.2f}, {high:.2f}]"


def _points(value: Any) -> str:
    """An error or width of relative improvements, in percentage points like the outcomes."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    return f"{100 * value:.2f}"


def _errors(held_out: dict[str, Any]) -> str:
    return f"{_points(held_out['rmse'])} ({_points(held_out['baseline_rmse'])})"


def _without(held_out: dict[str, Any] | None) -> str:
    pair = (held_out or {}).get("most_influential")
    return f"{_fmt(pair['r_without'])} (no {pair['pair']})" if pair else "–"


def statistics_table(statistics: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for rel in statistics["relations"]:
        p = rel["pearson"]
        loto, lomo = rel["leave_one_target_out"], rel["leave_one_mixture_out"]
        rows.append(
            {
                "metric": rel["metric"],
                "model": rel["model"],
                "pairs": rel["n_pairs"],
                "Pearson r": _fmt(p["r"]),
                "95% CI (Fisher)": _interval(p["ci_low"], p["ci_high"]),
                "p": _fmt(p["p"]),
                "permutation p": _fmt(rel["permutation_p"]),
                "permutation p within targets": _fmt(
                    (rel.get("permutation_within_targets") or {}).get("p")
                ),
                "permutation p within mixtures": _fmt(
                    (rel.get("permutation_within_mixtures") or {}).get("p")
                ),
                "two-way bootstrap CI (targets × mixtures)": _interval(
                    (rel.get("bootstrap_two_way") or {}).get("ci_low"),
                    (rel.get("bootstrap_two_way") or {}).get("ci_high"),
                ),
                "bootstrap CI, pairs": _interval(
                    rel["bootstrap_pairs"]["ci_low"], rel["bootstrap_pairs"]["ci_high"]
                ),
                "bootstrap CI, seeds": _interval(
                    (rel.get("bootstrap_seeds") or {}).get("ci_low"),
                    (rel.get("bootstrap_seeds") or {}).get("ci_high"),
                ),
                "Spearman ρ": _fmt(rel["spearman"]["rho"]),
                "within-target r": _fmt(rel["within_target"]["r"]),
                "r without its most influential pair": _without(rel.get("leave_one_pair_out")),
                "LOTO RMSE, points (mean-only)": _errors(loto),
                "LOMO RMSE, points (mean-only)": _errors(lomo),
                "PA std": _fmt(rel.get("pa_std"), 4),
                "verdict": (rel.get("verdict") or {}).get("verdict", "–"),
            }
        )
    return pd.DataFrame(rows)


KEYS = ["metric", "model", "pairs"]
VERDICT_COLUMNS = [
    *KEYS, "Pearson r", "95% CI (Fisher)", "two-way bootstrap CI (targets × mixtures)",
    "permutation p within targets", "permutation p within mixtures",
    "r without its most influential pair", "verdict",
]  # fmt: skip
OTHER_COLUMNS = [
    *KEYS, "p", "permutation p", "bootstrap CI, pairs", "bootstrap CI, seeds", "Spearman ρ",
    "within-target r", "LOTO RMSE, points (mean-only)", "LOMO RMSE, points (mean-only)", "PA std",
]  # fmt: skip
"""`statistics_table` in two tables narrow enough for a 1400 px screen and a printed page,
the verdict's own tests (the caveats included) in the first."""


def statistics_tables(statistics: dict[str, Any]) -> list[Table]:
    """Every statistic, in two tables: the verdict's tests first, then the others."""
    table = statistics_table(statistics)
    title = "Every statistic, per metric and model size"
    return [
        Table(f"{title}: the tests behind the verdict", table[VERDICT_COLUMNS], STATISTICS_NOTE,
              after_figures=True),
        Table(f"{title}: the others", table[OTHER_COLUMNS], "Same relations as the table above.",
              after_figures=True),
    ]  # fmt: skip


def paper_table(statistics: dict[str, Any]) -> pd.DataFrame:
    metric = statistics["inputs"]["metrics"][0]
    ours = {r["model"]: r for r in statistics["relations"] if r["metric"] == metric}
    rows = [
        {
            "source": f"paper {version}",
            "model": model,
            "Pearson r": f"{r:.3f}",
            "95% CI": "–",
            "p": "< 0.001" if version == "v1" else "–",
        }
        for version, sizes in PAPER_R.items()
        for model, r in sizes.items()
    ]
    for model, rel in ours.items():
        p = rel["pearson"]
        rows.append(
            {
                "source": f"this grid ({metric})",
                "model": model,
                **_pearson_cells(p),
            }
        )
    return pd.DataFrame(rows)


def comparison_table(statistics: dict[str, Any], key: str) -> pd.DataFrame | None:
    """r with PA as used and with the other tokenizer (`tokenizer_comparison`) or the other
    mixture similarity (`mixture_comparison`): same pairs, same outcomes, only PA differs."""
    comparison = statistics.get(key)
    if not comparison:
        return None
    metric = comparison["metric"]
    what = "tokenizer" if key == "tokenizer_comparison" else "mixture"
    used = statistics["inputs"][what]
    rows = []
    sources = [
        (used, [r for r in statistics["relations"] if r["metric"] == metric]),
        (comparison[what], comparison["relations"]),
    ]
    for name, relations in sources:
        for rel in relations:
            p = rel["pearson"]
            boot = rel.get("bootstrap_two_way") or {}
            rows.append(
                {
                    f"PA {what}": _short_tokenizer(name),
                    "model": rel["model"],
                    "pairs": rel["n_pairs"],
                    **_pearson_cells(p),
                    "Spearman ρ": _fmt(rel["spearman"]["rho"]),
                    "two-way bootstrap CI": _interval(boot.get("ci_low"), boot.get("ci_high")),
                    "r without its most influential pair": _without(rel.get("leave_one_pair_out")),
                    "verdict": (rel.get("verdict") or {}).get("verdict", "–"),
                }
            )
    return pd.DataFrame(rows)


def _short_tokenizer(name: str) -> str:
    """A tokenizer file as a table cell: its grid node (`tokenizer-9dd5…`) or file name, not
    the whole path (the provenance list has that), so the table fits the page."""
    if "/" not in name:
        return name
    path = Path(name)
    return f"grid's own ({path.parent.name if path.name == 'tokenizer.json' else path.name})"


def tokenizer_table(statistics: dict[str, Any]) -> pd.DataFrame | None:
    return comparison_table(statistics, "tokenizer_comparison")


def _paired(item: dict[str, Any]) -> str:
    """The paired-by-seed test in words, with its degrees of freedom."""
    if item.get("p") is None:
        return item.get("why", "no paired test")
    dof = item["n_seeds"] - 1
    return (
        f"paired by seed: mean difference {item['mean_difference']:+.4f} over "
        f"{item['n_comparisons']} comparison(s), t-test over {item['n_seeds']} seed(s) "
        f"({dof} df) p = {_fmt(item['p'])}"
    )


def findings_table(findings: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for key, title in FINDING_TITLES.items():
        item = findings[key]
        if key == "pa_predicts_gains":
            for model, m in item["models"].items():
                rows.append(
                    {
                        "finding": f"{title} — {model}",
                        "at this scale": m["verdict"],
                        "evidence": _pa_evidence(m, item["metric"]),
                    }
                )
            continue
        if item["verdict"] == "not tested":
            evidence = item["why"]
        elif key == "earlier_start_helps_more":
            same, equal = item["same_weight"], item["equal_tokens"]
            evidence = (
                f"same weight: earliest start better in {same['wins']}/{same['pairs']} (mixture, "
                f"weight, target) cells, mean improvement "
                f"{item['mean_improvement_earliest']:.2%} vs "
                f"{item['mean_improvement_latest']:.2%}; {_paired(same)} ({same['verdict']}). "
                f"Equal specialised tokens: "
                + (
                    f"{_paired(equal)} ({equal['verdict']}); "
                    + "; ".join(
                        f"{m['comparison']}: {m['tokens_earlier']:,.0f} vs "
                        f"{m['tokens_later']:,.0f} specialised tokens"
                        for m in equal["matched"]
                    )
                    if equal["verdict"] != "not tested"
                    else equal["why"]
                )
            )
        elif key == "less_forgetting_than_cpt":
            evidence = (
                f"midtraining lower in {item['wins']}/{item['pairs']} pairs; mean C4 loss "
                f"{item['mean_c4_loss_midtrain']:.3f} vs CPT {item['mean_c4_loss_cpt']:.3f}; "
                f"{_paired(item)}"
            )
        else:
            evidence = (
                f"midtraining lower in {item['wins']}/{item['pairs']} {item['scope']}; "
                f"mean SFT loss {item['mean_sft_loss_midtrain']:.3f} vs CPT "
                f"{item['mean_sft_loss_cpt']:.3f}; {_paired(item)}"
            )
        rows.append({"finding": title, "at this scale": item["verdict"], "evidence": evidence})
    return pd.DataFrame(rows)


def _pa_evidence(m: dict[str, Any], metric: str) -> str:
    if m.get("r") is None:
        return f"too few pairs ({m.get('n')})"
    text = (
        f"permutation within targets p = {_fmt(m.get('permutation_within_targets_p'))}, within "
        f"mixtures p = {_fmt(m.get('permutation_within_mixtures_p'))}; two-way bootstrap CI "
        f"{_interval(m.get('two_way_ci_low'), m.get('two_way_ci_high'))}; "
        f"r = {_fmt(m.get('r'))} {_interval(m.get('ci_low'), m.get('ci_high'))} (Fisher), "
        f"p = {_fmt(m.get('p'))}, n = {m.get('n')} ({metric})"
    )
    without = m.get("without_most_influential")
    if without:
        text += (
            f"; without {without['pair']}: r = {_fmt(without['r_without'])}, "
            f"p = {_fmt(without['p_without'])}"
        )
    if m.get("failed"):
        text += f"; not passed: {', '.join(m['failed'])}"
    return text


def headline_lines(statistics: dict[str, Any], findings: dict[str, Any]) -> list[str]:
    """The report's first lines, per model size then pooled: the verdict and the numbers that
    respect the crossed design first, the pair-as-independent ones after, PA's spread."""
    metric = statistics["inputs"]["metrics"][0]
    lines = []
    relations = {r["model"]: r for r in statistics["relations"] if r["metric"] == metric}
    for model, m in findings["pa_predicts_gains"]["models"].items():
        if m.get("r") is None:
            continue
        rel = relations.get(model, {})
        pair = (rel.get("leave_one_pair_out") or {}).get("most_influential")
        without = (
            f"; without {pair['pair']} r = {pair['r_without']:.3f} (p = {pair['p_without']:.2g})"
            if pair
            else ""
        )
        pa_std = m.get("pa_std")
        spread = f"; PA std over pairs {pa_std:.4f} (design goal ≥ 0.03)" if pa_std else ""
        lines.append(
            f"{model}: PA predicts the gain — {m['verdict']}. Permutation within targets "
            f"p = {_fmt(m.get('permutation_within_targets_p'))}, within mixtures "
            f"p = {_fmt(m.get('permutation_within_mixtures_p'))}; two-way bootstrap CI of r "
            f"{_interval(m.get('two_way_ci_low'), m.get('two_way_ci_high'))}{without}; "
            f"pairs as independent: r = {m['r']:.3f} {_interval(m['ci_low'], m['ci_high'])}, "
            f"p = {m['p']:.2g} ({metric}, {m['n']} pairs){spread}."
        )
    if lines:
        lines.append(
            "The paper reports r = 0.869 (v1, 70M) and 0.47–0.62 (v2), pairs as independent."
        )
    return lines


def seed_noise_line(pairs: pd.DataFrame, metric: str) -> str | None:
    """How far the pairs' seed means are from 0 in their own seed noise, with the t quantile
    of n_seeds − 1 degrees of freedom (3 seeds: 4.30, not 2)."""
    used = pairs[(pairs["metric"] == metric) & pairs["in_correlation"]]
    used = used[(used["n_seeds"] > 1) & used["improvement_std"].notna()]
    if used.empty:
        return None
    se = used["improvement_std"] / np.sqrt(used["n_seeds"])
    quantile = stats.t.ppf(0.975, used["n_seeds"] - 1)
    apart = int((used["improvement"].abs() > quantile * se).sum())
    seeds = sorted(used["n_seeds"].unique())
    return (
        f"Seed noise: the relative improvement of a pair has a between-seed std of "
        f"{used['improvement_std'].mean():.2%} on average (median "
        f"{used['improvement_std'].median():.2%}); {apart} of {len(used)} pairs differ from 0 by "
        f"more than their 95% t interval (t with n_seeds − 1 = "
        f"{', '.join(str(int(n) - 1) for n in seeds)} df: "
        f"{', '.join(f'{stats.t.ppf(0.975, n - 1):.2f}' for n in seeds)} standard errors). "
        "This is training noise only: every seed is scored on the same validation examples."
    )


def recommend_table(statistics: dict[str, Any]) -> pd.DataFrame | None:
    """How `recommend`'s interval did on targets it had not seen (each left out in turn)."""
    metric = statistics["inputs"]["metrics"][0]
    rows = []
    for rel in statistics["relations"]:
        held = rel.get("new_target_prediction")
        if rel["metric"] != metric or not held:
            continue
        rows.append(
            {
                "model": rel["model"],
                "targets": held["n_targets"],
                "coverage (nominal 95%, goal ≥ 90%)": _fmt(held["coverage"], 2),
                "held-out pairs": held["n_pairs"],
                "mean width (points)": _points(held["mean_width"]),
                "range of outcomes (points)": _points(held["outcome_range"]),
                "RMSE (points)": _points(held["rmse"]),
                "RMSE predicting the mean (points)": _points(held["baseline_rmse"]),
                "ratio": _fmt(held["rmse_ratio"], 2),
                "note": held.get("why", ""),
            }
        )
    return pd.DataFrame(rows) if rows else None


def dose_table(statistics: dict[str, Any]) -> pd.DataFrame | None:
    dose = (statistics.get("questions") or {}).get("dose_response") or {}
    if not dose.get("cells"):
        return None
    verdicts = {(d["model"], d["mixture"]): d["verdict"] for d in dose["domains"]}
    return pd.DataFrame(
        [
            {
                "model": c["model"],
                "mixture": c["mixture"],
                "start": c["start_step"],
                "target": c["target"],
                "weights": ", ".join(f"{w:.0%}" for w in c["weights"]),
                "PA slope": f"{c['pa_slope']:+.3f}",
                "gain slope (seed mean)": f"{c['gain_slope']:+.3f}",
                "p (paired by seed)": _fmt(c["p"]),
                "seeds": c["n_seeds"],
                "same sign": "yes" if c["agrees"] else "no",
                "domain verdict": verdicts[(c["model"], c["mixture"])],
            }
            for c in dose["cells"]
        ]
    )


def forgetting_table(statistics: dict[str, Any]) -> pd.DataFrame | None:
    forget = (statistics.get("questions") or {}).get("forgetting") or {}
    if not forget.get("relations"):
        return None
    rows = []
    for rel in forget["relations"]:
        p = rel["pearson"]
        boot = rel["bootstrap_two_way"]
        rows.append(
            {
                "model": rel["model"],
                "branches × targets": rel["n_pairs"],
                **_pearson_cells(p),
                "permutation p within targets": _fmt(rel["permutation_within_targets"]["p"]),
                "permutation p within mixtures": _fmt(rel["permutation_within_mixtures"]["p"]),
                "two-way bootstrap CI": _interval(boot["ci_low"], boot["ci_high"]),
                "r without its most influential pair": _without(rel.get("leave_one_pair_out")),
                "verdict (expected r < 0)": rel["verdict"]["verdict"],
            }
        )
    return pd.DataFrame(rows)


def pairs_table(pairs: pd.DataFrame, metric: str) -> pd.DataFrame:
    shown = pairs[(pairs["metric"] == metric) & (pairs["branch_kind"] != "control")].copy()
    shown = shown.sort_values(["model", "target", "advantage"], ascending=[True, True, False])
    return pd.DataFrame(
        {
            "model": shown["model"],
            "branch": shown["branch_kind"],
            "mixture": shown["mixture_spec"],
            "start": shown["start_step"],
            "target": shown["target"],
            "PA": shown["advantage"].map(lambda v: f"{v:+.4f}"),
            "relative improvement": [
                f"{m:+.2%} ± {s:.2%}" if pd.notna(s) else f"{m:+.2%}"
                for m, s in zip(shown["improvement"], shown["improvement_std"], strict=True)
            ],
            "seeds": shown["n_seeds"],
            "SE over val. examples": shown.get(
                "improvement_se_examples", pd.Series(np.nan, index=shown.index)
            ).map(lambda v: f"{v:.2%}" if pd.notna(v) else "not recorded"),
            "in r": shown["in_correlation"].map({True: "yes", False: ""}),
        }
    )


def figures_in(analysis: Path) -> tuple[list[tuple[str, str, Path]], dict[str, str]]:
    """The figures correlate drew this time (figures.json), plus figure 7 when `proximity cka`
    wrote it there; stale PNGs of an earlier run are not picked up."""
    manifest_path = analysis / "figures.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    names = [n for n in manifest.get("written", []) if n.endswith(".png")]
    missing = dict(manifest.get("missing", {}))
    if not manifest:
        missing = {
            n: "no figures.json: run `proximity correlate` (without --no-plot)" for n in FIGURES
        }
    if (analysis / "fig7_cka.png").exists():
        names.append("fig7_cka.png")
        missing.pop("fig7_cka", None)
    elif "fig7_cka" in missing:
        missing["fig7_cka"] = f"run `proximity cka BASE OTHER --data c4 --out {analysis}`"
    figures = []
    for name in dict.fromkeys(names):
        png = analysis / name
        if not png.exists():
            continue
        base = next(
            (k for k in sorted(FIGURES, key=len, reverse=True) if png.stem.startswith(k)), png.stem
        )
        suffix = png.stem[len(base) :].lstrip("_")
        caption = FIGURES.get(base, png.stem) + (f" ({suffix})" if suffix else "")
        figures.append((png.stem, caption, png))
    return figures, missing


def reproduce_commands(grid: Grid, statistics: dict, analysis: Path) -> list[str]:
    """The commands that made this report, in order: the grid, CKA (when its table is
    here), correlate as it was run, and this report reading `analysis`."""
    config = grid.config or {}
    runs = statistics.get("inputs", {}).get("runs_dir") or str(grid.root)
    if config.get("command"):
        commands = [str(config["command"])]
    else:
        seeds = config.get("seeds")
        seeds = f" --seeds {','.join(str(x) for x in seeds)}" if seeds else ""
        name = config.get("name", "<preset or grid.yaml>")
        commands = [f"proximity train-grid {name}{seeds} --out {runs}"]
    cka = analysis / "cka.csv"
    if cka.exists():
        data = pd.read_csv(cka, usecols=["data"])["data"]
        data = str(data.iloc[0]) if len(data) else "c4"
        commands.append(f"proximity cka --grid {runs} --data {shlex.quote(data)} --out {analysis}")
    argv = statistics.get("argv") or []
    if argv:
        commands.append(shlex.join(["proximity", *argv[1:]]))
    commands.append(f"proximity report {runs} --analysis {analysis} --out <report.html>")
    return commands


def portable_config(config: dict[str, Any]) -> dict[str, Any]:
    """grid.yaml as the report shows it: its data folder relative to the working directory
    (`../shared/data`, as `proximity.outputs.portable_path` writes paths), so a committed
    report names no machine's absolute path."""
    data = config.get("data")
    if not isinstance(data, dict) or not data.get("data_dir"):
        return config
    return {**config, "data": {**data, "data_dir": portable_path(data["data_dir"])}}


def build_report(grid: Grid, analysis: Path) -> Report:
    """Everything the report shows, read from the grid and from what correlate wrote to
    `analysis`: the summary, the tables, the figures, the configuration and provenance."""
    statistics, pairs, outcomes = read_analysis(analysis)
    findings = paper_findings(outcomes, statistics)
    figures, missing = figures_in(analysis)
    design = statistics.get("design") or design_summary(grid)  # older analyses: from the files
    config = grid.config or {}
    return Report(
        title=f"Proximity report: {grid.root.name}",
        summary=report_summary(grid, statistics, findings, pairs, outcomes, design),
        tables=report_tables(statistics, findings, pairs, design),
        figures=figures,
        missing_figures=missing,
        config_yaml=yaml.safe_dump(portable_config(config), sort_keys=False)
        if config
        else "(no grid.yaml)",
        provenance=provenance_lines(grid, statistics, pairs),
        commands=reproduce_commands(grid, statistics, analysis),
        findings=findings,
    )


def report_summary(
    grid: Grid,
    statistics: dict[str, Any],
    findings: dict[str, Any],
    pairs: pd.DataFrame,
    outcomes: pd.DataFrame,
    design: dict[str, Any],
) -> list[str]:
    """The report's opening: the headline verdicts, what was run and measured, the seed noise
    and the outcome's sampling error, and the design checks."""
    metric = statistics["inputs"]["metrics"][0]
    inputs = statistics["inputs"]
    n_pairs = max(
        (r["n_pairs"] for r in statistics["relations"] if r["model"] != POOLED), default=0
    )
    branches = ", ".join(inputs["branches_in_correlation"])
    summary = [
        *headline_lines(statistics, findings),
        f"{len(grid.results)} SFT runs in {grid.root}; {len(outcomes)} (model, seed, branch, "
        f"target) outcomes at the selected LR; up to {n_pairs} (mixture, target) pairs per "
        "model in the correlation.",
        f"Outcome: {inputs['outcome']}. Branches in r: {branches} (control and ablation "
        "branches excluded).",
    ]
    noise = seed_noise_line(pairs, metric)
    if noise:
        summary.append(noise)
    summary += sampling_error_lines(statistics)
    summary += design_lines(design)
    return summary


def provenance_lines(grid: Grid, statistics: dict[str, Any], pairs: pd.DataFrame) -> list[str]:
    """Which version computed what, when, with which data, tokenizer and protocol, and every
    substitute dataset and PA note."""
    inputs = statistics["inputs"]
    substitutes = grid.substitutes
    pa_notes = sorted(
        {
            n.strip()
            for text in pairs.get("pa_notes", pd.Series(dtype=str)).dropna()
            for n in str(text).split(";")
            if n.strip()
        }
    )
    provenance = [
        f"proximity {statistics.get('proximity_version')} (report by {__version__}), "
        f"correlate run {statistics.get('created')}",
        f"data folder: {inputs.get('data_dir') or 'none (hub)'}; "
        f"PA tokenizer: {inputs['tokenizer']}; mixture similarity: {inputs['mixture']}; "
        f"why: {inputs.get('pa_protocol') or 'not recorded'}",
        "statistics protocol: "
        + ", ".join(
            f"{k}={v}"
            for k, v in inputs["stats_options"].items()
            if k not in ("batch_size", "batch_chars")
        ),
        *[f"substitute (grid): {s}" for s in substitutes],
        *[f"note (PA): {n}" for n in pa_notes],
    ]
    if not substitutes:
        provenance.append("substitutes (grid): none recorded in results.csv")
    return provenance


FINDINGS_NOTE = (
    "Findings 1-3 are tested paired by seed (a seed's mean difference over the comparisons, "
    "t-test over seeds, n_seeds − 1 df) and hold only when significant in their favour "
    "without any single comparison; finding 3 also at equal specialised tokens. PA holds only "
    "when the parametric test, both stratified permutations, the two-way bootstrap interval "
    "and leave-one-pair-out all agree; 'does not hold' needs significant evidence the other "
    "way; otherwise 'inconclusive'. Nothing was tuned on these values."
)
STATISTICS_NOTE = (
    "CI: 95%. Permutations shuffle the outcome within targets (or mixtures); the two-way "
    "bootstrap draws targets and mixtures independently with replacement (pairs of one "
    "target or mixture move together). LOTO/LOMO: leave-one-target-out / leave-one-mixture-"
    "out prediction error of the fitted line, with the error of predicting the training mean "
    "in brackets (PA helps only where the first is smaller). PA std: over the pairs (ddof 1)."
)


def report_tables(
    statistics: dict[str, Any], findings: dict[str, Any], pairs: pd.DataFrame, design: dict
) -> list[Table]:
    """The report's tables in order: the headline ones (before the figures), then every
    statistic, the comparisons, the design checks and the questions beyond the paper."""
    metric = statistics["inputs"]["metrics"][0]
    return [
        Table("The correlation beside the paper's", paper_table(statistics)),
        Table("The paper's findings at this scale", findings_table(findings), FINDINGS_NOTE),
        *statistics_tables(statistics),
        *_optional(
            f"Does the tokenizer matter? r with PA from each ({metric})",
            tokenizer_table(statistics),
            "The paper measures PA with the Pythia tokenizer; a micro grid trains its "
            "own. Same pairs, same outcomes, only PA differs.",
        ),
        *_optional(
            f"Does the mixture similarity matter? r with PA from each ({metric})",
            comparison_table(statistics, "mixture_comparison"),
            "expected: the exact count mixture; resample: the authors' document resampling "
            "(the paper's numbers). Same pairs, same outcomes, only PA differs.",
        ),
        *_optional(
            "Pretrained models against n-gram baselines (per model size)",
            pretraining_table(design),
            "C4 validation loss of the pretrained model (mean over seeds ± seed std) beside "
            "unigram and interpolated-bigram models counted from the same pretraining tokens "
            "under the same tokenizer and scored on the same positions (nats per token).",
        ),
        *_optional(
            "SFT examples per target",
            sft_table(design),
            "Examples trained on and scored (validation, the same for every branch and seed), "
            "cut at seq_len (truncated) or dropped (a masked prompt filling seq_len), and "
            "optimizer steps, for the selected runs.",
        ),
        *_optional(
            "Selected learning rates at the edge of the sweep",
            lr_table(design),
            "Per (seed, branch, target) group: the LR with the lowest SFT validation loss. "
            "Many selections at the highest LR say the optimum may lie beyond the sweep.",
        ),
        *_optional(
            "recommend on a new target: held-out-target coverage of its 95% interval",
            recommend_table(statistics),
            "Each target of the grid left out in turn: the line and the interval (leave-one-"
            "target-out residuals of the other targets, t with effective df) are built without "
            "it, and its pairs checked. RMSE of that prediction beside predicting the mean.",
        ),
        *_optional(
            "Beyond the paper: does the gain grow with the weight as PA does? (dose-response)",
            dose_table(statistics),
            "Per mixture dataset trained at two or more weights (same start step and target): "
            "slope of PA and of the gain against the weight; the gain's slope is tested "
            "paired by seed (each seed's own slope, n_seeds − 1 df). A domain holds when "
            "every cell agrees in sign significantly.",
        ),
        *_optional(
            "Beyond the paper: does similarity to the pretraining data predict forgetting?",
            forgetting_table(statistics),
            "x: similarity of each branch's training mixture to the pretraining data; y: "
            "relative change of C4 loss after SFT over the control (seed mean). Expected "
            "negative: closer to C4, less forgetting. Same tests as PA.",
        ),
        Table(
            f"Pairs ({metric}): PA and relative improvement, mean ± seed std, and its "
            "bootstrap SE over validation examples",
            pairs_table(pairs, metric),
            after_figures=True,
        ),
    ]


def _optional(title: str, frame: pd.DataFrame | None, note: str) -> list[Table]:
    return [] if frame is None else [Table(title, frame, note, after_figures=True)]


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1.5em;color:#222;line-height:1.45}
h1{font-size:1.7em}h2{font-size:1.3em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.88em;margin:.6em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.3em .55em;text-align:left;white-space:nowrap}
table.wrap td:last-child{white-space:normal;min-width:30em}
td.long{white-space:normal;min-width:11em}
th{background:#f4f4f4;white-space:normal;vertical-align:bottom}
tr:nth-child(even) td{background:#fafafa}
figure{margin:1.2em 0}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}pre{background:#f6f6f6;padding:.8em;overflow-x:auto;
font-size:.85em}.note{color:#555;font-size:.9em}
@media print{body{max-width:none;margin:0;padding:0;font-size:10pt}
table{display:table;font-size:.75em}th,td{white-space:normal}
pre{white-space:pre-wrap;overflow:visible}figure,tr{break-inside:avoid}}
"""


def _html_table(table: Table) -> str:
    note = f"<p class='note'>{html.escape(table.note)}</p>" if table.note else ""
    wrap = ["wrap"] if list(table.frame.columns[-1:]) == ["evidence"] else []
    body = table.frame.to_html(index=False, escape=True, border=0, classes=wrap)
    body = LONG_CELL.sub(lambda m: f"<td class='long'>{m.group(1)}</td>", body)
    return f"<h2>{html.escape(table.title)}</h2>{note}{body}"


LONG_CELL = re.compile(r"<td>([^<]{28,})</td>")
"""A cell of prose (`0.598 (no code 50% → pycode)`): allowed to wrap, so a table of them fits
1400 px; numbers and intervals stay on one line."""


def _css_width(png: bytes) -> int:
    """Display width in CSS pixels: the PNG is drawn at DPI 200 and shown at 100 dpi (sharp on
    high-density screens, fonts at the size they were laid out for)."""
    return int.from_bytes(png[16:20], "big") // 2


def render_html(report: Report) -> str:
    esc = html.escape
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(report.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(report.title)}</h1>",
        f"<p class='note'>Generated {esc(time.strftime('%Y-%m-%d %H:%M %Z'))}</p>",
        "<ul>" + "".join(f"<li>{esc(s)}</li>" for s in report.summary) + "</ul>",
    ]
    parts += [_html_table(t) for t in report.tables if not t.after_figures]
    parts.append("<h2>Figures</h2>")
    for _, caption, png in report.figures:
        raw = png.read_bytes()
        data = base64.b64encode(raw).decode("ascii")
        parts.append(
            f"<figure><img alt='{esc(caption)}' style='width:{_css_width(raw)}px' "
            f"src='data:image/png;base64,{data}'><figcaption>{esc(caption)} "
            f"({esc(png.name)}; PDF beside it)</figcaption></figure>"
        )
    if report.missing_figures:
        missing = "; ".join(f"{esc(n)}: {esc(w)}" for n, w in report.missing_figures.items())
        parts.append(f"<p class='note'>Not drawn: {missing}</p>")
    parts += [_html_table(t) for t in report.tables if t.after_figures]
    provenance = "".join(f"<li>{esc(p)}</li>" for p in report.provenance)
    parts.append(f"<h2>Data provenance</h2><ul>{provenance}</ul>")
    parts.append(f"<h2>Grid configuration (grid.yaml)</h2><pre>{esc(report.config_yaml)}</pre>")
    parts.append("<h2>Reproduce</h2><pre>" + esc("\n".join(report.commands)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _markdown_section(table: Table) -> list[str]:
    lines = [f"## {table.title}", ""]
    if table.note:
        lines += [table.note, ""]
    return [*lines, _markdown_table(table.frame), ""]


def render_markdown(report: Report, where: Path) -> str:
    """The same report; figures are linked relative to the Markdown file's folder."""
    lines = [f"# {report.title}", "", *[f"- {s}" for s in report.summary], ""]
    for table in report.tables:
        if not table.after_figures:
            lines += _markdown_section(table)
    lines += ["## Figures", ""]
    for _, caption, png in report.figures:
        link = Path(os.path.relpath(png.resolve(), where.resolve())).as_posix()
        pdf = png.with_suffix(".pdf").name
        lines += [f"![{caption}]({link})", "", f"*{caption}* (PDF: `{pdf}`)", ""]
    for name, why in report.missing_figures.items():
        lines.append(f"- not drawn: {name}: {why}")
    lines.append("")
    for table in report.tables:
        if table.after_figures:
            lines += _markdown_section(table)
    lines += ["## Data provenance", "", *[f"- {p}" for p in report.provenance], ""]
    lines += ["## Grid configuration (grid.yaml)", "", "```yaml", report.config_yaml.rstrip()]
    lines += ["```", "", "## Reproduce", "", "```bash", *report.commands, "```", ""]
    return "\n".join(lines)


def write_report(report: Report, out: Path) -> list[Path]:
    """report.html (self-contained) and report.md beside it, both atomically."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ProximityError(f"--out {out}: give an .html file name (the .md goes beside it)")
    md = out.with_suffix(".md")
    return [
        write_text_atomic(out, render_html(report)),
        write_text_atomic(md, render_markdown(report, md.parent)),
    ]


def _pearson_cells(pearson: dict) -> dict[str, str]:
    """Pearson's r, its 95% CI and p as table cells (the summary and per-model tables)."""
    return {
        "Pearson r": _fmt(pearson["r"]),
        "95% CI": _interval(pearson["ci_low"], pearson["ci_high"]),
        "p": _fmt(pearson["p"]),
    }
