"""Reports of experiment runs: Markdown and CSV tables and PNG figures, read from a run folder's manifest.

``render(run_folder, out)`` reads ``manifest.json`` (written by
``prune_nas.repro.experiments.run_experiment``) and the genomes and patterns beside it, and writes into
``out``:

* ``report.md``: title, what ran (scale, data, seeds, epochs, hardware, wall time, versions), the table, the
  figures, and the paper's own numbers for reference;
* ``*.csv``: every number of the tables, one line per cell (with the seeds' values and p-values);
* ``*.png``: the figures.

By kind:

* ``comparison`` (Tables 1-6): the paper's layout, one line per model x pruned model (or ratio), columns
  Unpruned, Fine-tuned, Scratch-E, Scratch-B as mean ± sample std (n - 1) of the final test top-1 over the
  seeds; the best of the three pruned-size columns in bold; ``*`` marks a Scratch-E / Scratch-B mean that
  differs from Fine-tuned with p < 0.05 in Welch's two-sided t-test (``prune_nas.repro.evaluate.welch``).
  Relative layouts (Tables 2, 3) show differences from the unpruned mean in points. Figures: accuracy per
  column with error bars (``accuracy.png``) and the kept widths per layer (``widths-row<i>.png``), or the 3x3
  kernel keep maps for weight pruning (``kernels-row<i>.png``), mined from the pruned genomes
  (``prune_nas.design.mining``).
* ``widths`` (Table 8): kept width per layer, mean ± std over runs, beside the paper's; width bars.
* ``kernels`` (Figure 4): per-stage 3x3 keep probabilities; heat maps.
* ``efficiency`` / ``guided`` (Figures 3, 5): accuracy vs params (mean ± std both ways) per series (pruned,
  uniform, guided, transferred), one panel per row; ``curves.png``.

matplotlib is imported lazily with the Agg backend (through ``prune_nas.design.mining``'s helpers).
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from prune_nas.core.errors import UserError
from prune_nas.core.units import human
from prune_nas.repro import compare
from prune_nas.repro.compare import COLUMNS, HEAD, PRUNED, baseline_column, paper_value

SERIES_STYLE = {"pruned": ("C0", "o", "pruned (method)"), "uniform": ("C7", "s", "uniform"),
                "guided": ("C2", "^", "guided"), "transferred": ("C3", "D", "transferred")}
DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet", "digits": "digits",
            "synthetic": "synthetic"}
ALPHA = 0.05
DODGE = 0.01  # horizontal offset between curve series (a fraction of params), so matched points stay visible


# ---- entry points ------------------------------------------------------------------------------------------
def find_runs(path: str | os.PathLike, scale: str | None = None) -> list[Path]:
    """Run folders (with a ``manifest.json``) under ``path``: the folder itself, a spec's folder (one scale:
    ``scale``, else the largest scale present, paper > small > smoke) or a folder of specs' folders."""
    from prune_nas.repro.experiments import SCALES

    path = Path(path)
    if path.name == "manifest.json":
        path = path.parent
    if (path / "manifest.json").exists():
        if scale is not None and path.name in SCALES and path.name != scale:
            raise UserError(f"{path} holds the {path.name} scale, not {scale}")
        return [path]
    if not path.is_dir():
        raise UserError(f"no experiment results at {path} (run `prune-nas run <spec> --scale ...` first)")

    def pick(spec_dir: Path) -> Path | None:
        have = [s for s in SCALES if (spec_dir / s / "manifest.json").exists()]
        if scale is not None:
            return spec_dir / scale if scale in have else None
        return spec_dir / max(have, key=SCALES.index) if have else None

    one = pick(path)
    if one is not None:
        return [one]
    found = [p for p in (pick(d) for d in sorted(path.iterdir()) if d.is_dir()) if p is not None]
    if not found:
        at = f" at the {scale} scale" if scale else ""
        raise UserError(f"no experiment results{at} under {path} (run `prune-nas run <spec> --scale ...` "
                        "first)")
    return found


def render(run_folder: str | os.PathLike, out: str | os.PathLike, latency: str | None = None) -> list[Path]:
    """Render one run folder into ``out``; returns the files written (report.md first). With ``latency`` (a
    device: "cpu", "cuda"), comparison reports also measure the unpruned and pruned models there and add
    latency columns and accuracy against FLOPs and against latency (``latency.csv``,
    ``accuracy-cost.png``)."""
    from prune_nas.repro.experiments import load_manifest

    run_folder = Path(run_folder)
    m = load_manifest(run_folder)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kind = m["spec"]["kind"]
    body, files = {"comparison": _comparison, "widths": _patterns, "kernels": _patterns,
                   "efficiency": _curves, "guided": _curves}[kind](m, run_folder, out)
    if latency and kind == "comparison":
        more, extra = _latency(m, run_folder, out, latency)
        body, files = body + [""] + more, files + extra
    md = "\n".join(_header(m) + [""] + body) + "\n"
    report = out / "report.md"
    _write(report, md)
    return [report] + files


