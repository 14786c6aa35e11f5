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
    # At 32 px ResNet-18's four stages sit at 8, 4, 2 and 1 pixels (the stem joins the first one).
    stages = ["mult.stage1", "mult.stage2", "mult.stage3", "mult.stage4"]
    assert [p.name for p in space.param_defs()] == stages
    g = space.genome({"mult.stage2": 0.5})
    for group, width in base.widths.items():
        half = base.groups.stage(group) == 2
        assert g.widths[group] == (max(1, round(width * 0.5)) if half else width), group
    assert {grp for grp in base.widths if base.groups.stage(grp) == 2} == {
        "layer2", "layer2.0.conv1", "layer2.1.conv1"}
    assert space.project(g) == {p: 0.5 if p == "mult.stage2" else 1.0 for p in stages}


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


def test_a_generic_space_searches_per_stage_sparsity():
    import prune_nas
    from prune_nas.core.geometry import conv_ops
    from prune_nas.search.spaces import Space

    space = Space.from_dict(generic_space(parameters={"stage_sparsity": {"range": [0.0, 0.5], "step": 0.25}}))
    names = [p.name for p in space.param_defs()]
    assert names == ["sparsity.stage1", "sparsity.stage2", "sparsity.stage3", "sparsity.stage4"]
    g = space.genome({"sparsity.stage3": 0.5})
    stage = {n: op.stage for n, op in conv_ops(g).items()}
    # Every conv of stage 3 (layer3, its shortcut included) keeps half its weights, the others all of them.
    assert {n for n, s in stage.items() if s == 3} == {"layer3.0.conv1", "layer3.0.conv2", "layer3.1.conv1",
                                                      "layer3.1.conv2", "layer3.0.downsample.0"}
    assert g.sparsity.density == {n: 0.5 for n, s in stage.items() if s == 3}
    net = prune_nas.build(g)
    kept = float((net.get_submodule("layer3.0.conv1").weight != 0).float().mean())
    assert kept == pytest.approx(0.5, abs=0.01)
    assert space.project(g) == {n: 0.5 if n == "sparsity.stage3" else 0.0 for n in names}


@pytest.fixture(scope="module")
def resnet18_runs(tmp_path_factory):
    """Two slimming runs of ResNet-18 x0.125 on 32x32 synthetic data (one epoch each)."""
    from prune_nas.design.discover import discover

    folder = tmp_path_factory.mktemp("discovered")
    store = tmp_path_factory.mktemp("store")
    for seed in (0, 1):
        discover("slimming", model=RESNET18, dataset="synthetic", ratio=0.5, seed=seed, width=0.125,
                 input_size=32, epochs=1, out_dir=folder, store_root=store, progress=False,
                 log=lambda s: None)
    return folder


