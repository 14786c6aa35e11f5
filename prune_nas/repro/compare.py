"""The paper's numbers beside ours, cell by cell, and whether the paper's conclusion holds in a run.

For a comparison run (Tables 1-6), each cell of ours (mean ± sample std over the seeds, in %) is set beside
the paper's (``reported`` in the spec: a number, or ``{mean, std, source, note}``), with

* ``diff``: ours minus the paper's, in points;
* ``in_paper_spread``: our mean lies within the paper's mean ± its std (``None`` where the paper gives no std,
  as for its ImageNet single runs);
* ``in_our_spread``: the paper's mean lies within our mean ± our std (``None`` with fewer than two seeds).

Relative layouts (Tables 2, 3) compare differences from the unpruned model: ours from our unpruned mean, the
paper's as printed (its fine-tuned column is relative to the original paper's own unpruned model,
``unpruned_original``). The unpruned column is compared as an accuracy.

The verdict of a row asks the paper's question: is the best of Scratch-E and Scratch-B at least as accurate
as Fine-tuned? It is answered for the paper's numbers and for ours, and says whether they agree.
"""

from __future__ import annotations

import csv
import io
from typing import Any

# "pruned": the pruned model as it comes out of pruning, no fine-tuning (Sparse Structure Selection's column).
PRUNED = ("pruned", "finetune", "scratch-e", "scratch-b")
COLUMNS = ("unpruned", *PRUNED)
HEAD = {"unpruned": "Unpruned", "pruned": "Pruned", "finetune": "Fine-tuned", "scratch-e": "Scratch-E",
        "scratch-b": "Scratch-B"}


def baseline_column(budgets) -> str:
    """The column the scratch columns are tested against: Fine-tuned, or Pruned where a row has no
    fine-tuning (Sparse Structure Selection)."""
    return "pruned" if "finetune" not in budgets and "pruned" in budgets else "finetune"


def paper_value(v: Any) -> dict | None:
    """A ``reported`` entry as ``{mean, std, source, note}`` (std, source, note may be None)."""
    if v is None:
        return None
    if isinstance(v, dict):
        return {"mean": float(v["mean"]), "std": None if v.get("std") is None else float(v["std"]),
                "source": v.get("source"), "note": v.get("note")}
    return {"mean": float(v), "std": None, "source": None, "note": None}


def paper_vs_ours(m: dict, table: list[dict]) -> list[dict]:
    """Per table row (``report.comparison_cells``): per column ours, the paper's, the difference and the
    spreads; and the row's verdict."""
    relative = m["plan"].get("layout") == "relative"
    out = []
    for t in table:
        row, cells = t["row"], t["cells"]
        reported = row.get("reported") or {}
        base = cells["unpruned"]["mean"]
        columns = {}
        for col in COLUMNS:
            if col != "unpruned" and col not in row["budgets"]:
                continue
            cell, paper = cells[col], paper_value(reported.get(col))
            ours = None
            if cell["mean"] is not None:
                shift = base if relative and col != "unpruned" else 0.0
                ours = None if shift is None else 100 * (cell["mean"] - shift)
            std = 100 * cell["std"] if cell["n"] > 1 else None
            entry = {"ours": ours, "ours_std": std, "n": cell["n"], "paper": paper, "diff": None,
                     "in_paper_spread": None, "in_our_spread": None}
            if ours is not None and paper is not None:
                entry["diff"] = ours - paper["mean"]
                if paper["std"] is not None:
                    entry["in_paper_spread"] = abs(entry["diff"]) <= paper["std"] + 1e-9
                if std is not None:
                    entry["in_our_spread"] = abs(entry["diff"]) <= std + 1e-9
            columns[col] = entry
        out.append({"row": row, "columns": columns,
                    "verdict": verdict({c: e["ours"] for c, e in columns.items()},
                                       {c: (e["paper"] or {}).get("mean") for c, e in columns.items()})})
    return out


def verdict(ours: dict, paper: dict) -> dict:
    """The paper's conclusion for one row (scratch >= fine-tuned, or >= pruned for a row without fine-tuning),
    in the paper's numbers and in ours."""

    def holds(v: dict) -> tuple[bool | None, str]:
        scratch = [(v[c], c) for c in ("scratch-e", "scratch-b") if v.get(c) is not None]
        ref = baseline_column(v)  # the row's columns
        if v.get(ref) is None or not scratch:
            return None, ""
        best, col = max(scratch)
        return best >= v[ref], f"{HEAD[col]} {best:.2f} vs {HEAD[ref]} {v[ref]:.2f}"

    p, p_why = holds(paper)
    o, o_why = holds(ours)
    return {"paper": p, "paper_why": p_why, "ours": o, "ours_why": o_why,
            "agrees": None if p is None or o is None else p == o}