# ---- header ------------------------------------------------------------------------------------------------
def _header(m: dict) -> list[str]:
    s, plan = m["spec"], m["plan"]
    rows = plan["rows"]
    seeds = sorted({len(r["seeds"]) for r in rows})
    epochs = sorted({r["epochs"] for r in rows})
    data = sorted({DATASETS.get(r["dataset"], r["dataset"]) for r in rows})
    hw, v = m.get("hardware", {}), m.get("versions", {})
    prog = m.get("progress", {})
    status = m.get("status")
    lines = [f"# {s['paper']}: {s['title']}", "",
             (f"**Scale: {m['scale']}** · data: {', '.join(data)} · seeds: {_join(seeds)} · "
             f"epochs: {_join(epochs)} · spec: `{s.get('file') or s['name']}`")]
    if s.get("description"):
        lines += ["", " ".join(s["description"].split())]
    when = m.get("updated", m.get("started", ""))
    threads = hw.get("threads", "?")
    lines += ["", (f"Ran on {hw.get('device', '?')}, {threads} torch thread{'' if threads == 1 else 's'}; "
                  f"wall time {_duration(m.get('wall_time_s'))} (training and pruning "
                  f"{_duration(m.get('compute_time_s'))}); prune-nas {v.get('prune_nas')}, torch "
                  f"{v.get('torch')}, Python {v.get('python')}; {when}.")]
    if status != "complete":
        lines += ["", (f"**Incomplete ({status}): {prog.get('done')} of {prog.get('total')} runs finished.** "
                      "Run the same `prune-nas run` command again to resume.")]
    if plan.get("note"):
        lines += ["", f"*{' '.join(plan['note'].split())}*"]
    return lines


def _join(values) -> str:
    return ", ".join(str(x) for x in values)


