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
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis.correlate import PAPER_R
from analysis.figure_set import FIGURES
from analysis.findings import paper_findings
from analysis.results import Grid
from proximity import __version__
from proximity.atomic import write_text_atomic
from proximity.errors import ProximityError

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


def _errors(held_out: dict[str, Any]) -> str:
    return f"{_fmt(held_out['rmse'], 4)} ({_fmt(held_out['baseline_rmse'], 4)})"


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
                "bootstrap CI, pairs": _interval(
                    rel["bootstrap_pairs"]["ci_low"], rel["bootstrap_pairs"]["ci_high"]
                ),
                "bootstrap CI, seeds": _interval(
                    (rel.get("bootstrap_seeds") or {}).get("ci_low"),
                    (rel.get("bootstrap_seeds") or {}).get("ci_high"),
                ),
                "Spearman ρ": _fmt(rel["spearman"]["rho"]),
                "within-target r": _fmt(rel["within_target"]["r"]),
                "LOTO RMSE (mean-only)": _errors(loto),
                "LOMO RMSE (mean-only)": _errors(lomo),
            }
        )
    return pd.DataFrame(rows)


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
                "Pearson r": _fmt(p["r"]),
                "95% CI": _interval(p["ci_low"], p["ci_high"]),
                "p": _fmt(p["p"]),
            }
        )
    return pd.DataFrame(rows)


def findings_table(findings: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for key, title in FINDING_TITLES.items():
        item = findings[key]
        if key == "pa_predicts_gains":
            for model, m in item["models"].items():
                evidence = (
                    f"r = {_fmt(m.get('r'))} {_interval(m.get('ci_low'), m.get('ci_high'))}, "
                    f"p = {_fmt(m.get('p'))}, n = {m.get('n')} ({item['metric']})"
                )
                rows.append(
                    {
                        "finding": f"{title} — {model}",
                        "at this scale": m["verdict"],
                        "evidence": evidence,
                    }
                )
            continue
        if item["verdict"] == "not tested":
            evidence = item["why"]
        elif key == "earlier_start_helps_more":
            evidence = (
                f"earliest start better in {item['wins']}/{item['pairs']} (mixture, "
                f"weight, target) cells; mean improvement "
                f"{item['mean_improvement_earliest']:.2%} vs "
                f"{item['mean_improvement_latest']:.2%}"
            )
        elif key == "less_forgetting_than_cpt":
            evidence = (
                f"midtraining lower in {item['wins']}/{item['pairs']} pairs; mean C4 loss "
                f"{item['mean_c4_loss_midtrain']:.3f} vs CPT {item['mean_c4_loss_cpt']:.3f}"
            )
        else:
            evidence = (
                f"midtraining lower in {item['wins']}/{item['pairs']} {item['scope']}; "
                f"mean SFT loss {item['mean_sft_loss_midtrain']:.3f} vs CPT "
                f"{item['mean_sft_loss_cpt']:.3f}"
            )
        rows.append({"finding": title, "at this scale": item["verdict"], "evidence": evidence})
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
            "in r": shown["in_correlation"].map({True: "yes", False: ""}),
        }
    )


