"""The comparison table of `prune-nas evaluate`: statistics, bold marks, matched baselines, files, and a whole
table from real training on tiny digits runs (a VGG-11 at a sixteenth of its widths, 16x16, one epoch)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from scipy import stats

from prune_nas.cli import main
from prune_nas.core.cost import count
from prune_nas.core.genome import base_genome
from prune_nas.methods.baselines import (
    random_matched,
    uniform_genome,
    uniform_matched,
    uniform_sparsity_genome,
)
from prune_nas.repro.evaluate import (
    BASELINE_ROW,
    ROWS,
    TEST_NAME,
    Comparison,
    Row,
    evaluate,
    welch,
)


# ---- statistics ------------------------------------------------------------------------------------------
def test_welch_matches_scipy_and_says_why_when_undefined():
    a, b = [0.91, 0.93, 0.92], [0.88, 0.90, 0.85, 0.87]
    t = welch("A", a, "B", b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert t.pvalue == pytest.approx(ref.pvalue) and t.statistic == pytest.approx(ref.statistic)
    assert t.diff == pytest.approx(sum(a) / 3 - sum(b) / 4)
    assert "p = " in t.text() and "n = 3, 4" in t.text()
    one = welch("A", [0.9], "B", b)
    assert one.pvalue is None and "n/a" in one.text() and "at least 2" in one.reason
    flat = welch("A", [0.5, 0.5], "B", [0.5, 0.5])
    assert flat.pvalue is None and "variance" in flat.reason
    assert t.to_dict()["test"] == TEST_NAME


def comparison(values: dict[str, list[float]]) -> Comparison:
    rows = [Row(label, f"g-{label}", "k", 1000, 2000, "Scratch-E", [5] * len(v), list(v), len(v))
            for label, v in values.items()]
    by = {r.label: r for r in rows}
    tests = [welch("Scratch-B", by["Scratch-B"].values, "fine-tuned", by["fine-tuned"].values)]
    return Comparison("t", rows, tests, {"seeds": 2, "command": "x"})


def test_bold_marks_the_best_pruned_size_row_not_the_unpruned_one():
    c = comparison({"unpruned": [0.99, 0.98], "fine-tuned": [0.80, 0.82], "Scratch-B": [0.90, 0.92],
                    "uniform (params)": [0.85, 0.86]})
    assert c.best() == {"Scratch-B"}
    md = c.markdown("md")
    bold_lines = [line for line in md.splitlines() if "**" in line]
    assert len(bold_lines) == 1 and bold_lines[0].startswith("| Scratch-B") and "**91.00 ± 1.41**" in md
    ansi = c.markdown("ansi")
    assert "\033[1m91.00 ± 1.41\033[0m" in ansi and "**" not in ansi
    plain = c.markdown(None)
    assert "**" not in plain and "\033" not in plain
    # Columns line up: every row has the same visible width.
    assert len({len(line) for line in plain.splitlines()}) == 1
    assert "Welch" in "\n".join(c.footer()) and "pruned-size rows" in c.footer()[0]


def test_ties_are_all_bold_and_empty_rows_show_a_dash():
    c = comparison({"unpruned": [0.9, 0.9], "fine-tuned": [], "Scratch-B": [0.8, 0.9],
                    "Scratch-E": [0.9, 0.8]})
    assert c.best() == {"Scratch-B", "Scratch-E"}
    assert c.row("fine-tuned").cell() == "-"


def test_csv_and_json_round_trip(tmp_path):
    c = comparison({"unpruned": [0.99, 0.98], "fine-tuned": [0.80, 0.82], "Scratch-B": [0.90, 0.92]})
    paths = c.write(tmp_path / "out")
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert [r["row"] for r in rows] == ["unpruned", "fine-tuned", "Scratch-B"]
    assert [int(r["best"]) for r in rows] == [0, 0, 1]
    assert float(rows[2]["mean_top1"]) == pytest.approx(0.91)
    data = json.loads(paths["json"].read_text())
    assert data["best"] == ["Scratch-B"] and data["tests"][0]["pvalue"] is not None
    assert "**91.00 ± 1.41**" in paths["md"].read_text()


# ---- matched baselines -----------------------------------------------------------------------------------
def test_uniform_and_random_baselines_match_the_pruned_cost():
    base = base_genome("vgg11", width_mult=0.25, input_size=16)
    pruned = base.replace(widths=dict(base.widths, conv1=4, conv2=8, conv7=40, conv8=30))
    target = count(pruned)
    for metric in ("params", "flops"):
        u = uniform_matched(base, pruned, metric)
        assert abs(getattr(count(u), metric) - getattr(target, metric)) / getattr(target, metric) < 0.05
        ratios = {round(u.widths[g] / base.widths[g], 1) for g in base.groups.names}
        assert len(ratios) <= 2  # one kept fraction (up to rounding)
    r0, r0b, r1 = (random_matched(base, pruned, s) for s in (0, 0, 1))
    assert r0.widths == r0b.widths and r0.widths != r1.widths  # one draw per seed, reproducible
    for r in (r0, r1):
        assert abs(count(r).params - target.params) / target.params < 0.05
    # Sparse genomes: densities, not channels.
    sparse = uniform_sparsity_genome(base, 0.3, 0)
    us = uniform_matched(base, sparse, "params")
    assert us.sparsity is not None and us.widths == base.widths
    assert abs(count(us).params - count(sparse).params) / count(sparse).params < 0.02
    assert random_matched(base, sparse, 3).sparsity is not None


def test_uniform_match_equals_the_methods_params_matching():
    from prune_nas.methods.baselines import match_params

    base = base_genome("vgg11", width_mult=0.25, input_size=16)
    pruned = uniform_genome(base, 0.43)
    assert uniform_matched(base, pruned, "params").widths == match_params(base, count(pruned).params).widths


# ---- a real table ----------------------------------------------------------------------------------------
TINY = dict(dataset="digits", width=0.0625, epochs=1, finetune_epochs=1, seeds=2, ratio=0.3, input_size=16)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    import os

    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("PRUNE_NAS_HOME")
    os.environ["PRUNE_NAS_HOME"] = str(home)
    try:
        lines: list[str] = []
        comp = evaluate("slimming", genome_dir=home / "genomes", log=lines.append, command="test", **TINY)
        again: list[str] = []
        comp2 = evaluate("slimming", genome_dir=home / "genomes", log=again.append, command="test", **TINY)
    finally:
        if old is None:
            os.environ.pop("PRUNE_NAS_HOME", None)
        else:
            os.environ["PRUNE_NAS_HOME"] = old
    return comp, lines, comp2, again, home


def test_table_from_tiny_digits_runs(table):
    comp, lines, _, _, home = table
    assert [r.label for r in comp.rows] == list(ROWS)
    for r in comp.rows:  # every row trained both seeds, for real
        assert r.runs == 2 and len(r.values) == 2 and all(0.0 <= v <= 1.0 for v in r.values), r
        assert len(set(r.run_keys)) == 2
    assert len(lines) >= 14 and sum("trained in" in line for line in lines) >= 14
    pruned, base = comp.row("Scratch-B"), comp.row(BASELINE_ROW)
    assert pruned.params < base.params and comp.row("Scratch-E").genome_key == pruned.genome_key
    assert comp.row("fine-tuned").budget == "fine-tune" and comp.row("Scratch-B").epochs[0] >= 1
    # Matched baselines are within a few percent of the pruned genome's params / FLOPs.
    assert abs(comp.row("uniform (params)").params - pruned.params) / pruned.params < 0.05
    assert abs(comp.row("uniform (FLOPs)").flops - pruned.flops) / pruned.flops < 0.05
    # Statistics: Welch's test of Scratch-B vs fine-tuned, uniform and random, each with p or a reason.
    assert [(t.a, t.b) for t in comp.tests] == [("Scratch-B", "fine-tuned"),
                                                ("Scratch-B", "uniform (params)"),
                                                ("Scratch-B", "random (params)")]
    for t in comp.tests:
        assert (t.pvalue is not None and 0.0 <= t.pvalue <= 1.0) or t.reason
        assert t.n_a == 2 and t.n_b == 2
    best = max(r.mean for r in comp.rows if r.label != BASELINE_ROW)
    assert {r.label for r in comp.rows if r.label != BASELINE_ROW and r.mean == best} == comp.best()
    md = comp.markdown("md")
    assert md.count("**") == 2 * len(comp.best())
    # Files with how they were produced.
    folder = Path(comp.meta["written_to"])
    assert folder.parent == home / "runs" / "evaluate"
    data = json.loads((folder / "table.json").read_text())
    for k in ("command", "torch", "device", "wall_time_s", "seeds", "prune_nas", "scipy"):
        assert data["meta"][k] is not None
    text = (folder / "table.md").read_text()
    assert "Produced by `test`" in text and "Welch" in text and "**" in text


def test_second_evaluate_reuses_every_run(table):
    comp, _, comp2, again, _ = table
    assert any("reusing the discovered genome" in line for line in again)
    run_lines = [line for line in again if " seed " in line]
    assert len(run_lines) == 14 and all(line.endswith("reused)") for line in run_lines)
    assert [r.values for r in comp2.rows] == [r.values for r in comp.rows]


def test_a_genome_pruned_with_other_settings_is_not_reused(table):
    """The runner's one reuse rule: a genome file is reused only when the settings hash in the ``.run.json``
    beside it matches; otherwise it is pruned again (from the cached large model, not retrained)."""
    comp, _, _, _, home = table
    side = sorted((home / "genomes").glob("*-s0-*.run.json"))
    assert len(side) == 1
    info = json.loads(side[0].read_text())
    info["key"] = "0" * 16
    side[0].write_text(json.dumps(info))
    lines: list[str] = []
    again = evaluate("slimming", genome_dir=home / "genomes", store=home / "store", out_dir=home / "again",
                     log=lines.append, command="test", **TINY)
    assert not any("reusing the discovered genome" in line for line in lines)
    # pruned again, not trained
    assert any(line.startswith("reusing the trained large model") for line in lines)
    assert json.loads(side[0].read_text())["key"] != "0" * 16
    assert again.row("Scratch-B").genome_key == comp.row("Scratch-B").genome_key  # the same genomes
    assert [r.values for r in again.rows] == [r.values for r in comp.rows]


def test_evaluate_command_errors_are_one_line(capsys):
    assert main(["evaluate", "--dataset", "mnist"]) == 2
    assert main(["evaluate", "--method", "slimmming"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "unknown dataset" in err[0] and "did you mean slimming" in err[1]