def _duration(s) -> str:
    if s is None:
        return "?"
    s = float(s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


# ---- comparison tables -------------------------------------------------------------------------------------
def comparison_cells(m: dict) -> list[dict]:
    """One dict per table row: the plan row, and per column the values over seeds, mean, std, p-value."""
    from prune_nas.repro.evaluate import welch

    out = []
    for row in m["plan"]["rows"]:
        runs = [r for r in m["runs"] if r.get("row") == row["index"]]
        prunes = [r for r in runs if r["role"] == "prune"]
        cells: dict[str, Any] = {}
        for col in COLUMNS:
            vals = [float(r["final_top1"]) for r in runs if r["role"] == col and r.get("status") == "ok"
                    and r.get("final_top1") is not None]
            cells[col] = {"values": vals, "n": len(vals), "mean": statistics.fmean(vals) if vals else None,
                          "std": (statistics.stdev(vals) if len(vals) > 1 else 0.0) if vals else None,
                          "epochs": sorted({r.get("epochs") for r in runs if r["role"] == col
                                            and r.get("epochs") is not None}),
                          "failed": sum(1 for r in runs
                                        if r["role"] == col and r.get("status") not in ("ok",))}
        ref = baseline_column(row["budgets"])
        for col in ("scratch-e", "scratch-b"):
            t = welch(HEAD[col], cells[col]["values"], HEAD[ref], cells[ref]["values"])
            cells[col]["p"], cells[col]["test"] = t.pvalue, t.text()
        present = [c for c in PRUNED if c in row["budgets"] and cells[c]["mean"] is not None]
        best = max((cells[c]["mean"] for c in present), default=None)
        frac = [p["params"] / p["base_params"] for p in prunes if p.get("base_params")]
        ffrac = [p["flops"] / p["base_flops"] for p in prunes if p.get("base_flops")]
        out.append({"row": row, "cells": cells, "best": {c for c in present if cells[c]["mean"] == best},
                    "params_kept": statistics.fmean(frac) if frac else None,
                    "flops_kept": statistics.fmean(ffrac) if ffrac else None, "prunes": prunes})
    return out


def _model_name(row: dict) -> str:
    w = row.get("width", 1.0)
    return row["model"] + (f" ×{w:g}" if w != 1 else "")


def _cell(c: dict, relative_to: float | None, bold: bool, mark: bool) -> str:
    if c["mean"] is None:
        return "-"
    mean = 100 * (c["mean"] - relative_to) if relative_to is not None else 100 * c["mean"]
    text = f"{mean:+.2f}" if relative_to is not None else f"{mean:.2f}"
    if c["n"] > 1:
        text += f" ± {100 * c['std']:.2f}"
    if bold:
        text = f"**{text}**"
    if mark:
        text += " \\*"
    return text


def shown_columns(rows: list[dict]) -> list[str]:
    """The pruned-size columns a table shows: Fine-tuned, Scratch-E, Scratch-B, and Pruned (no fine-tuning)
    when a row asks for it."""
    return [c for c in PRUNED if c != "pruned" or any("pruned" in r["budgets"] for r in rows)]


def comparison_markdown(m: dict, table: list[dict] | None = None) -> str:
    table = table if table is not None else comparison_cells(m)
    relative = m["plan"].get("layout") == "relative"
    shown = shown_columns([t["row"] for t in table])
    heads = ["Dataset", "Model", "Unpruned", "Pruned model", "Params kept", "FLOPs kept"]
    heads += [HEAD[c] + (" (Δ)" if relative else "") for c in shown]
    lines = ["| " + " | ".join(heads) + " |",
             "|" + "|".join(["---"] * 2 + ["--:"] + ["---"] + ["--:"] * (2 + len(shown))) + "|"]
    last = (None, None)
    for t in table:
        row, cells = t["row"], t["cells"]
        key = (row["dataset"], _model_name(row))
        ds, model = (DATASETS.get(row["dataset"], row["dataset"]), _model_name(row)) \
            if key != last else ("", "")
        base = cells["unpruned"]["mean"] if relative else None
        line = [ds, model, _cell(cells["unpruned"], None, False, False), row["label"],
                _pct(t["params_kept"]), _pct(t["flops_kept"])]
        for c in shown:
            if c not in row["budgets"]:
                line.append("n/a")
                continue
            p = cells[c].get("p")
            line.append(_cell(cells[c], base if base is not None else None, c in t["best"],
                              p is not None and p < ALPHA))
        lines.append("| " + " | ".join(line) + " |")
        last = key
    return "\n".join(lines)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def comparison_csv(m: dict, table: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", "dataset", "model", "width", "pruned_model", "column", "n", "mean_top1", "std_top1",
                "values", "epochs", "p_vs_finetune", "best", "params_kept", "flops_kept", "paper"])
    for t in table:
        row = t["row"]
        for c in ("unpruned", *shown_columns([row])):
            cell = t["cells"][c]
            w.writerow([row["index"], row["dataset"], row["model"], row.get("width", 1.0), row["label"], c,
                        cell["n"],
                        _f(cell["mean"]), _f(cell["std"]), ";".join(f"{v:.6f}" for v in cell["values"]),
                        ";".join(map(str, cell["epochs"])), _f(cell.get("p")), int(c in t["best"]),
                        _f(t["params_kept"]), _f(t["flops_kept"]),
                        _f((paper_value(row.get("reported", {}).get(c)) or {}).get("mean"))])
    return buf.getvalue()


def _f(x) -> str:
    return "" if x is None else f"{x:.6g}"


def _reported_markdown(m: dict) -> list[str]:
    rows = [r for r in m["plan"]["rows"] if any(k in r.get("reported", {}) for k in COLUMNS)]
    if not rows:
        return []
    relative = m["plan"].get("layout") == "relative"
    columns = ["unpruned", *shown_columns(rows)]
    lines = ["", (f"The paper's numbers (Liu et al., ICLR 2019, {m['spec']['paper']}; "
                 f"{'differences from the unpruned model, ' if relative else ''}CIFAR: mean of 5 runs), "
                 "for reference:"), "",
             "| Dataset | Model | Pruned model | " + " | ".join(HEAD[c] for c in columns) + " |",
             "|---|---|---|" + "--:|" * len(columns)]
    for r in rows:
        rep = r["reported"]
        vals = [(paper_value(rep.get(c)) or {}).get("mean") for c in columns]
        best = max((v for v in vals[1:] if v is not None), default=None)
        cells = [("-" if v is None else (f"**{v:.2f}**" if i > 0 and v == best else f"{v:.2f}"))
                 for i, v in enumerate(vals)]
        lines.append(f"| {DATASETS.get(r['dataset'], r['dataset'])} | {_model_name(r)} | {r['label']} | "
                     + " | ".join(cells) + " |")
    return lines


