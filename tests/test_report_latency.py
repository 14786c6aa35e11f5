"""Latency in reports (off by default): `report --latency` measures the unpruned and pruned models of a
comparison here and adds a latency table, latency.csv and accuracy vs FLOPs / latency; `evaluate`'s table
gets a latency column. Hand-made manifests and rows: nothing trains."""

from __future__ import annotations

import csv
import io
import json

from prune_nas.core.genome import base_genome, save_genome
from prune_nas.core.latency import device_name
from prune_nas.methods.baselines import uniform_genome
from prune_nas.repro.evaluate import Comparison, Row
from prune_nas.repro.experiments import MANIFEST_FORMAT, MANIFEST_VERSION
from prune_nas.repro.report import render

ROW = {"index": 0, "model": "vgg11", "dataset": "digits", "method": "slimming", "params": {"ratio": 0.5},
       "label": "VGG-11 50%", "seeds": [0, 1], "epochs": 3, "finetune_epochs": 2, "width": 0.125,
       "input_size": 16, "budgets": ["finetune", "scratch-e", "scratch-b"], "budget": "scratch-e",
       "ratios": [], "series": [], "source": None, "reported": {}}


def manifest(run) -> dict:
    base = base_genome("vgg11", num_classes=10, input_size=16, width_mult=0.125)
    pruned = uniform_genome(base, 0.5)
    save_genome(pruned, run / "genomes" / "p.json")
    runs = []
    for seed, acc in enumerate([0.9, 0.92]):
        runs.append({"role": "prune", "row": 0, "seed": seed, "params": 300, "base_params": 1000, "flops": 20,
                     "base_flops": 100, "status": "ok", "genome_file": "genomes/p.json"})
        for col in ("unpruned", "finetune", "scratch-e", "scratch-b"):
            runs.append({"role": col, "row": 0, "seed": seed, "status": "ok", "final_top1": acc, "epochs": 3})
    return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "status": "complete", "scale": "smoke",
            "spec": {"name": "t", "title": "T", "paper": "Table 4", "kind": "comparison", "description": "",
                     "file": "experiments/t.yaml"},
            "plan": {"scale": "smoke", "layout": "absolute", "note": "", "rows": [ROW]},
            "progress": {"done": len(runs), "total": len(runs), "reused": 0}, "runs": runs, "patterns": [],
            "hardware": {"device": "cpu", "threads": 1}, "versions": {}, "wall_time_s": 1.0,
            "compute_time_s": 1.0, "updated": "2026-01-01T00:00:00"}


def test_report_latency_section_table_and_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNE_NAS_HOME", str(tmp_path / "home"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(manifest(run)))
    plain = [f.name for f in render(run, tmp_path / "plain")]
    assert "latency.csv" not in plain and "## Latency" not in (tmp_path / "plain" / "report.md").read_text()
    files = {f.name: f for f in render(run, tmp_path / "out", latency="cpu")}
    assert {"latency.csv", "accuracy-cost.png"} <= set(files)
    md = files["report.md"].read_text()
    assert f"## Latency on {device_name('cpu')}" in md and "![accuracy vs FLOPs and latency]" in md
    (row,) = csv.DictReader(io.StringIO(files["latency.csv"].read_text()))
    assert float(row["ms"]) > 0 and float(row["base_ms"]) > 0 and row["top1_column"] == "Scratch-B"
    assert float(row["flops"]) < float(row["base_flops"])  # from the genomes, not the manifest's 20 / 100
    assert files["accuracy-cost.png"].stat().st_size > 5_000


def test_evaluate_table_latency_column_only_when_measured():
    rows = [Row("unpruned", "g", "k", 1000, 100, "Scratch-E", values=[0.9, 0.91]),
            Row("Scratch-B", "p", "k2", 500, 50, "Scratch-B", values=[0.92, 0.93])]
    assert "ms (batch 1)" not in Comparison("t", rows, []).markdown(None)
    rows[0].latency_ms, rows[1].latency_ms = 2.5, 1.25
    md = Comparison("t", rows, []).markdown(None)
    assert "ms (batch 1)" in md and "1.250" in md
    assert len({len(line) for line in md.splitlines()}) == 1  # columns still line up
    assert Comparison("t", rows, []).to_dict()["rows"][1]["latency_ms"] == 1.25
