"""Reports: the paper's table layout (mean ± std, best bold, significance marks), CSV numbers, the figures,
and finding run folders. Built from hand-made manifests, so nothing trains here."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from prune_nas.cli import main
from prune_nas.core.errors import UserError
from prune_nas.repro.experiments import MANIFEST_FORMAT, MANIFEST_VERSION
from prune_nas.repro.report import comparison_cells, comparison_markdown, curve_points, find_runs, render


def _row(index=0, **kw) -> dict:
    row = {"index": index, "model": "vgg11", "dataset": "digits", "method": "slimming",
           "params": {"ratio": 0.5},
           "label": "VGG-11 50%", "seeds": [0, 1, 2], "epochs": 3, "finetune_epochs": 2, "width": 0.125,
           "input_size": 16, "budgets": ["finetune", "scratch-e", "scratch-b"], "budget": "scratch-e",
           "ratios": [], "series": [], "source": None, "reported": {}}
    row.update(kw)
    return row


def _manifest(kind="comparison", rows=None, runs=None, layout="absolute", patterns=()) -> dict:
    return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "status": "complete", "scale": "smoke",
            "spec": {"name": "t", "title": "A title", "paper": "Table 4", "kind": kind,
                     "description": "About.",
                     "file": "experiments/t.yaml"},
            "plan": {"scale": "smoke", "layout": layout, "note": "A smoke note.", "rows": rows or [_row()]},
            "progress": {"done": len(runs or []), "total": len(runs or []), "reused": 0}, "runs": runs or [],
            "patterns": list(patterns), "hardware": {"device": "cpu:Test CPU (2 cores)", "threads": 2},
            "versions": {"prune_nas": "0.1.0", "torch": "2.x", "python": "3.11"}, "wall_time_s": 125.0,
            "compute_time_s": 120.0, "updated": "2026-01-01T00:00:00"}


ACC = {"unpruned": [0.90, 0.91, 0.92], "finetune": [0.80, 0.81, 0.79], "scratch-e": [0.805, 0.79, 0.81],
       "scratch-b": [0.95, 0.96, 0.94]}


def _comparison_runs(acc=ACC, row=0) -> list[dict]:
    runs = []
    for seed in range(3):
        runs.append({"role": "prune", "row": row, "seed": seed, "params": 300, "base_params": 1000,
                     "flops": 20,
                     "base_flops": 100, "status": "ok"})
        for col, vals in acc.items():
            runs.append({"role": col, "row": row, "seed": seed, "status": "ok", "final_top1": vals[seed],
                         "epochs": {"finetune": 2, "scratch-b": 14}.get(col, 3), "params": 300})
    return runs


def test_comparison_table_paper_layout():
    m = _manifest(runs=_comparison_runs())
    table = comparison_cells(m)
    (t,) = table
    assert t["best"] == {"scratch-b"}
    assert t["cells"]["scratch-b"]["p"] < 0.05 < t["cells"]["scratch-e"]["p"]
    assert t["params_kept"] == pytest.approx(0.3) and t["flops_kept"] == pytest.approx(0.2)
    md = comparison_markdown(m, table)
    header, _sep, line = md.splitlines()
    assert header == ("| Dataset | Model | Unpruned | Pruned model | Params kept | FLOPs kept | Fine-tuned | "
                      "Scratch-E | Scratch-B |")
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:6] == ["digits", "vgg11 ×0.125", "91.00 ± 1.00", "VGG-11 50%", "30.0%", "20.0%"]
    assert cells[6] == "80.00 ± 1.00"
    assert cells[7] == "80.17 ± 1.04", "no bold, no mark: not the best, not significant"
    assert cells[8] == "**95.00 ± 1.00** \\*", "best in bold, * for p < 0.05 against fine-tuned"


def test_relative_layout_and_repeated_model_cells():
    rows = [_row(0), _row(1, label="VGG-11 70%")]
    m = _manifest(rows=rows, runs=_comparison_runs(row=0) + _comparison_runs(row=1), layout="relative")
    lines = comparison_markdown(m).splitlines()
    first, second = ([c.strip() for c in x.strip("|").split("|")] for x in lines[2:4])
    assert "(Δ)" in lines[0]
    assert first[6] == "-11.00 ± 1.00" and first[8].startswith("**+4.00 ± 1.00**")
    assert second[:2] == ["", ""], "dataset and model are not repeated, as in the paper"


def test_single_seed_has_no_std_and_no_test():
    acc = {k: [v[0]] * 3 for k, v in ACC.items()}
    runs = [r for r in _comparison_runs(acc) if r["seed"] == 0]
    m = _manifest(rows=[_row(seeds=[0])], runs=runs)
    (t,) = comparison_cells(m)
    assert t["cells"]["scratch-b"]["p"] is None
    line = comparison_markdown(m).splitlines()[2]
    assert "**95.00**" in line and "±" not in line.split("|")[7] and "\\*" not in line


def test_render_comparison_writes_markdown_csv_and_figures(tmp_path):
    m = _manifest(rows=[_row(reported={"unpruned": 93.53, "finetune": 93.60, "scratch-e": 93.30,
                                       "scratch-b": 93.81})], runs=_comparison_runs())
    run = tmp_path / "runs" / "t" / "smoke"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps(m))
    files = render(run, tmp_path / "out")
    names = [f.name for f in files]
    assert names[:3] == ["report.md", "table.csv", "accuracy.png"]
    md = files[0].read_text()
    assert md.startswith("# Table 4: A title") and "**Scale: smoke**" in md
    assert "cpu:Test CPU (2 cores)" in md and "2.1 min" in md and "*A smoke note.*" in md
    assert "Welch's two-sided t-test" in md and "| digits | vgg11 ×0.125 | VGG-11 50% | 93.53 |" in md
    assert "**93.81**" in md
    rows = list(csv.DictReader(io.StringIO(files[1].read_text())))
    assert [r["column"] for r in rows] == ["unpruned", "finetune", "scratch-e", "scratch-b"]
    b = rows[3]
    assert b["best"] == "1" and float(b["mean_top1"]) == pytest.approx(0.95) and b["values"].count(";") == 2
    assert float(b["p_vs_finetune"]) < 0.05 and b["paper"] == "93.81"
    assert files[2].stat().st_size > 10_000


def test_incomplete_run_says_so(tmp_path):
    m = _manifest(runs=_comparison_runs()[:4])
    m["status"], m["progress"] = "interrupted", {"done": 4, "total": 15, "reused": 0}
    run = tmp_path / "r"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(m))
    md = render(run, tmp_path / "out")[0].read_text()
    assert "Incomplete (interrupted): 4 of 15 runs finished" in md


def _curve_manifest():
    row = _row(ratios=[0.3, 0.6], series=["pruned", "uniform", "guided", "transferred"],
               source="vgg16-digits",
               label="Guided Pruning", params={})
    runs = []
    for series, shift in (("pruned", 0.0), ("uniform", -0.05), ("guided", -0.01), ("transferred", -0.02)):
        for ratio, params in ((0.3, 5000), (0.6, 2000)):
            for seed in range(3):
                runs.append({"role": series, "row": 0, "seed": seed, "ratio": ratio, "status": "ok",
                             "final_top1": 0.9 + shift - ratio / 10 + seed / 100, "params": params + seed,
                             "epochs": 3, "genome": f"{series}-{ratio}"})
    return _manifest(kind="guided", rows=[row], runs=runs)


def test_curves_points_and_figure(tmp_path):
    m = _curve_manifest()
    pts = curve_points(m)
    assert len(pts) == 8
    p = next(x for x in pts if x["series"] == "uniform" and x["ratio"] == 0.6)
    assert p["n"] == 3 and p["params_mean"] == pytest.approx(2001) and p["acc_mean"] == pytest.approx(0.80)
    run = tmp_path / "r"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(m))
    files = render(run, tmp_path / "out")
    assert [f.name for f in files] == ["report.md", "curves.csv", "curves.png"]
    assert "| Guided Pruning | transferred | 0.6 |" in files[0].read_text()
    assert len(files[1].read_text().splitlines()) == 9


def _pattern_run(tmp_path, kind: str) -> Path:
    """A run folder holding a mined pattern of hand-made genomes (dense for widths, sparse for kernels)."""
    from prune_nas.core.genome import Sparsity, base_genome, save_genome
    from prune_nas.design.mining import mine_genomes, save_pattern

    base = base_genome("vgg11", num_classes=10, input_size=16, width_mult=0.125)
    genomes = []
    for seed in range(2):
        prov = {"method": "slimming" if kind == "widths" else "magnitude", "dataset": "digits", "seed": seed,
                "ratio": 0.5, "source": {"model": "vgg11", "width": 0.125}}
        if kind == "widths":
            g = base.replace(widths={**base.widths, "conv8": 16 + seed, "conv1": 4}, provenance=prov)
        else:
            keep = {str(s): [[0.2, 0.5, 0.2], [0.5, 0.9, 0.5], [0.2, 0.5, 0.2]] for s in range(1, 6)}
            g = base.replace(sparsity=Sparsity(density={"features.conv1": 0.5}, kernel_keep=keep),
                             provenance=prov)
        genomes.append(g)
    run = tmp_path / "r"
    files = [str(save_genome(g, run / "genomes" / f"g{i}.json")) for i, g in enumerate(genomes)]
    pattern = mine_genomes(genomes, files)
    save_pattern(pattern, run / "patterns" / "p.pattern.json")
    row = _row(method=prov["method"], reported={"widths": [32.0] * 8} if kind == "widths" else {})
    m = _manifest(kind=kind, rows=[row], patterns=[{"row": 0, "file": "patterns/p.pattern.json"}])
    (run / "manifest.json").write_text(json.dumps(m))
    return run


def test_widths_table_and_bars(tmp_path):
    files = render(_pattern_run(tmp_path, "widths"), tmp_path / "out")
    assert [f.name for f in files] == ["report.md", "widths-row0.csv", "widths-row0.png"]
    md = files[0].read_text()
    # a narrow model: the paper's widths are compared as kept shares of the full-width layers (64-512)
    assert "| 8 | conv8 | 5 | 64 | 16.5 ± 0.5 | 26% | 6% |" in md and "Paper kept" in md
    assert "| 1 | conv1 | 1 | 8 | 4.0 ± 0.0 | 50% | 50% |" in md and "Paper Width*" not in md


def test_kernels_table_and_heat_maps(tmp_path):
    files = render(_pattern_run(tmp_path, "kernels"), tmp_path / "out")
    assert [f.name for f in files] == ["report.md", "kernels-row0.csv", "kernels-row0.png"]
    md = files[0].read_text()
    assert "0.20 0.50 0.20 / 0.50 0.90 0.50 / 0.20 0.50 0.20 | 0.90 | 0.50 | 0.20 |" in md


def test_find_runs_picks_a_scale(tmp_path):
    for scale in ("smoke", "small"):
        d = tmp_path / "t" / scale
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps(_manifest()))
    assert find_runs(tmp_path / "t") == [tmp_path / "t" / "small"], "the largest scale that ran"
    assert find_runs(tmp_path / "t", "smoke") == [tmp_path / "t" / "smoke"]
    assert find_runs(tmp_path, "smoke") == [tmp_path / "t" / "smoke"], "the runs root: every spec"
    with pytest.raises(UserError, match="no experiment results at the paper scale"):
        find_runs(tmp_path / "t", "paper")
    with pytest.raises(UserError, match="holds the smoke scale, not small"):
        find_runs(tmp_path / "t" / "smoke", "small")


def test_report_cli_user_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no experiment results at" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{}")
    assert main(["report", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "is not a prune-nas experiment manifest" in capsys.readouterr().err


# ---- paper vs ours -----------------------------------------------------------------------------------------
PAPER = {"unpruned": {"mean": 91.5, "std": 0.6}, "finetune": {"mean": 81.0, "std": 0.5},
         "scratch-e": {"mean": 80.0, "std": 0.1, "source": "paper",
                       "note": "the reference code's README reports 80.1"},
         "scratch-b": 93.0}


def test_paper_vs_ours_per_cell_and_verdict(tmp_path):
    from prune_nas.repro.compare import paper_vs_ours

    m = _manifest(rows=[_row(reported=PAPER)], runs=_comparison_runs())
    (r,) = paper_vs_ours(m, comparison_cells(m))
    c = r["columns"]
    # Ours (ACC): unpruned 91.00 ± 1.00, fine-tuned 80.00 ± 1.00, Scratch-E 80.17 ± 1.04,
    # Scratch-B 95.00 ± 1.00.
    assert c["unpruned"]["diff"] == pytest.approx(-0.5)
    assert c["unpruned"]["in_paper_spread"] is True and c["unpruned"]["in_our_spread"] is True
    assert c["finetune"]["diff"] == pytest.approx(-1.0)
    assert c["finetune"]["in_paper_spread"] is False and c["finetune"]["in_our_spread"] is True
    assert c["scratch-e"]["diff"] == pytest.approx(0.1667, abs=1e-3)
    assert c["scratch-e"]["in_paper_spread"] is False
    assert c["scratch-b"]["diff"] == pytest.approx(2.0)
    assert c["scratch-b"]["in_paper_spread"] is None, "a number without std: no paper spread"
    assert c["scratch-b"]["in_our_spread"] is False
    v = r["verdict"]
    assert (v["paper"], v["ours"], v["agrees"]) == (True, True, True)
    assert v["ours_why"] == "Scratch-B 95.00 vs Fine-tuned 80.00"

    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(m))
    files = render(run, tmp_path / "out")
    md = files[0].read_text()
    assert "## Paper vs ours" in md
    assert "| VGG-11 50% | Fine-tuned | 80.00 ± 1.00 | 81.00 ± 0.50 | -1.00 | no | yes |" in md
    assert "| VGG-11 50% | Scratch-E | 80.17 ± 1.04 | 80.00 ± 0.10 [1] | +0.17 | no | yes |" in md
    assert ("[1] VGG-11 50%, Scratch-E: the paper's 80.00 (source: paper); the reference code's README "
            "reports 80.1.") in md
    assert ("- **VGG-11 50%** (digits): paper: scratch >= fine-tuned (Scratch-B 93.00 vs Fine-tuned 81.00); "
            "this run: holds (Scratch-B 95.00 vs Fine-tuned 80.00); agrees with the paper.") in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "paper_vs_ours.csv").read_text())))
    assert [r["column"] for r in rows] == ["unpruned", "finetune", "scratch-e", "scratch-b"]
    assert rows[1]["diff"] == "-1.0000" and rows[1]["in_paper_spread"] == "0" and rows[3]["paper_std"] == ""


def test_verdict_when_fine_tuning_wins_and_relative_layout():
    """Table 6 ImageNet style: the paper has fine-tuning ahead; here our fine-tuned cell wins too. Relative
    layout: ours are differences from our unpruned mean, compared with the paper's printed differences."""
    from prune_nas.repro.compare import paper_vs_ours

    acc = {"unpruned": [0.90] * 3, "finetune": [0.89, 0.90, 0.88], "scratch-e": [0.85] * 3,
           "scratch-b": [0.86] * 3}
    reported = {"unpruned": 71.51, "unpruned_original": 71.03, "finetune": -1.0, "scratch-e": -2.75,
                "scratch-b": -3.0}
    m = _manifest(rows=[_row(reported=reported)], runs=_comparison_runs(acc), layout="relative")
    (r,) = paper_vs_ours(m, comparison_cells(m))
    c = r["columns"]
    assert c["unpruned"]["ours"] == pytest.approx(90.0) and c["unpruned"]["diff"] == pytest.approx(18.49)
    assert c["finetune"]["ours"] == pytest.approx(-1.0) and c["finetune"]["diff"] == pytest.approx(0.0)
    assert c["scratch-e"]["ours"] == pytest.approx(-5.0) and c["scratch-e"]["in_our_spread"] is False
    v = r["verdict"]
    assert (v["paper"], v["ours"], v["agrees"]) == (False, False, True)
    m2 = _manifest(rows=[_row(reported={"finetune": -1.0})], runs=_comparison_runs(acc)[:3],
                   layout="relative")
    (r2,) = paper_vs_ours(m2, comparison_cells(m2))
    assert r2["verdict"]["ours"] is None and r2["verdict"]["paper"] is None