def _comparison(m: dict, run: Path, out: Path) -> tuple[list[str], list[Path]]:
    table = comparison_cells(m)
    rows = [t["row"] for t in table]
    files = []
    csv_path = out / "table.csv"
    _write(csv_path, comparison_csv(m, table))
    files.append(csv_path)
    seeds = sorted({len(t["row"]["seeds"]) for t in table})
    relative = m["plan"].get("layout") == "relative"
    names = [HEAD[c] for c in shown_columns(rows)]
    against = "Fine-tuned (Pruned where a row has no fine-tuning)" if any(
        baseline_column(r["budgets"]) == "pruned" for r in rows) else "Fine-tuned"
    body = ["## Table", "", comparison_markdown(m, table), "",
            f"Final test top-1 (%), mean ± sample std over {_join(seeds)} seeds"
            + (" (pruned-size columns: difference from the unpruned mean, in points)" if relative else "")
            + f"; **bold**: the best of {', '.join(names[:-1])} and {names[-1]}; \\*: differs from {against} "
              f"with p < {ALPHA:g} (Welch's two-sided t-test, `scipy.stats.ttest_ind(equal_var=False)`). "
              "Params and FLOPs kept: the pruned model's share of the unpruned model's (mean over runs)."]
    epochs = []
    for t in table:
        e = {c: t["cells"][c]["epochs"] for c in COLUMNS}
        epochs.append(f"{t['row']['label']}: "
                      + ", ".join(f"{HEAD[c]} {_span(e[c])}" for c in COLUMNS if e[c]))
    body += ["", "Epochs per column: " + "; ".join(epochs) + "."]
    tests = [f"{t['row']['label']}: " + "; ".join(t["cells"][c]["test"] for c in ("scratch-e", "scratch-b")
                                                  if c in t["row"]["budgets"]) for t in table]
    body += ["", "Tests: " + " · ".join(tests)]
    body += _reported_markdown(m)
    versus = compare.markdown(m, table)
    body += versus
    png = out / "accuracy.png"
    _plot_accuracy(m, table, png)
    files.append(png)
    body += ["", "## Figures", "", f"![accuracy per column]({png.name})"]
    for t in table:
        figs = _row_patterns(m, run, out, t)
        files += figs
        body += [f"![{f.stem}]({f.name})" for f in figs]
    if versus:
        files.append(out / "paper_vs_ours.csv")
        _write(files[-1], compare.to_csv(m, table))
    return body, files


def _span(epochs: list) -> str:
    if not epochs:
        return "-"
    return str(epochs[0]) if len(epochs) == 1 else f"{min(epochs)}-{max(epochs)}"