def _num(x: float | None, signed: bool) -> str:
    return "-" if x is None else (f"{x:+.2f}" if signed else f"{x:.2f}")


def _yes(x: bool | None) -> str:
    return "n/a" if x is None else ("yes" if x else "no")


def markdown(m: dict, table: list[dict]) -> list[str]:
    """The "Paper vs ours" section: one line per cell, then one verdict line per row."""
    rows = paper_vs_ours(m, table)
    if not any(e["paper"] for r in rows for e in r["columns"].values()):
        return []
    relative = m["plan"].get("layout") == "relative"
    lines = ["", "## Paper vs ours", "",
             "| Pruned model | Column | Ours | Paper | Ours − paper | In paper's spread | In seeds' spread |",
             "|---|---|--:|--:|--:|:-:|:-:|"]
    notes = []
    for r in rows:
        for col, e in r["columns"].items():
            signed = relative and col != "unpruned"
            ours = _num(e["ours"], signed) + (f" ± {e['ours_std']:.2f}" if e["ours_std"] is not None else "")
            p = e["paper"]
            paper = "-" if p is None else _num(p["mean"], signed)
            if p is not None and p["std"] is not None:
                paper += f" ± {p['std']:.2f}"
            if p and p.get("note"):
                notes.append(f"{r['row']['label']}, {HEAD[col]}: the paper's {_num(p['mean'], signed)} "
                             f"(source: {p.get('source') or 'paper'}); {p['note']}.")
                paper += f" [{len(notes)}]"
            lines.append(f"| {r['row']['label']} | {HEAD[col]} | {ours} | {paper} | {_num(e['diff'], True)} "
                         f"| {_yes(e['in_paper_spread'])} | {_yes(e['in_our_spread'])} |")
    lines += ["", ("Ours: mean ± sample std over the seeds; paper: mean ± std as printed (no std: a single "
                   "run). In paper's spread: our mean within the paper's mean ± std; in seeds' spread: the "
                   "paper's mean within our mean ± std.")
              + (" Pruned-size columns are differences from the unpruned model, in points; the paper's "
                 "Fine-tuned is relative to the original paper's unpruned model." if relative else "")]
    lines += [""] + [f"[{i}] {n}" for i, n in enumerate(notes, start=1)] + ([""] if notes else [])
    lines += ["Does the paper's conclusion (training from scratch matches or beats fine-tuning) hold?", ""]
    for r in rows:
        v = r["verdict"]
        paper = "no numbers" if v["paper"] is None else \
            f"{'scratch >= fine-tuned' if v['paper'] else 'fine-tuned ahead'} ({v['paper_why']})"
        if v["ours"] is None:
            ours = "not enough results"
        else:
            ours = f"{'holds' if v['ours'] else 'does not hold'} ({v['ours_why']})"
        agree = "" if v["agrees"] is None else ("; agrees with the paper" if v["agrees"] else
                                                "; differs from the paper")
        lines.append(f"- **{r['row']['label']}** ({r['row']['dataset']}): paper: {paper}; "
                     f"this run: {ours}{agree}.")
    return lines


def to_csv(m: dict, table: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", "pruned_model", "column", "n", "ours", "ours_std", "paper", "paper_std",
                "paper_source", "diff", "in_paper_spread", "in_our_spread", "verdict_paper", "verdict_ours"])
    for r in paper_vs_ours(m, table):
        v = r["verdict"]
        for col, e in r["columns"].items():
            p = e["paper"] or {}
            w.writerow([r["row"]["index"], r["row"]["label"], col, e["n"], _f(e["ours"]), _f(e["ours_std"]),
                        _f(p.get("mean")), _f(p.get("std")), p.get("source") or "", _f(e["diff"]),
                        _b(e["in_paper_spread"]), _b(e["in_our_spread"]), _b(v["paper"]), _b(v["ours"])])
    return buf.getvalue()


def _f(x) -> str:
    return "" if x is None else f"{x:.4f}"


def _b(x) -> str:
    return "" if x is None else str(int(x))
