"""Generic models (``torchvision:resnet18``) through the pipelines above `discover`: `evaluate` (a one-row
comparison with matched uniform and random baselines), `search` (per-stage multipliers) and what refuses them,
on a tiny ResNet-18 (an eighth of its widths, 16x16 synthetic data, one epoch)."""

from __future__ import annotations

import json

from prune_nas.cli import main
from prune_nas.core.cost import count
from prune_nas.core.genome import base_genome, load_genome, model_spec
from prune_nas.repro.experiments import matched_baseline

RESNET18 = "torchvision:resnet18"


def test_model_spec_takes_builtin_names_and_generic_references():
    assert model_spec("vgg11").family == "vgg"
    assert model_spec(RESNET18).family == "generic" and model_spec(RESNET18).input_size == 224


def test_matched_baselines_of_a_generic_genome_match_its_cost():
    base = base_genome(RESNET18, num_classes=10, input_size=16, width_mult=0.125)
    pruned = base.replace(widths={g: max(1, w // 2) if "conv1" in g else w for g, w in base.widths.items()})
    target = count(pruned)
    for kind in ("uniform-params", "uniform-flops", "random-params"):
        g = matched_baseline(kind, base, pruned, seed=1)
        assert g.model == RESNET18 and set(g.widths) == set(base.widths)
        metric = kind.split("-")[1]
        assert abs(getattr(count(g), metric) / getattr(target, metric) - 1) < 0.05, kind
    drawn = {tuple(matched_baseline("random-params", base, pruned, s).widths.values()) for s in (0, 1)}
    assert len(drawn) == 2  # a random architecture per seed


def test_evaluate_a_generic_model(tmp_path, capsys):
    assert main(["evaluate", "--model", RESNET18, "--dataset", "synthetic", "--method", "l1-norm",
                 "--seeds", "1", "--epochs", "1", "--finetune-epochs", "1", "--width", "0.125",
                 "--input-size", "16", "--no-progress", "--json", "--out", str(tmp_path / "ev"),
                 "--genome-dir", str(tmp_path / "g")]) == 0
    table = json.loads((tmp_path / "ev" / "table.json").read_text())
    rows = {r["row"]: r for r in table["rows"]}
    assert table["meta"]["model"] == RESNET18
    assert all(r["finished"] == 1 for r in rows.values()), rows
    pruned = load_genome(table["meta"]["genome"])
    assert pruned.model == RESNET18 and pruned.provenance["method"] == "l1-norm"
    assert rows["fine-tuned"]["params"] < rows["unpruned"]["params"]
    assert abs(rows["uniform (params)"]["params"] / rows["fine-tuned"]["params"] - 1) < 0.05


def test_evaluate_refuses_a_bad_reference_in_one_line(capsys):
    assert main(["evaluate", "--model", "torchvision:no_such_net", "--dataset", "synthetic"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no_such_net" in err and len(err.splitlines()) == 1