def _plot_accuracy(m: dict, table: list[dict], path: Path) -> Path:
    """One group per table row: mean ± std of each column, the seeds as dots."""
    import numpy as np

    from prune_nas.design.mining import _pyplot, _save

    plt = _pyplot()
    n = len(table)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.9 * n + 2.5), 3.8))
    colors = {"unpruned": "0.45", "pruned": "C3", "finetune": "C1", "scratch-e": "C0", "scratch-b": "C2"}
    columns = ["unpruned", *shown_columns([t["row"] for t in table])]
    width = 0.76 / len(columns)
    for j, c in enumerate(columns):
        xs, ys, es = [], [], []
        for i, t in enumerate(table):
            cell = t["cells"][c]
            if cell["mean"] is None:
                continue
            x = i + (j - (len(columns) - 1) / 2) * width
            xs.append(x)
            ys.append(100 * cell["mean"])
            es.append(100 * cell["std"])
            ax.scatter([x] * cell["n"], [100 * v for v in cell["values"]], s=10, color="black", alpha=0.6,
                       zorder=3, linewidths=0)
        ax.bar(xs, ys, width=width * 0.9, yerr=es, capsize=3, color=colors[c], alpha=0.8, label=HEAD[c],
               error_kw={"elinewidth": 0.9})
    ax.set_xticks(np.arange(n), [f"{_model_name(t['row'])}\n{t['row']['label']}\n"
                                 f"{DATASETS.get(t['row']['dataset'], t['row']['dataset'])}" for t in table],
                  fontsize=8)
    ax.set_ylabel("test top-1 accuracy (%)")
    vals = [100 * v for t in table for c in COLUMNS for v in t["cells"][c]["values"]]
    if vals:
        lo = max(0.0, min(vals) - 0.15 * (max(vals) - min(vals) + 1))
        ax.set_ylim(lo, min(100.0, max(vals) + 0.25 * (max(vals) - lo + 1)))
    seeds = sorted({len(t["row"]["seeds"]) for t in table})
    data = ", ".join(sorted({DATASETS.get(t["row"]["dataset"], t["row"]["dataset"]) for t in table}))
    ax.set_title(f"{m['spec']['paper']} ({m['spec']['name']}), {m['scale']} scale, {data}: final test "
                 f"top-1,\nmean ± std over {_join(seeds)} seeds (dots: single seeds)", fontsize=9)
    ax.legend(fontsize=7, ncol=4, loc="upper left", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _row_patterns(m: dict, run: Path, out: Path, t: dict) -> list[Path]:
    """Width bars (channel pruning) or kernel heat maps (weight pruning) of a row's pruned genomes."""
    from prune_nas.core.genome import load_genome
    from prune_nas.design.mining import mine_genomes, plot_kernels, plot_widths

    prunes = [p for p in t["prunes"] if p.get("genome_file") and (run / p["genome_file"]).exists()]
    if not prunes:
        return []
    try:
        genomes = [load_genome(run / p["genome_file"]) for p in prunes]
        pattern = mine_genomes(genomes, [str(run / p["genome_file"]) for p in prunes])
    except UserError:
        return []
    pattern = _labelled(pattern, m["scale"])
    i = t["row"]["index"]
    if pattern.sparse:
        return [plot_kernels(pattern, out / f"kernels-row{i}.png")]
    if pattern.pruned_kinds:
        return [plot_widths(pattern, out / f"widths-row{i}.png")]
    return []


def _labelled(pattern, scale: str):
    """The pattern with the scale in its dataset label, so mining's figure titles name the scale."""
    return replace(pattern, dataset=f"{pattern.dataset} ({scale} scale)")


# ---- widths (Table 8) and kernels (Figure 4) ---------------------------------------------------------------
def _patterns(m: dict, run: Path, out: Path) -> tuple[list[str], list[Path]]:
    from prune_nas.design.mining import load_pattern, plot_kernels, plot_widths

    body, files = [], []
    rows = {r["index"]: r for r in m["plan"]["rows"]}
    for entry in m.get("patterns", []):
        row = rows[entry["row"]]
        pattern = load_pattern(run / entry["file"])
        shown = _labelled(pattern, m["scale"])
        i = row["index"]
        body += [(f"## {row['label']}: {_model_name(row)} on {DATASETS.get(row['dataset'], row['dataset'])}, "
                 f"{row['method']}, {pattern.runs} runs"), ""]
        if m["spec"]["kind"] == "widths":
            md, text = _widths_table(pattern, row)
            body += [md, ""]
            csv_path = out / f"widths-row{i}.csv"
            _write(csv_path, text)
            png = plot_widths(shown, out / f"widths-row{i}.png")
        else:
            md, text = _kernels_table(pattern)
            body += [md, ""]
            csv_path = out / f"kernels-row{i}.csv"
            _write(csv_path, text)
            png = plot_kernels(shown, out / f"kernels-row{i}.png")
        files += [csv_path, png]
        size = pattern.size or {}
        if size.get("params"):
            body += [(f"The pruned models keep {100 * size['params'][0]:.1f}% ± "
                      f"{100 * size['params'][1]:.1f}% of "
                     f"the unpruned model's params and {100 * size['flops'][0]:.1f}% of its FLOPs."), ""]
        body += [f"![{png.stem}]({png.name})", ""]
    if not body:
        body = ["No pattern was mined yet (the run is incomplete)."]
    return body, files


def _widths_table(pattern, row: dict) -> tuple[str, str]:
    """Per layer: base width, kept width (mean ± std over runs), kept share; beside the paper's widths (Table
    8) when the spec gives them: as channels at full width, and always as the share of the full-width layer,
    which compares with narrow (smoke) models too."""
    from prune_nas.core.genome import base_genome

    paper = (row.get("reported") or {}).get("widths")
    layers = pattern.layers
    full = base_genome(pattern.model).groups.base_widths()
    show_paper = paper is not None and len(paper) == len(layers)
    at_full = show_paper and row.get("width", 1.0) == 1.0
    heads = ["Layer", "Group", "Stage", "Width", "Width* (mean ± std)", "Kept"]
    heads += (["Paper Width*"] if at_full else []) + (["Paper kept"] if show_paper else [])
    lines = ["| " + " | ".join(heads) + " |",
             "|" + "|".join(["--:", "---"] + ["--:"] * (len(heads) - 2)) + "|"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["layer", "group", "stage", "width", "mean", "std", "kept", "widths", "paper_width",
                "paper_kept"])
    for i, x in enumerate(layers, start=1):
        kept = x["mean"] / x["base"]
        pk = paper[i - 1] / full[x["group"]] if show_paper else None
        cells = [str(i), x["group"], str(x["stage"]), str(x["base"]), f"{x['mean']:.1f} ± {x['std']:.1f}",
                 f"{100 * kept:.0f}%"] + ([f"{paper[i - 1]:g}"] if at_full else []) \
            + ([f"{100 * pk:.0f}%"] if show_paper else [])
        lines.append("| " + " | ".join(cells) + " |")
        w.writerow([i, x["group"], x["stage"], x["base"], f"{x['mean']:.4f}", f"{x['std']:.4f}",
                    f"{kept:.4f}",
                    ";".join(map(str, x["widths"])), paper[i - 1] if show_paper else "",
                    f"{pk:.4f}" if pk is not None else ""])
    total_base = sum(x["base"] for x in layers)
    total = sum(x["mean"] for x in layers)
    last = [f"{100 * total / total_base:.0f}%"] + ([f"{sum(paper):.1f}"] if at_full else []) \
        + ([f"{100 * sum(paper) / sum(full[x['group']] for x in layers):.0f}%"] if show_paper else [])
    lines.append(f"| Total | | | {total_base} | {total:.1f} | " + " | ".join(last) + " |")
    stages = ", ".join(f"stage {s['stage']} {100 * s['ratio']:.0f}%" for s in pattern.stages)
    note = f"\n\nMean kept ratio per stage: {stages}. Std is over runs (numpy, ddof = 0)."
    if show_paper:
        note += (" Paper: VGG-16 at full width (64-512 channels) on CIFAR-10, 5 runs; \"Paper kept\" is its "
                 "kept share of each layer, comparable across widths.")
    return "\n".join(lines) + note, buf.getvalue()


def _kernels_table(pattern) -> tuple[str, str]:
    lines = [("| Stage | Density | Keep probability (3x3, rows top to bottom) | Centre | Cross (mean of 4) | "
             "Corners (mean of 4) |"), "|--:|--:|---|--:|--:|--:|"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["stage", "density", "kernels", "p00", "p01", "p02", "p10", "p11", "p12", "p20", "p21", "p22"])
    for s in pattern.sparse["stages"]:
        k = s.get("kernel_keep")
        if k is None:
            continue
        flat = [v for r in k for v in r]
        cross = statistics.fmean([k[0][1], k[1][0], k[1][2], k[2][1]])
        corners = statistics.fmean([k[0][0], k[0][2], k[2][0], k[2][2]])
        grid = " / ".join(" ".join(f"{v:.2f}" for v in r) for r in k)
        lines.append(f"| {s['stage']} | {100 * s['density']:.1f}% | {grid} | {k[1][1]:.2f} | {cross:.2f} | "
                     f"{corners:.2f} |")
        w.writerow([s["stage"], f"{s['density']:.6f}", s.get("kernels")] + [f"{v:.6f}" for v in flat])
    return "\n".join(lines), buf.getvalue()


# ---- curves (Figures 3, 5) ---------------------------------------------------------------------------------
def curve_points(m: dict) -> list[dict]:
    """Per row, series and ratio: params and accuracy over seeds (mean, std)."""
    out = []
    for row in m["plan"]["rows"]:
        for series in row["series"]:
            for ratio in row["ratios"]:
                runs = [r for r in m["runs"] if r.get("row") == row["index"] and r["role"] == series
                        and r.get("ratio") == ratio and r.get("status") == "ok"
                        and r.get("final_top1") is not None]
                if not runs:
                    continue
                acc = [float(r["final_top1"]) for r in runs]
                params = [int(r["params"]) for r in runs]
                out.append({"row": row["index"], "label": row["label"], "series": series, "ratio": ratio,
                            "n": len(runs), "params_mean": statistics.fmean(params),
                            "params_std": statistics.pstdev(params), "acc_mean": statistics.fmean(acc),
                            "acc_std": statistics.stdev(acc) if len(acc) > 1 else 0.0, "values": acc,
                            "genomes": sorted({r["genome"] for r in runs}),
                            "epochs": sorted({r.get("epochs") for r in runs})})
    return out


def _curves(m: dict, run: Path, out: Path) -> tuple[list[str], list[Path]]:
    pts = curve_points(m)
    csv_path = out / "curves.csv"
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", "label", "series", "ratio", "n", "params_mean", "params_std", "top1_mean", "top1_std",
                "values", "epochs", "genomes"])
    for p in pts:
        w.writerow([p["row"], p["label"], p["series"], p["ratio"], p["n"], f"{p['params_mean']:.1f}",
                    f"{p['params_std']:.1f}", f"{p['acc_mean']:.6f}", f"{p['acc_std']:.6f}",
                    ";".join(f"{v:.6f}" for v in p["values"]), ";".join(map(str, p["epochs"])),
                    ";".join(p["genomes"])])
    _write(csv_path, buf.getvalue())
    png = _plot_curves(m, pts, out / "curves.png")
    budget = {r["budget"] for r in m["plan"]["rows"]}
    body = ["## Accuracy vs parameters", "",
            "| Panel | Series | Ratio | Params (mean ± std) | Top-1 % (mean ± std) | n | Epochs |",
            "|---|---|--:|--:|--:|--:|--:|"]
    for p in pts:
        params = f"{human(p['params_mean'], digits=1)} ± {human(p['params_std'], digits=1)}"
        acc = f"{100 * p['acc_mean']:.2f} ± {100 * p['acc_std']:.2f}"
        body.append(f"| {p['label']} | {p['series']} | {p['ratio']:g} | {params} | {acc} | {p['n']} | "
                    f"{_span(p['epochs'])} |")
    body += ["", (f"Every architecture trained from scratch ({', '.join(sorted(budget))}); params count kept "
                 "weights only for sparse genomes. Uniform: the same params (channels) or the same density "
                 "in every conv layer (weights). Guided / transferred: the stage pattern mined from the "
                 "pruned runs (or from the source model's runs), built at the pruned runs' mean params."), "",
             f"![accuracy vs params]({png.name})"]
    return body, [csv_path, png]