def test_mine_guide_and_transfer_resnet18_to_resnet34(resnet18_runs, tmp_path, capsys):
    from prune_nas.design.mining import load_pattern

    runs = sorted(resnet18_runs.glob("torchvision-resnet18-x0.125-synthetic-slimming-*.json"))
    assert len(runs) == 2
    pattern_file = tmp_path / "r18.pattern.json"
    assert main(["mine", *map(str, runs), "--out", str(pattern_file), "--no-plots"]) == 0
    pattern = load_pattern(pattern_file)
    assert pattern.model == RESNET18 and pattern.n_stages == 4 and pattern.reference["width"] == 0.125
    assert pattern.label() == "torchvision-resnet18-synthetic-slimming"
    assert "conv" in pattern.pruned_kinds and "stream" not in pattern.pruned_kinds  # slimming leaves streams

    # Guide ResNet-34 with stage ratios far apart (one epoch of slimming keeps about half everywhere): its
    # stage s must take stage s's ratio, all scaled by one factor.
    skewed = json.loads(pattern_file.read_text())
    wanted = {1: 0.6, 2: 0.45, 3: 0.3, 4: 0.15}
    for st in skewed["stages"]:
        st["ratio"] = st["by_kind"]["conv"] = wanted[st["stage"]]
    skewed_file = tmp_path / "skewed.pattern.json"
    skewed_file.write_text(json.dumps(skewed))
    assert main(["guide", str(skewed_file), "--model", "torchvision:resnet34", "--sizes", "0.25",
                 "--out-dir", str(tmp_path / "guided"), "--json"]) == 0
    capsys.readouterr()
    (guided,) = (load_genome(p) for p in (tmp_path / "guided").glob("*-0.25.json"))
    r34 = base_genome("torchvision:resnet34", num_classes=10, input_size=32, width_mult=0.125)
    assert guided.model == "torchvision:resnet34" and guided.provenance["stage_map"] == {
        "1": 1, "2": 2, "3": 3, "4": 4}
    assert abs(count(guided).params / count(r34).params - 0.25) < 0.02
    assert all(guided.widths[g] == w for g, w in r34.widths.items() if r34.groups.kind(g) == "stream")
    kept = {g: guided.widths[g] / r34.widths[g] for g in r34.widths if r34.groups.kind(g) == "conv"}
    factors = {s: [k / wanted[s] for g, k in kept.items() if r34.groups.stage(g) == s] for s in wanted}
    assert all(len(f) == n for f, n in zip(factors.values(), (3, 4, 6, 3)))  # ResNet-34's blocks per stage
    flat = [f for fs in factors.values() for f in fs]
    assert max(flat) / min(flat) < 1.2 and max(kept.values()) < 1, factors  # one factor, up to rounding

    assert main(["transfer", "torchvision:resnet18-synthetic", "torchvision:resnet34-synthetic",
                 "--discovered-dir", str(resnet18_runs), "--no-discover", "--sizes", "0.4",
                 "--out-dir", str(tmp_path / "transferred"), "--json"]) == 0
    (moved,) = (load_genome(p) for p in (tmp_path / "transferred").glob(
        "torchvision-resnet18-synthetic-to-torchvision-resnet34-synthetic-slimming-0.4.json"))
    assert moved.model == "torchvision:resnet34" and moved.provenance["method"] == "transferred-pruning"
    assert abs(count(moved).params / count(r34).params - 0.4) < 0.02


def test_mine_and_guide_sparse_on_generic_models(tmp_path, capsys):
    """Weight pruning's pattern (per-stage densities) of ResNet-18, guiding ResNet-34's sparsity."""
    import prune_nas
    from prune_nas.core.geometry import conv_ops
    from prune_nas.design.discover import discover

    for seed in (0, 1):
        discover("magnitude", model=RESNET18, dataset="synthetic", ratio=0.6, seed=seed, width=0.125,
                 input_size=32, epochs=1, out_dir=tmp_path / "found", store_root=tmp_path / "store",
                 progress=False, log=lambda s: None)
    runs = sorted((tmp_path / "found").glob("*-magnitude-*.json"))
    assert len(runs) == 2
    pattern = tmp_path / "r18s.pattern.json"
    assert main(["mine", *map(str, runs), "--out", str(pattern), "--no-plots"]) == 0
    stages = {s["stage"]: s["density"] for s in json.loads(pattern.read_text())["sparse"]["stages"]}
    assert sorted(stages) == [1, 2, 3, 4]
    assert main(["guide", str(pattern), "--model", "torchvision:resnet34", "--sparse", "--sizes", "0.3",
                 "--out-dir", str(tmp_path / "guided"), "--json"]) == 0
    capsys.readouterr()
    (guided,) = (load_genome(p) for p in (tmp_path / "guided").glob("*-0.3.json"))
    r34 = base_genome("torchvision:resnet34", num_classes=10, input_size=32, width_mult=0.125)
    assert guided.widths == r34.widths and abs(count(guided).params / count(r34).params - 0.3) < 0.01
    ops = conv_ops(guided)
    assert set(guided.sparsity.density) <= set(ops)
    # Every ResNet-34 conv of a stage gets its source stage's density, all scaled by one factor (up to the
    # rounding to whole weights of each layer's exact mask).
    by_stage: dict[int, list[float]] = {}
    for name, op in ops.items():
        by_stage.setdefault(op.stage, []).append(guided.sparsity.density.get(name, 1.0))
    factors = [d / stages[s] for s, ds in by_stage.items() for d in ds]
    assert sorted(by_stage) == [1, 2, 3, 4] and max(factors) / min(factors) < 1.01, (by_stage, stages)
    net = prune_nas.build(guided)
    assert float((net.get_submodule("layer3.2.conv1").weight != 0).float().mean()) < 1