def build_report(grid: Grid, analysis: Path) -> Report:
    statistics, pairs, outcomes = read_analysis(analysis)
    findings = paper_findings(outcomes, statistics)
    metric = statistics["inputs"]["metrics"][0]
    figures = []
    for name, caption in FIGURES.items():
        for png in sorted(analysis.glob(f"{name}*.png")):
            if name == "fig2_pa_vs_improvement" and png.stem.startswith("fig2b"):
                continue
            suffix = png.stem[len(name) :].lstrip("_")
            figures.append((png.stem, caption + (f" ({suffix})" if suffix else ""), png))
    drawn = {stem.split("_pa")[0] for stem, _, _ in figures}
    missing = {
        n: "not drawn (run `proximity correlate` without --no-plot; see its output)"
        for n in FIGURES
        if not any(s.startswith(n) for s, _, _ in figures)
    }
    if "fig7_cka" in missing:
        missing["fig7_cka"] = "run `proximity cka BASE OTHER --data c4 --out ANALYSIS_DIR`"
    del drawn
    inputs = statistics["inputs"]
    n_pairs = max((r["n_pairs"] for r in statistics["relations"]), default=0)
    branches = ", ".join(inputs["branches_in_correlation"])
    summary = [
        f"{len(grid.results)} SFT runs in {grid.root}; {len(outcomes)} (model, seed, branch, "
        f"target) outcomes at the selected LR; up to {n_pairs} (mixture, target) pairs per "
        "model in the correlation.",
        f"Outcome: {inputs['outcome']}. Branches in r: {branches} (control and ablation "
        "branches excluded).",
    ]
    for model, m in findings["pa_predicts_gains"]["models"].items():
        if m.get("r") is not None:
            summary.append(
                f"{model}: Pearson r = {m['r']:.3f} {_interval(m['ci_low'], m['ci_high'])}, "
                f"p = {m['p']:.2g} ({metric}); the paper reports 0.869 (v1, 70M) and "
                "0.47–0.62 (v2)."
            )
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
        f"PA tokenizer: {inputs['tokenizer']}; mixture similarity: {inputs['mixture']}",
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
    config = grid.config or {}
    commands = []
    if config.get("command"):
        commands.append(str(config["command"]))
    else:
        commands.append(f"proximity train-grid {config.get('name', '<preset>')} --out {grid.root}")
    argv = statistics.get("argv") or []
    if argv:
        commands.append(shlex.join(["proximity", *argv[1:]]))
    commands.append(f"proximity report {grid.root} --out <report.html>")
    tables = [
        Table("The correlation beside the paper's", paper_table(statistics)),
        Table(
            "The paper's findings at this scale",
            findings_table(findings),
            "A finding holds when it is true in more than half of the comparisons (PA: r > 0 "
            "and p < 0.05). Nothing was tuned on these values.",
        ),
        Table(
            "Every statistic, per metric and model size",
            statistics_table(statistics),
            "CI: 95%. LOTO/LOMO: leave-one-target-out / leave-one-mixture-out prediction "
            "error of the fitted line, with the error of predicting the training mean in "
            "brackets (PA helps only where the first is smaller).",
        ),
        Table(
            f"Pairs ({metric}): PA and relative improvement, mean ± seed std",
            pairs_table(pairs, metric),
        ),
    ]
    return Report(
        title=f"Proximity report: {grid.root.name}",
        summary=summary,
        tables=tables,
        figures=figures,
        missing_figures=missing,
        config_yaml=yaml.safe_dump(config, sort_keys=False) if config else "(no grid.yaml)",
        provenance=provenance,
        commands=commands,
        findings=findings,
    )


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1.5em;color:#222;line-height:1.45}
h1{font-size:1.7em}h2{font-size:1.3em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.88em;margin:.6em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.3em .55em;text-align:left;white-space:nowrap}
th{background:#f4f4f4}tr:nth-child(even) td{background:#fafafa}
figure{margin:1.2em 0}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}pre{background:#f6f6f6;padding:.8em;overflow-x:auto;
font-size:.85em}.note{color:#555;font-size:.9em}
"""


def render_html(report: Report) -> str:
    esc = html.escape
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(report.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(report.title)}</h1>",
        f"<p class='note'>Generated {esc(time.strftime('%Y-%m-%d %H:%M %Z'))}</p>",
        "<ul>" + "".join(f"<li>{esc(s)}</li>" for s in report.summary) + "</ul>",
    ]
    for table in report.tables:
        parts.append(f"<h2>{esc(table.title)}</h2>")
        if table.note:
            parts.append(f"<p class='note'>{esc(table.note)}</p>")
        parts.append(table.frame.to_html(index=False, escape=True, border=0))
    parts.append("<h2>Figures</h2>")
    for _, caption, png in report.figures:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(
            f"<figure><img alt='{esc(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{esc(caption)} ({esc(png.name)}; PDF beside it)</figcaption></figure>"
        )
    if report.missing_figures:
        parts.append(
            "<p class='note'>Not drawn: "
            + "; ".join(f"{esc(n)}: {esc(w)}" for n, w in report.missing_figures.items())
            + "</p>"
        )
    parts.append(
        "<h2>Data provenance</h2><ul>"
        + "".join(f"<li>{esc(p)}</li>" for p in report.provenance)
        + "</ul>"
    )
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


def render_markdown(report: Report, where: Path) -> str:
    """The same report; figures are linked relative to the Markdown file's folder."""
    lines = [f"# {report.title}", "", *[f"- {s}" for s in report.summary], ""]
    for table in report.tables:
        lines += [f"## {table.title}", ""]
        if table.note:
            lines += [table.note, ""]
        lines += [_markdown_table(table.frame), ""]
    lines += ["## Figures", ""]
    for _, caption, png in report.figures:
        link = Path(os.path.relpath(png.resolve(), where.resolve())).as_posix()
        lines += [
            f"![{caption}]({link})",
            "",
            f"*{caption}* (PDF: `{png.with_suffix('.pdf').name}`)",
            "",
        ]
    for name, why in report.missing_figures.items():
        lines.append(f"- not drawn: {name}: {why}")
    lines += ["", "## Data provenance", "", *[f"- {p}" for p in report.provenance], ""]
    lines += [
        "## Grid configuration (grid.yaml)",
        "",
        "```yaml",
        report.config_yaml.rstrip(),
        "```",
        "",
    ]
    lines += ["## Reproduce", "", "```bash", *report.commands, "```", ""]
    return "\n".join(lines)


def write_report(report: Report, out: Path) -> list[Path]:
    """report.html (self-contained) and report.md beside it, both atomically."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ProximityError(
            f"--out {out}: give an .html file name (report.md is written beside it)"
        )
    md = out.with_suffix(".md")
    return [
        write_text_atomic(out, render_html(report)),
        write_text_atomic(md, render_markdown(report, md.parent)),
    ]
