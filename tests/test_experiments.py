"""Experiment specs: every spec validates at every scale; user errors are one line naming file and field; the
runner runs a spec end to end, writes its manifest, and resumes after an interruption reusing finished runs.

The default suite runs one spec end to end at smoke scale (Table 4, Network Slimming); the other specs run at
smoke scale under ``-m slow``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from prune_nas.cli import main
from prune_nas.core.errors import UserError
from prune_nas.repro.experiments import (
    KINDS,
    SCALES,
    load_manifest,
    load_spec,
    parse_spec,
    run_dir,
    run_experiment,
    spec_files,
)

ROOT = Path(__file__).resolve().parent.parent
SPECS = spec_files(ROOT / "experiments")
NAMES = [p.stem for p in SPECS]
# What the issue asks for: Tables 1-6, Table 8, Figures 3-5, Section 6 (lottery ticket).
EXPECTED = {"table1_l1norm": "Table 1", "table2_thinet": "Table 2", "table3_regression": "Table 3",
            "table4_slimming": "Table 4", "table5_sss": "Table 5", "table6_magnitude": "Table 6",
            "table8_widths": "Table 8", "figure3_efficiency": "Figure 3", "figure4_kernels": "Figure 4",
            "figure5_guided": "Figure 5", "section6_lottery": "Section 6"}
END_TO_END = "table4_slimming"  # the one smoke run in the default suite


def test_one_spec_per_experiment_of_the_paper():
    assert sorted(NAMES) == sorted(EXPECTED)
    for path in SPECS:
        spec = load_spec(path)
        assert spec.name == path.stem, "the name chooses the output folder; keep it equal to the file name"
        assert spec.paper == EXPECTED[spec.name]


@pytest.mark.parametrize("path", SPECS, ids=NAMES)
def test_spec_validates_at_every_scale(path):
    spec = load_spec(path)
    assert spec.kind in KINDS
    for scale in SCALES:
        plan = spec.plan(scale)
        assert plan.rows and plan.total_runs() > 0
    smoke = spec.plan("smoke")
    assert {r.dataset for r in smoke.rows} == {"digits"}, "smoke runs on the embedded dataset"
    assert all(r.width <= 0.25 and r.epochs <= 5 and (r.input_size or 32) <= 16 for r in smoke.rows)
    paper = spec.plan("paper")
    assert {r.dataset for r in paper.rows} <= {"cifar10", "cifar100", "imagenet"}
    for r in paper.rows:
        assert r.width == 1.0 and r.input_size is None
        assert r.epochs == {"cifar10": 160, "cifar100": 160}.get(r.dataset, r.epochs)
        if r.dataset != "imagenet":
            assert len(r.seeds) == 5, "CIFAR results are mean ± std of 5 runs"


def test_paper_scale_settings_follow_the_paper():
    t4 = load_spec(ROOT / "experiments" / "table4_slimming.yaml").plan("paper")
    rows = {(r.dataset, r.model, r.ratio) for r in t4.rows}
    assert ("cifar10", "vgg19", 0.7) in rows and ("cifar100", "vgg19", 0.5) in rows
    assert ("cifar10", "preresnet164", 0.6) in rows and ("cifar100", "densenet40", 0.4) in rows
    imagenet = [r for r in t4.rows if r.dataset == "imagenet"]
    assert [(r.model, r.finetune_epochs, r.epochs, r.cap) for r in imagenet] == [("vgg11-imagenet", 5, 90,
                                                                                   None)]
    assert all(r.finetune_epochs == 40 for r in t4.rows if r.dataset != "imagenet")
    t1 = load_spec(ROOT / "experiments" / "table1_l1norm.yaml").plan("paper")
    assert [r.label for r in t1.rows][:5] == ["VGG-16-A", "ResNet-56-A", "ResNet-56-B", "ResNet-110-A",
                                              "ResNet-110-B"]
    t8 = load_spec(ROOT / "experiments" / "table8_widths.yaml").plan("paper")
    (row,) = t8.rows
    assert (row.model, row.dataset, row.ratio, len(row.seeds)) == ("vgg16", "cifar10", 0.6, 5)
    assert len(row.reported["widths"]) == 13
    f5 = load_spec(ROOT / "experiments" / "figure5_guided.yaml")
    assert {(r.model, r.dataset, r.source) for r in f5.plan("paper").rows} == {("vgg19", "cifar100",
                                                                                ("vgg16", "cifar10"))}
    # smoke forces the source's dataset too
    assert {r.source for r in f5.plan("smoke").rows} == {("vgg16", "digits")}


# The paper's settings per row at paper scale, written from the paper (PAPER.md, the seed's tables) and the
# reference code (Eric-mingjie/rethinking-network-pruning): seeds, epochs, lr, lr drops (epochs), batch,
# fine-tuning epochs, Scratch-B cap on the FLOPs ratio (None: int(base x ratio) without a cap).
CIFAR = (5, 160, 0.1, [80, 120], 64, 40, None)  # main_B.py (cifar/*): 160 epochs, drops at 50% / 75%, no cap
IMAGENET_L1 = (1, 90, 0.1, [30, 60], 256, 20, 2.0)  # imagenet/l1-norm-pruning: ratio >= 2 -> 180 epochs
THINET_VGG = (1, 90, 0.01, [30, 60], 256, 20, 2.0)  # README commands: --lr 0.01 for every VGG
THINET_RESNET = (1, 90, 0.1, [30, 60], 256, 20, 2.0)
SLIMMING_VGG11 = (1, 90, 0.1, [30, 60], 256, 5, None)  # imagenet/network-slimming/main_B.py: no cap
SSS = (1, 100, 0.1, [30, 60, 90], 256, 10, None)  # SSS README: 100 epochs, drops at 30/60/90; B: 117/145/179
WEIGHT_IMAGENET = (1, 90, 0.1, [30, 60], 256, 10, None)  # imagenet/weight-level/main_B.py: int(90 x ratio)
PAPER_SETTINGS = {
    "table1_l1norm": {**dict.fromkeys(["VGG-16-A", "ResNet-56-A", "ResNet-56-B", "ResNet-110-A",
                                       "ResNet-110-B"], CIFAR),
                      "ResNet-34-A": IMAGENET_L1, "ResNet-34-B": IMAGENET_L1},
    "table2_thinet": {**dict.fromkeys(["VGG-Conv", "VGG-GAP", "VGG-Tiny"], THINET_VGG),
                      **dict.fromkeys(["ResNet50-30%", "ResNet50-50%", "ResNet50-70%"], THINET_RESNET)},
    "table3_regression": {"VGG-16-5x": THINET_VGG},
    "table4_slimming": {**{f"{ds} {label}": CIFAR for ds in ("cifar10", "cifar100") for label in (
        "VGG-19 70%", "VGG-19 50%", "PreResNet-164 40%", "PreResNet-164 60%", "DenseNet-40 40%",
        "DenseNet-40 60%")}, "imagenet VGG-11 50%": SLIMMING_VGG11},
    "table5_sss": dict.fromkeys(["ResNet-41", "ResNet-32", "ResNet-26"], SSS),
    "table6_magnitude": {**{f"{ds} {label}": CIFAR for ds in ("cifar10", "cifar100") for label in (
        "VGG-19 30%", "VGG-19 80%", "VGG-19 50%", "PreResNet-110 30%", "PreResNet-110 80%",
        "PreResNet-110 50%", "DenseNet-BC-100 30%", "DenseNet-BC-100 80%", "DenseNet-BC-100 50%")},
        **{f"imagenet {label}": WEIGHT_IMAGENET for label in ("VGG-16 30%", "VGG-16 60%", "ResNet-50 30%",
                                                               "ResNet-50 60%")}},
    "table8_widths": {"VGG-16 60%": CIFAR},
}


def _settings(row) -> tuple:
    s = row.schedule()
    return (len(s["seeds"]), s["epochs"], s["lr"], s["lr_milestones"], s["batch_size"], s["finetune_epochs"],
            s["scratch_b"]["cap"])


@pytest.mark.parametrize("name", sorted(PAPER_SETTINGS))
def test_paper_scale_schedules_match_the_papers_settings(name, capsys):
    """What `--dry-run --scale paper` shows per row (Row.schedule) is the paper's setting, row by row."""
    spec = load_spec(ROOT / "experiments" / f"{name}.yaml")
    rows = spec.plan("paper").rows
    want = PAPER_SETTINGS[name]
    got = {}
    for r in rows:
        key = r.label if r.label in want else f"{r.dataset} {r.label}"
        got[key] = _settings(r)
        if name == "table8_widths":  # a widths run has no fine-tuning; its base schedule is the paper's
            got[key] = (*got[key][:5], 40, None)
    assert got == {k: v for k, v in want.items() if k in got}
    assert len(got) == len(rows) and set(got) <= set(want), "every paper row is in the table above"
    assert main(["run", name, "--scale", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for r in rows:
        s = r.schedule()
        drops = ", ".join(map(str, s["lr_milestones"]))
        assert f"{s['epochs']} epochs, lr {s['lr']:g} x0.1 at epochs {drops}, batch {s['batch_size']}" in out


def test_scratch_b_stretches_the_lr_drops():
    """Scratch-B trains int(base x ratio) epochs and moves the drops with them: CIFAR VGG-16-A 243 epochs
    drops at int(0.5 x 243), int(0.75 x 243) (cifar main_B.py); ImageNet capped at 180, drops every 60; SSS
    ResNet-41 / 32 / 26 (117 / 145 / 179 epochs) drop every int(30 x ratio) epochs: 35, 70, 105; 43, 86, 129;
    53, 106, 159 (its README)."""

    def drops(name, label, epochs):
        (row,) = [r for r in load_spec(ROOT / "experiments" / f"{name}.yaml").plan("paper").rows
                  if r.label == label]
        return row.protocol().with_epochs(epochs).lr_milestones(), row

    assert drops("table1_l1norm", "VGG-16-A", 243)[0] == [121, 182]
    assert drops("table1_l1norm", "ResNet-34-A", 180)[0] == [60, 120]
    # SSS (the method's ImageNet protocol): every 30 of 100 epochs, the period stretched by Scratch-B.
    for label, epochs, ref in (("ResNet-41", 117, [35, 70, 105]), ("ResNet-32", 145, [43, 86, 129]),
                               ("ResNet-26", 179, [53, 106, 159])):
        assert drops("table5_sss", label, epochs)[0] == ref


def test_faithful_spec_contents():
    """Table 8 prunes 60% (its Total keeps 1,689.2 of 4,224 channels); Tables 2-3 carry the original papers'
    baselines; the numbers where the seed and the reference README disagree say which they follow."""
    (t8,) = load_spec(ROOT / "experiments" / "table8_widths.yaml").plan("paper").rows
    assert t8.ratio == 0.6 and round(sum(t8.reported["widths"]), 1) == 1689.2
    assert round(1 - sum(t8.reported["widths"]) / (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512), 2) == t8.ratio
    originals = {(r.label, r.reported.get("unpruned_original"))
                 for name in ("table2_thinet", "table3_regression")
                 for r in load_spec(ROOT / "experiments" / f"{name}.yaml").plan("paper").rows}
    assert originals == {("VGG-Conv", 71.03), ("VGG-GAP", 71.03), ("VGG-Tiny", 71.03),
                         ("ResNet50-30%", 75.15), ("ResNet50-50%", 75.15), ("ResNet50-70%", 75.15),
                         ("VGG-16-5x", 71.03)}
    disputed = [(p.stem, r.label, col) for p in SPECS for r in load_spec(p).plan("paper").rows
                for col, v in r.reported.items() if isinstance(v, dict) and "note" in v]
    assert len(disputed) == 9, disputed  # of the 11 known; the other 2 are ResNet-50-2x, not reproduced
    t4 = {r.label: r for r in load_spec(ROOT / "experiments" / "table4_slimming.yaml").plan("paper").rows}
    assert t4["VGG-11 50%"].params["s"] == 1e-5, "imagenet/network-slimming README: --s 0.00001"


# ---- validation --------------------------------------------------------------------------------------------
MINIMAL = {"version": 1, "name": "t", "title": "t", "paper": "Table 4", "kind": "comparison",
           "method": "slimming",
           "rows": [{"dataset": "cifar10", "model": "vgg19", "ratio": 0.7}],
           "scales": {"paper": {"seeds": 5}, "small": {"seeds": 3, "epochs": 40},
                      "smoke": {"dataset": "digits", "width": 0.125, "input_size": 16, "epochs": 1,
                                "seeds": 2}}}


def _with(change) -> dict:
    d = json.loads(json.dumps(MINIMAL))
    change(d)
    return d


@pytest.mark.parametrize("change, field, words", [
    (lambda d: d.update(colour="red"), "colour", "unknown key"),
    (lambda d: d["scales"]["smoke"].update(epoch=3), "scales.smoke.epoch", "did you mean epochs"),
    (lambda d: d["rows"][0].update(model="vgg99"), "rows[0].model", "unknown model 'vgg99'"),
    (lambda d: d.update(method="slimmming"), "method", "unknown method 'slimmming'"),
    (lambda d: d["rows"][0].update(dataset="mnist"), "rows[0].dataset", "unknown dataset 'mnist'"),
    (lambda d: d["scales"].pop("small"), "scales.small", "missing"),
    (lambda d: d.update(version=2), "version", "must be 1"),
    (lambda d: d.update(kind="table"), "kind", "must be one of comparison, widths"),
    (lambda d: d["rows"][0].update(ratio=1.5), "rows[0]", "(0, 1)"),
    (lambda d: d["rows"][0].update(params={"lambda": 1}), "rows[0].params.lambda", "no parameter 'lambda'"),
    (lambda d: d["scales"]["paper"].update(seeds=0), "scales.paper.seeds", "number of seeds"),
    (lambda d: d["scales"]["small"].update(budgets=["scratch-c"]), "scales.small.budgets", "scratch-e"),
    (lambda d: d["scales"]["smoke"].update(input_size=4), "rows[0]", "needs at least"),
    (lambda d: d.pop("scales"), "scales", "missing"),
    (lambda d: d["rows"][0].update(init="lottery"), "rows[0].init", "winning_ticket"),
    # The schema's bounds and types, before any work.
    (lambda d: d["scales"]["paper"].update(seeds=100000), "scales.paper.seeds", "at most 100"),
    (lambda d: d["scales"]["paper"].update(seeds=[1, 1]), "scales.paper.seeds", "distinct seeds"),
    (lambda d: d["rows"][0].update(seeds=-1), "rows[0].seeds", "number of seeds"),
    (lambda d: d["scales"]["small"].update(width=float("inf")), "scales.small.width", "finite"),
    (lambda d: d["rows"][0].update(lr=float("nan")), "rows[0].lr", "finite"),
    (lambda d: d["rows"][0].update(lr=-0.1), "rows[0].lr", "must be > 0"),
    (lambda d: d["scales"]["small"].update(epochs="40"), "scales.small.epochs",
     "must be an integer, got '40'"),
    (lambda d: d["scales"]["small"].update(epochs=10 ** 9), "scales.small.epochs", "must be <= 1000"),
    (lambda d: d["rows"][0].update(lr_milestones=[80, 200]), "rows[0].lr_milestones",
     "before the last epoch"),
    (lambda d: d["rows"][0].update(lr_milestones=[120, 80]), "rows[0].lr_milestones", "increasing order"),
    (lambda d: d["rows"][0].update(cap=-2), "rows[0].cap", "a positive number"),
    (lambda d: d["rows"][0].update(reported={"finetune": {"mean": 93.6, "sd": 0.1}}),
     "rows[0].reported.finetune.sd", "unknown key (did you mean std?)"),
    (lambda d: d["rows"][0].update(reported={"finetune": {"mean": 93.6, "std": -1}}),
     "rows[0].reported.finetune.std", "must be >= 0"),
    (lambda d: d["rows"][0].update(reported={"finetune": "93.6"}), "rows[0].reported.finetune",
     "must be a number or a mapping"),
    (lambda d: d["rows"][0].update(reported={"finetune": {"mean": 93.6, "source": "blog"}}),
     "rows[0].reported.finetune.source", "must be one of paper, reference, got 'blog'"),
    (lambda d: d["rows"][0].update(params=[1]), "rows[0].params", "must be a mapping"),
    (lambda d: d.update(name="../x"), "name", "it names a folder"),
    (lambda d: d.update(title=" "), "title", "a non-empty string"),
    (lambda d: d["scales"]["smoke"].update(rows=[]), "scales.smoke.rows", "needs at least 1 item"),
])
def test_spec_errors_name_the_file_and_field(change, field, words):
    with pytest.raises(UserError) as e:
        parse_spec(_with(change), "x.yaml")
    msg = str(e.value)
    assert msg.startswith((f"x.yaml: {field}: ", f"x.yaml: scales.smoke.{field}")) or f": {field}" in msg, msg
    assert words in msg and "\n" not in msg


def test_yaml_syntax_error_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\nkind: comparison\n")
    with pytest.raises(UserError, match=r"bad\.yaml: not valid YAML at line"):
        load_spec(bad)
    with pytest.raises(UserError, match="experiment spec not found"):
        load_spec(tmp_path / "none.yaml")


def test_cli_user_error_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_with(lambda d: d["rows"][0].update(model="vgg99"))))
    assert main(["run", str(bad), "--scale", "smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.yaml: rows[0].model: unknown model 'vgg99'" in err


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, capsys):
    assert main(["run", *map(str, SPECS), "--scale", "paper", "--dry-run", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "table4_slimming.yaml: Table 4, comparison, scale paper: 11 rows, 255 runs" in out
    assert "imagenet vgg11-imagenet @224px, slimming: VGG-11 50%, params s=1e-05\n" in out
    assert ("    seeds 0 (1); 90 epochs, lr 0.1 x0.1 at epochs 30, 60, batch 256; fine-tune 5 epochs at lr "
            "0.001; Scratch-B int(90 x FLOPs ratio) epochs, no cap, lr drops stretched with it\n") in out
    assert not any(tmp_path.iterdir())


# ---- the runner --------------------------------------------------------------------------------------------
TINY = {"version": 1, "name": "tiny", "title": "tiny", "paper": "Table 4", "kind": "comparison",
        "method": "slimming", "rows": [{"model": "vgg11", "ratio": 0.5}],
        "scales": {s: {"dataset": "synthetic", "width": 0.125, "input_size": 16, "epochs": 1,
                       "finetune_epochs": 1, "seeds": 2} for s in SCALES}}


def test_interrupted_run_resumes_and_reuses_finished_runs(tmp_path, monkeypatch):
    from prune_nas.training import runs as train

    spec = parse_spec(json.loads(json.dumps(TINY)), tmp_path / "tiny.yaml")
    real, calls = train.run, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train, "run", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(spec, "smoke", progress=False, log=lambda s: None)
    m = load_manifest(run_dir(spec, "smoke"))
    assert m["status"] == "interrupted" and 0 < m["progress"]["done"] < m["progress"]["total"]
    done = m["progress"]["done"]
    monkeypatch.setattr(train, "run", real)
    path = run_experiment(spec, "smoke", progress=False, log=lambda s: None)
    m = load_manifest(path)
    assert m["status"] == "complete" and m["progress"]["done"] == m["progress"]["total"] == 10
    assert m["progress"]["reused"] >= done, "what finished before the interruption is reused"
    again = load_manifest(run_experiment(spec, "smoke", progress=False, log=lambda s: None))
    assert again["progress"]["reused"] == again["progress"]["total"]
    assert [r["key"] for r in again["runs"]] == [r["key"] for r in m["runs"]]


def test_a_pruned_column_measures_the_pruned_model_untrained(tmp_path):
    """Sparse Structure Selection's column: the pruned model with its inherited weights, no fine-tuning."""
    from prune_nas.core.genome import load_genome
    from prune_nas.repro.report import comparison_cells, comparison_markdown
    from prune_nas.training.data import load_dataset
    from prune_nas.training.loop import evaluate_model
    from prune_nas.training.runs import RunSpec, init_model

    raw = json.loads(json.dumps(TINY))
    raw["budgets"] = ["pruned", "scratch-e"]
    raw["rows"][0]["reported"] = {"pruned": 10.0, "scratch-e": 12.0}
    for sc in raw["scales"].values():
        sc["seeds"] = 1
    spec = parse_spec(raw, tmp_path / "tiny.yaml")
    out = run_experiment(spec, "smoke", progress=False, log=lambda s: None)
    m = load_manifest(out)
    assert [r["role"] for r in m["runs"]] == ["prune", "unpruned", "pruned", "scratch-e"]
    prune, pruned = m["runs"][0], m["runs"][2]
    assert pruned["status"] == "ok" and pruned["epochs"] == 0 and pruned["init"] == "finetune"
    genome = load_genome(out.parent / "genomes" / f"{prune['genome']}.json")
    data = load_dataset("synthetic", input_size=16)
    model = init_model(RunSpec(genome, "synthetic", init="finetune"))
    assert pruned["final_top1"] == evaluate_model(model, data)["top1"]
    table = comparison_cells(m)
    md = comparison_markdown(m, table)
    assert "| Pruned | Fine-tuned | Scratch-E | Scratch-B |" in md and md.count("n/a") == 2
    assert "vs Pruned" in table[0]["cells"]["scratch-e"]["test"]
    from prune_nas.repro.compare import paper_vs_ours

    verdict = paper_vs_ours(m, table)[0]["verdict"]
    assert verdict["paper"] is True and verdict["paper_why"] == "Scratch-E 12.00 vs Pruned 10.00"


def test_table4_smoke_end_to_end(tmp_path, capsys):
    """The default suite's end-to-end smoke run: `prune-nas run` then `prune-nas report`."""
    spec = ROOT / "experiments" / f"{END_TO_END}.yaml"
    assert main(["run", str(spec), "--scale", "smoke", "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "table4_slimming [smoke]: 10/10 runs (0 reused), 0 failed" in out
    m = load_manifest(run_dir(load_spec(spec), "smoke"))
    assert m["status"] == "complete" and m["scale"] == "smoke"
    assert m["hardware"]["device"].startswith("cpu") and m["versions"]["torch"] and m["wall_time_s"] > 0
    roles = [r["role"] for r in m["runs"]]
    assert roles == ["prune", "unpruned", "finetune", "scratch-e", "scratch-b"] * 2
    assert all(r["status"] == "ok" for r in m["runs"])
    by = {(r["role"], r["seed"]): r for r in m["runs"]}
    assert by[("scratch-b", 0)]["epochs"] > by[("scratch-e", 0)]["epochs"] == 3
    assert by[("finetune", 0)]["epochs"] == 2
    assert by[("prune", 0)]["params"] < by[("prune", 0)]["base_params"]
    assert len({r["key"] for r in m["runs"] if r["role"] != "prune"}) == 8
    # resuming reuses every run
    assert main(["run", str(spec), "--scale", "smoke", "--no-progress", "--device", "cpu"]) == 0
    assert "10/10 runs (10 reused)" in capsys.readouterr().out
    # and the report renders from the spec's folder
    report = tmp_path / "report"
    assert main(["report", str(run_dir(load_spec(spec), "smoke").parent), "--out", str(report)]) == 0
    md = (report / "report.md").read_text()
    assert "**Scale: smoke**" in md and "| digits | vgg11 ×0.125 |" in md
    assert {p.name for p in report.iterdir()} >= {"report.md", "table.csv", "accuracy.png", "widths-row0.png"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in sorted(EXPECTED) if n != END_TO_END])
def test_spec_runs_at_smoke_scale(name, tmp_path):
    from prune_nas.repro.report import render

    spec = load_spec(ROOT / "experiments" / f"{name}.yaml")
    path = run_experiment(spec, "smoke", progress=False, log=lambda s: None)
    m = load_manifest(path)
    assert m["status"] == "complete" and m["progress"]["done"] == m["progress"]["total"]
    assert all(r["status"] == "ok" for r in m["runs"])
    files = render(path.parent, tmp_path / "report")
    assert files[0].name == "report.md" and all(f.exists() for f in files)
    pngs = [f for f in files if f.suffix == ".png"]
    assert pngs and all(f.stat().st_size > 10_000 for f in pngs)


def test_winning_ticket_rows_train_from_the_large_models_init_at_the_rows_lr(tmp_path):
    """Section 6: a winning-ticket row and a random-init row share the large model (trained at the row's lr)
    and the pruned genome; only their Scratch-E runs differ, by their init."""
    rows = [{"model": "vgg11", "method": "l1-norm", "ratio": 0.5, "lr": 0.01, "init": "winning_ticket"},
            {"model": "vgg11", "method": "l1-norm", "ratio": 0.5, "lr": 0.01}]
    raw = {**json.loads(json.dumps(TINY)), "rows": rows, "budgets": ["scratch-e"]}
    for s in SCALES:
        raw["scales"][s]["seeds"] = 1
    spec = parse_spec(raw, tmp_path / "lottery.yaml")
    from prune_nas.training.store import Store

    m = load_manifest(run_experiment(spec, "smoke", runs_root=tmp_path, store=Store(tmp_path / "store"),
                                     progress=False, log=lambda s: None))
    assert m["status"] == "complete"
    prune = [r for r in m["runs"] if r["role"] == "prune"]
    assert (prune[0]["genome"].endswith("-lr0.01") and prune[1]["reused"]
            and prune[0]["genome"] == prune[1]["genome"])
    scratch = [r for r in m["runs"] if r["role"] == "scratch-e"]
    assert ([r["init"] for r in scratch] == ["winning_ticket", "scratch"]
            and scratch[0]["key"] != scratch[1]["key"])
    rec = json.loads((tmp_path / "store" / "runs" / f"{scratch[0]['key']}.json").read_text())
    assert rec["spec"]["init"]["kind"] == "winning_ticket" and rec["protocol"]["lr"] == 0.01
    assert (tmp_path / "tiny" / "smoke" / "genomes" / f"{prune[0]['genome']}.ticket.pt").exists()


def test_comparison_baselines_are_counted_and_matched_to_the_seeds_pruned_genome():
    """The runner's comparison baselines (what `prune-nas evaluate` adds to a row): one run per seed each, at
    the pruned genome's params or FLOPs."""
    from dataclasses import replace

    from prune_nas.core.cost import count
    from prune_nas.methods.baselines import uniform_genome
    from prune_nas.repro.experiments import BASELINES, matched_baseline, runs_of

    plan = load_spec(ROOT / "experiments" / "table4_slimming.yaml").plan("smoke")
    row = replace(plan.rows[0], baselines=BASELINES)
    assert runs_of("comparison", row) == runs_of("comparison", plan.rows[0]) + len(BASELINES) * len(row.seeds)
    assert (runs_of("comparison", replace(row, prune_once=True))
            == runs_of("comparison", row) - len(row.seeds) + 1)
    base = row.base_genome()
    pruned = uniform_genome(base, 0.4).replace(widths={**uniform_genome(base, 0.4).widths, "conv1": 2})
    for kind in BASELINES:
        metric = kind.split("-")[1]
        g0, g1 = matched_baseline(kind, base, pruned, 0), matched_baseline(kind, base, pruned, 1)
        assert g0.name.endswith(f"{kind}-s0" if kind.startswith("random") else kind)
        target = getattr(count(pruned), metric)
        assert abs(getattr(count(g0), metric) - target) / target < 0.05
        assert (g0.widths != g1.widths) == kind.startswith("random")  # one random draw per seed