def _plot_curves(m: dict, pts: list[dict], path: Path) -> Path:
    from prune_nas.design.mining import _pyplot, _save

    plt = _pyplot()
    rows = m["plan"]["rows"]
    fig, axes = plt.subplots(1, len(rows), figsize=(5.2 * len(rows), 4.0), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        n = len(row["series"])
        for j, series in enumerate(row["series"]):
            sp = sorted((p for p in pts if p["row"] == row["index"] and p["series"] == series),
                        key=lambda p: p["params_mean"])
            if not sp:
                continue
            color, marker, name = SERIES_STYLE[series]
            if series == "transferred" and row.get("source"):
                name = f"transferred from {row['source']}"
            # Series are matched in params, so their points coincide: dodge them by DODGE of the params.
            dodge = 1 + DODGE * (j - (n - 1) / 2)
            ax.errorbar([dodge * p["params_mean"] / 1e3 for p in sp], [100 * p["acc_mean"] for p in sp],
                        xerr=[p["params_std"] / 1e3 for p in sp], yerr=[100 * p["acc_std"] for p in sp],
                        color=color, marker=marker, ms=5, capsize=3, lw=1.2, label=name)
        ax.set_xlabel(f"parameters (thousands; series dodged by {100 * DODGE:g}% steps)")
        ax.set_ylabel("test top-1 accuracy (%)")
        ax.grid(alpha=0.3)
        seeds = len(row["seeds"])
        ax.set_title(f"{row['label']}: {row['method']}, {_model_name(row)} on "
                     f"{DATASETS.get(row['dataset'], row['dataset'])}\n{m['scale']} scale, {row['budget']}, "
                     f"{row['epochs']} epochs, mean ± std over {seeds} seeds", fontsize=9)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{m['spec']['paper']}: {m['spec']['title']}", fontsize=10, y=1.04)
    return _save(fig, path)


# ---- latency (optional) ---------------------------------------------------------------------------------
def latency_rows(m: dict, run: Path, device: str = "cpu") -> list[dict]:
    """Per comparison row: the unpruned and the pruned models' measured batch-1 latency on ``device`` (pruned:
    the mean over the seeds' genomes), with FLOPs and the accuracies the table shows."""
    from prune_nas.core.cost import count
    from prune_nas.core.genome import base_genome, load_genome, model_spec
    from prune_nas.core.latency import measure
    from prune_nas.training.data import NUM_CLASSES

    out = []
    for t in comparison_cells(m):
        row = t["row"]
        base = base_genome(row["model"], num_classes=NUM_CLASSES[row["dataset"]],
                           input_size=row.get("input_size") or model_spec(row["model"]).input_size,
                           width_mult=row.get("width", 1.0))
        files = sorted({p["genome_file"] for p in t["prunes"] if p.get("genome_file")})
        pruned = [load_genome(run / f) for f in files]
        if not pruned:
            continue
        b = measure(base, device=device, batch=1, repeats=10)
        lats = [measure(g, device=device, batch=1, repeats=10) for g in pruned]
        col = next((c for c in ("scratch-b", "scratch-e", "finetune") if t["cells"][c]["mean"] is not None),
                   None)
        out.append({"label": _model_name(row), "pruned": row["label"], "device_name": b.device_name,
                    "base_flops": count(base).flops,
                    "flops": statistics.fmean(count(g).flops for g in pruned),
                    "base_ms": b.median_ms, "base_iqr_ms": b.iqr_ms,
                    "ms": statistics.fmean(x.median_ms for x in lats),
                    "iqr_ms": max(x.iqr_ms for x in lats), "base_acc": t["cells"]["unpruned"]["mean"],
                    "acc": t["cells"][col]["mean"] if col else None, "acc_column": HEAD.get(col, "")})
    return out


def _latency(m: dict, run: Path, out: Path, device: str) -> tuple[list[str], list[Path]]:
    rows = latency_rows(m, run, device)
    if not rows:
        return [], []
    where = rows[0]["device_name"]
    csv_path = out / "latency.csv"
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "pruned", "device", "base_flops", "flops", "base_ms", "base_iqr_ms", "ms", "iqr_ms",
                "base_top1", "top1", "top1_column"])
    for r in rows:
        w.writerow([r["label"], r["pruned"], r["device_name"], r["base_flops"], f"{r['flops']:.0f}",
                    f"{r['base_ms']:.4f}", f"{r['base_iqr_ms']:.4f}", f"{r['ms']:.4f}", f"{r['iqr_ms']:.4f}",
                    _f(r["base_acc"]), _f(r["acc"]), r["acc_column"]])
    _write(csv_path, buf.getvalue())
    body = [f"## Latency on {where}", "",
            "| Model | Pruned model | FLOPs kept | Latency unpruned (ms) | Latency pruned (ms) "
            "| Latency kept |",
            "|---|---|--:|--:|--:|--:|"]
    for r in rows:
        noisy = abs(r["ms"] - r["base_ms"]) <= max(r["iqr_ms"], r["base_iqr_ms"])
        kept = f"{r['ms'] / r['base_ms']:.1%}" + (" (within noise)" if noisy else "")
        body.append(f"| {r['label']} | {r['pruned']} | {r['flops'] / r['base_flops']:.1%} | "
                    f"{r['base_ms']:.3f} ± {r['base_iqr_ms']:.3f} | {r['ms']:.3f} ± {r['iqr_ms']:.3f} | "
                    f"{kept} |")
    png = _plot_accuracy_cost(rows, out / "accuracy-cost.png")
    body += ["", f"Median forward time at batch 1 (float32, eval mode) on {where}, ± the interquartile range "
                 "of 10 timed blocks; measured when this report was made, not when the runs trained. "
                 "'Within noise': the difference is smaller than the larger IQR.", "",
             f"![accuracy vs FLOPs and latency]({png.name})"]
    return body, [csv_path, png]


