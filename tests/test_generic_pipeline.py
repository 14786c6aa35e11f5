"""Generic models (``torchvision:resnet18``) through the pipelines above `discover`: `evaluate` (a one-row
comparison with matched uniform and random baselines), `search` (per-stage multipliers) and what refuses them,
on a tiny ResNet-18 (an eighth of its widths, 16x16 synthetic data, one epoch)."""

from __future__ import annotations

import json

import pytest

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


def generic_space(**over) -> dict:
    return {"model": RESNET18, "dataset": "synthetic", "width": 0.125, "input_size": 32,
            "budget": {"epochs": 1}, "objective": {"maximize": "accuracy", "max_flops": 0.9},
            "parameters": {"stage_multiplier": {"range": [0.5, 1.0], "step": 0.25}}, "uniform": [0.5], **over}


def test_a_generic_space_has_one_multiplier_per_resolution_stage():
    from prune_nas.search.spaces import Space

    space = Space.from_dict(generic_space())
    assert space.name == "torchvision-resnet18-synthetic"
    base = space.base
    # At 32 px ResNet-18's four stages sit at 8, 4, 2 and 1 pixels: stage 1 (32 px) has no width group.
    stages = ["mult.stage2", "mult.stage3", "mult.stage4", "mult.stage5"]
    assert [p.name for p in space.param_defs()] == stages
    g = space.genome({"mult.stage3": 0.5})
    for group, width in base.widths.items():
        half = base.groups.stage(group) == 3
        assert g.widths[group] == (max(1, round(width * 0.5)) if half else width), group
    assert {grp for grp in base.widths if base.groups.stage(grp) == 3} == {
        "layer2", "layer2.0.conv1", "layer2.1.conv1"}
    assert space.project(g) == {p: 0.5 if p == "mult.stage3" else 1.0 for p in stages}


def test_search_a_generic_space(tmp_path, capsys, monkeypatch):
    import yaml

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "r18.yaml"
    path.write_text(yaml.safe_dump(generic_space(name="r18")))
    assert main(["search", "--space", str(path), "--trials", "2", "--no-progress", "--device", "cpu"]) == 0
    assert "trial 0 [uniform:r0.5, seed 0]" in capsys.readouterr().out
    assert main(["results", "r18", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["settled"] == 2 and all(c["mean"] is not None for c in data["candidates"])


def test_a_bad_generic_reference_in_a_space_names_the_field(tmp_path):
    from prune_nas.core.errors import UserError
    from prune_nas.search.spaces import Space

    with pytest.raises(UserError, match=r"model: .*no_such_net"):
        Space.from_dict(generic_space(model="torchvision:no_such_net"))