def _plot_accuracy_cost(rows: list[dict], path: Path) -> Path:
    from prune_nas.design.mining import _pyplot, _save

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for i, r in enumerate(rows):
        if r["acc"] is None or r["base_acc"] is None:
            continue
        color = f"C{i % 10}"
        points = ((left, r["base_flops"] / 1e6, r["flops"] / 1e6), (right, r["base_ms"], r["ms"]))
        for ax, base_x, x in points:
            ax.plot([base_x, x], [100 * r["base_acc"], 100 * r["acc"]], color=color, lw=1, alpha=0.6)
            ax.scatter([base_x], [100 * r["base_acc"]], color=color, marker="s")
            ax.scatter([x], [100 * r["acc"]], color=color, marker="o",
                       label=f"{r['label']} -> {r['pruned']} ({r['acc_column']})" if ax is left else None)
    left.set_xlabel("FLOPs (millions of multiply-accumulates)")
    right.set_xlabel(f"latency at batch 1 (ms) on {rows[0]['device_name']}")
    for ax in (left, right):
        ax.set_ylabel("test top-1 accuracy (%)")
        ax.grid(alpha=0.3)
    left.legend(fontsize=7, loc="best")
    fig.suptitle("unpruned (square) -> pruned (circle)", fontsize=9)
    return _save(fig, path)


# ---- files -------------------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> None:
    from prune_nas.core.genome import atomic_write_text

    atomic_write_text(path, text)


def summary(m: dict) -> dict:
    """A JSON-ready summary of a run (for ``--json``): progress, and the comparison cells or curve points."""
    kind = m["spec"]["kind"]
    out: dict[str, Any] = {"spec": m["spec"]["name"], "scale": m["scale"], "status": m.get("status"),
                           "progress": m.get("progress"), "wall_time_s": m.get("wall_time_s")}
    if kind == "comparison":
        table = comparison_cells(m)
        out["rows"] = [{"label": t["row"]["label"], "model": t["row"]["model"],
                        "dataset": t["row"]["dataset"],
                        **{c: {k: t["cells"][c].get(k) for k in ("n", "mean", "std", "p")} for c in COLUMNS}}
                       for t in table]
        out["paper_vs_ours"] = [{"label": r["row"]["label"], "columns": r["columns"], "verdict": r["verdict"]}
                                for r in compare.paper_vs_ours(m, table)]
    elif kind in ("efficiency", "guided"):
        out["points"] = curve_points(m)
    else:
        out["patterns"] = m.get("patterns", [])
    return json.loads(json.dumps(out, default=str))
