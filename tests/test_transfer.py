"""Guided Pruning / Sparsifying and transfer: sizes hit, mask statistics, stage mapping, names, error
paths."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prune_nas.cli import main
from prune_nas.core.cost import count
from prune_nas.core.errors import UserError
from prune_nas.core.genome import Sparsity, base_genome, load_genome, save_genome
from prune_nas.core.geometry import conv_ops
from prune_nas.core.masks import file_sha256, load_masks
from prune_nas.design.mining import mine, mine_genomes
from prune_nas.design.transfer import (
    discovered_files,
    generate,
    group_ratios,
    guided_sparse,
    guided_widths,
    n_stages,
    parse_name,
    sample_mask,
    stage_map,
    target_base,
    transfer,
    write_genome,
)

PAPER_VGG16 = [39, 64, 128, 128, 255, 250, 226, 217, 120, 63, 48, 62, 89]  # Table 8, slimming at 40%


def vgg_pattern(runs=((0, 0),)):
    g = base_genome("vgg16")
    genomes = [g.replace(widths={f"conv{i}": w + (d if i % 2 else e) for i, w in enumerate(PAPER_VGG16, 1)},
                         provenance={"method": "slimming", "dataset": "cifar10", "seed": k})
               for k, (d, e) in enumerate(runs)]
    return mine_genomes(genomes, [f"vgg16-cifar10-slimming-r0.4-s{k}.json" for k in range(len(runs))])


def resnet_pattern():
    g = base_genome("resnet56")
    keep = {1: 12, 2: 16, 3: 24}  # of 16, 32, 64
    w = {n: (keep[g.groups.stage(n)] if g.groups.kind(n) == "conv" else v) for n, v in g.widths.items()}
    return mine_genomes([g.replace(widths=w, provenance={"method": "l1-norm", "dataset": "cifar10"})],
                        ["r.json"])


def within_one_channel(genome, target, ratios, goal, by):
    """Lowering every scaled width by one gives at most the goal; raising each by one at least the goal."""
    base = target.groups.base_widths()
    lower = {n: max(1, w - 1) if ratios[n] is not None else w for n, w in genome.widths.items()}
    upper = {n: min(base[n], w + 1) if ratios[n] is not None else w for n, w in genome.widths.items()}

    def cost(widths):
        return getattr(count(replace(genome, widths=widths)), by)

    return cost(lower) <= goal <= cost(upper)


# ---- names and stages --------------------------------------------------------------------------------------
def test_stage_maps_vgg16_to_vgg19_and_resnet56_to_resnet110():
    assert n_stages("vgg16") == n_stages("vgg19") == 5
    assert stage_map(n_stages("vgg16"), n_stages("vgg19")) == {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}
    assert n_stages("resnet56") == n_stages("resnet110") == 3
    assert stage_map(n_stages("resnet56"), n_stages("resnet110")) == {1: 1, 2: 2, 3: 3}


def test_stage_map_by_relative_depth_when_counts_differ():
    assert stage_map(5, 3) == {1: 1, 2: 3, 3: 5}  # VGG -> CIFAR ResNet: first, middle, last
    assert stage_map(3, 5) == {1: 1, 2: 1, 3: 2, 4: 3, 5: 3}
    assert stage_map(4, 3) == {1: 1, 2: 3, 3: 4}
    assert stage_map(1, 3) == {1: 1, 2: 1, 3: 1}
    assert stage_map(3, 1) == {1: 2}
    for s in range(1, 7):
        for t in range(1, 7):
            m = stage_map(s, t)
            assert sorted(m) == list(range(1, t + 1)) and all(1 <= v <= s for v in m.values())
            assert list(m.values()) == sorted(m.values())
            if s <= t:  # no source stage skipped when the target has at least as many
                assert set(m.values()) == set(range(1, s + 1))


@pytest.mark.parametrize("name, expected", [
    ("vgg16-cifar10", ("vgg16", "cifar10")), ("vgg19-cifar100", ("vgg19", "cifar100")),
    ("vgg16-l1-cifar10", ("vgg16-l1", "cifar10")), ("densenet-bc100-digits", ("densenet-bc100", "digits")),
    ("resnet56-digits", ("resnet56", "digits")),
])
def test_parse_name(name, expected):
    assert parse_name(name) == expected


@pytest.mark.parametrize("name, message", [
    ("vgg16", "not <model>-<dataset>"), ("vgg16-mnist", "must be one of"),
    ("vgg17-cifar10", "unknown model 'vgg17'"),
])
def test_parse_name_errors(name, message):
    with pytest.raises(UserError, match=message):
        parse_name(name)


# ---- guided pruning ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("by", ["params", "flops"])
@pytest.mark.parametrize("size", [0.05, 0.2, 0.35, 0.6])
def test_guided_widths_hit_size_within_one_channel(size, by):
    p = vgg_pattern(runs=((0, 0), (2, -1)))
    target = target_base(p, "vgg16")
    genome, info = guided_widths(p, target, size, by=by)
    goal = size * getattr(count(target), by)
    assert within_one_channel(genome, target, group_ratios(p, target), goal, by)
    assert info["achieved"] == pytest.approx(size, rel=0.03)
    stage_widths = {}
    for n, w in genome.widths.items():  # one ratio per stage: equal base widths in a stage get equal widths
        stage_widths.setdefault((genome.groups.stage(n), target.widths[n]), set()).add(w)
    assert all(len(v) == 1 for v in stage_widths.values())


def test_guided_widths_follow_stage_ratio_order():
    p = vgg_pattern()
    genome, _ = guided_widths(p, target_base(p, "vgg16"), 0.1)
    r = {s: genome.widths[n] / 512 for s, n in ((4, "conv8"), (5, "conv11"))}
    assert r[5] < r[4] < genome.widths["conv5"] / 256  # the last stage is cut hardest, as in the pattern
    assert genome.widths["conv11"] / genome.widths["conv8"] == pytest.approx(
        p.stage(5)["ratio"] / p.stage(4)["ratio"], rel=0.05)


def test_guided_resnet_keeps_streams_and_hits_size():
    p = resnet_pattern()
    target = target_base(p, "resnet110")
    genome, _ = guided_widths(p, target, 0.5)
    for s in (1, 2, 3):
        assert genome.widths[f"stage{s}"] == target.widths[f"stage{s}"]  # residual streams untouched
    assert within_one_channel(genome, target, group_ratios(p, target), 0.5 * count(target).params, "params")
    inner = [genome.widths[f"stage{s}.block0.conv1"] / target.widths[f"stage{s}.block0.conv1"]
             for s in (1, 2, 3)]
    assert inner[0] > inner[1] > inner[2]  # pattern ratios 0.75 > 0.5 > 0.375


@pytest.mark.parametrize("size", [0, -0.1, 1.5])
def test_impossible_sizes(size):
    p = vgg_pattern()
    with pytest.raises(UserError, match="impossible"):
        guided_widths(p, target_base(p, "vgg16"), size)


def test_size_below_one_channel_per_layer_is_refused():
    p = vgg_pattern()
    with pytest.raises(UserError, match="one channel per pruned layer"):
        guided_widths(p, target_base(p, "vgg16"), 1e-5)


def test_size_one_is_the_base_model():
    p = vgg_pattern()
    target = target_base(p, "vgg16")
    assert guided_widths(p, target, 1.0)[0].widths == target.widths


# ---- guided sparsifying ------------------------------------------------------------------------------------
def bernoulli_runs(tmp_path, model="resnet20", runs=2):
    """Weight-pruned runs whose masks keep position (i, j) of a stage-s kernel with probability P[s][i, j]."""
    g = base_genome(model)
    rng = np.random.default_rng(123)
    base = np.array([[0.15, 0.45, 0.15], [0.45, 0.85, 0.45], [0.15, 0.45, 0.15]])
    files = []
    for seed in range(runs):
        masks = {n: rng.random((op.cout, op.cin, 3, 3)) < base * (1.1 - 0.2 * op.stage)
                 for n, op in conv_ops(g).items()}
        path = tmp_path / f"{model}-digits-magnitude-r0.5-s{seed}.json"
        write_genome(g.replace(sparsity=Sparsity(), provenance={"method": "magnitude", "dataset": "digits",
                                                                "seed": seed}), path, masks)
        files.append(path)
    return files


def pooled_maps(genome, masks):
    acc = {}
    for n, op in conv_ops(genome).items():
        if op.k == 3:
            a = acc.setdefault(op.stage, [np.zeros((3, 3)), 0])
            a[0] += masks[n].reshape(-1, 3, 3).sum(axis=0)
            a[1] += op.cout * op.cin
    return {s: (m / n, n) for s, (m, n) in acc.items()}


def test_guided_sparse_masks_reproduce_stage_pattern(tmp_path):
    p = mine(bernoulli_runs(tmp_path))
    target = target_base(p, "resnet20")
    size = p.size["params"][0]  # the runs' own size: every layer at its pattern density
    genome, masks, info = guided_sparse(p, target, size, seed=5)
    assert info["achieved"] == pytest.approx(size, abs=2 / count(target).params)
    for s, (m, n) in pooled_maps(genome, masks).items():
        want = np.asarray(p.kernel_stage(s)["kernel_keep"])
        se = np.sqrt(want * (1 - want) / n)
        assert np.all(np.abs(m - want) <= 3 * se + 2 / n), (s, m, want)
        np.testing.assert_allclose(genome.sparsity.kernel_keep[str(s)], want, atol=1e-6)
    dens = {x["name"]: x["mean"] for x in p.sparse["layers"]}
    for n, mask in masks.items():
        assert mask.mean() == pytest.approx(dens[n], abs=2 / mask.size + 1e-3)


@pytest.mark.parametrize("by", ["params", "flops"])
def test_guided_sparse_hits_size_and_is_deterministic(tmp_path, by):
    p = mine(bernoulli_runs(tmp_path))
    target = target_base(p, "resnet20")
    g1, m1, _ = guided_sparse(p, target, 0.3, seed=1, by=by)
    g2, m2, _ = guided_sparse(p, target, 0.3, seed=1, by=by)
    _, m3, _ = guided_sparse(p, target, 0.3, seed=2, by=by)
    assert all(np.array_equal(m1[n], m2[n]) for n in m1)
    assert any(not np.array_equal(m1[n], m3[n]) for n in m1)
    a = write_genome(g1, tmp_path / "out" / "a.json", m1)
    b = write_genome(g2, tmp_path / "out" / "b.json", m2)
    assert a.sparsity.mask.sha256 == b.sparsity.mask.sha256
    goal = 0.3 * getattr(count(target), by)
    got = getattr(count(load_genome(tmp_path / "out" / "a.json")), by)
    if by == "params":
        assert got == round(goal)
    else:  # within one weight per conv layer
        assert abs(got - goal) <= sum(op.hw ** 2 for op in conv_ops(target).values())


def test_guided_sparse_keeps_stage_shape_when_scaled(tmp_path):
    p = mine(bernoulli_runs(tmp_path))
    target = target_base(p, "resnet20")
    genome, masks, _ = guided_sparse(p, target, 0.15, seed=0)
    for s, (m, _) in pooled_maps(genome, masks).items():
        want = np.asarray(p.kernel_stage(s)["kernel_keep"])
        np.testing.assert_allclose(m / m.max(), want / want.max(), atol=0.05)  # no position saturates here


def test_sample_mask_exact_count_and_positions():
    rng = np.random.default_rng(0)
    keep = np.array([[0.0, 0.5, 0.0], [0.5, 1.0, 0.5], [0.0, 0.5, 0.0]])
    m = sample_mask((8, 10, 3, 3), 240, keep, rng)  # 80 kernels, density 1/3 = keep.mean()
    assert m.sum() == 240
    np.testing.assert_allclose(m.reshape(-1, 3, 3).mean(axis=0), keep)
    # more than the non-corner positions hold: spills to corners
    m2 = sample_mask((8, 10, 3, 3), 700, keep, rng)
    assert m2.sum() == 700 and m2.reshape(-1, 9)[:, 4].all()
    assert sample_mask((4, 4, 1, 1), 5, None, rng).sum() == 5


def test_guided_sparse_needs_sparse_pattern():
    p = vgg_pattern()
    with pytest.raises(UserError, match="no sparsity"):
        guided_sparse(p, target_base(p, "vgg16"), 0.3)


# ---- transfer ----------------------------------------------------------------------------------------------
def discovered(tmp_path, runs=2):
    folder = tmp_path / "discovered"
    g = base_genome("vgg16")
    for k in range(runs):
        w = {f"conv{i}": w - k for i, w in enumerate(PAPER_VGG16, 1)}
        save_genome(g.replace(widths=w, provenance={"method": "slimming", "dataset": "cifar10", "seed": k}),
                    folder / f"vgg16-cifar10-slimming-r0.4-s{k}.json")
    return folder


def test_transfer_vgg16_cifar10_to_vgg19_cifar100(tmp_path):
    folder = discovered(tmp_path)
    results = transfer("vgg16-cifar10", "vgg19-cifar100", [0.2, 0.4], discovered_dir=folder,
                       out_dir=tmp_path / "out", say=lambda s: None)
    assert [p.name for p, _, _ in results] == ["vgg16-cifar10-to-vgg19-cifar100-slimming-0.2.json",
                                               "vgg16-cifar10-to-vgg19-cifar100-slimming-0.4.json"]
    for (path, genome, _info), size in zip(results, (0.2, 0.4)):
        g = load_genome(path)
        assert g.model == "vgg19" and g.num_classes == 100 and g == genome
        prov = g.provenance
        assert prov["method"] == "transferred-pruning" and prov["pattern"]["runs"] == 2
        assert [x["file"] for x in prov["pattern"]["genomes"]] == [
            (folder / f"vgg16-cifar10-slimming-r0.4-s{k}.json").as_posix() for k in range(2)]
        assert prov["stage_map"] == {str(s): s for s in range(1, 6)} and prov["size"]["target"] == size
        target = base_genome("vgg19", num_classes=100)
        assert count(g).params / count(target).params == pytest.approx(size, rel=0.03)
        assert len({g.widths[f"conv{i}"] for i in (13, 14, 15, 16)}) == 1  # VGG-19's 4-conv last stage


def test_transfer_no_runs_with_no_discover_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"no pruned runs of vgg16-cifar10 by slimming found .*"
                                         r"vgg16\[-x<width>\]-cifar10-slimming-\*\.json.*prune-nas discover"):
        transfer("vgg16-cifar10", "vgg19-cifar100", [0.3], discovered_dir=tmp_path, out_dir=tmp_path / "o",
                 discover=False)
    assert not (tmp_path / "o").exists()


def test_transfer_runs_discovery_first_when_missing(tmp_path, monkeypatch):
    import prune_nas.design.transfer as tr

    calls, said = [], []

    def fake(method, model, dataset, ratio, seeds, **kw):
        calls.append((method, model, dataset, ratio, list(seeds)))
        return sorted(discovered(tmp_path, runs=3).glob("*.json"))

    monkeypatch.setattr(tr, "run_discovery", fake)
    results = transfer("vgg16-cifar10", "vgg19-cifar100", [0.3], discovered_dir=tmp_path / "empty",
                       out_dir=tmp_path / "o", runs=3, say=said.append)
    assert calls == [("slimming", "vgg16", "cifar10", 0.4, [0, 1, 2])]
    assert said == ["no pruned runs of vgg16-cifar10 by slimming found; running discovery (3 runs) first"]
    assert results[0][1].provenance["pattern"]["runs"] == 3


def test_transfer_resnet56_to_resnet110_sparse(tmp_path):
    files = bernoulli_runs(tmp_path, model="resnet56", runs=1)
    results = transfer("resnet56-digits", "resnet110-digits", [0.25], method="magnitude",
                       discovered_dir=tmp_path, out_dir=tmp_path / "o")
    path, genome, _ = results[0]
    assert path.name == "resnet56-digits-to-resnet110-digits-magnitude-sparse-0.25.json"
    assert genome.model == "resnet110" and genome.provenance["stage_map"] == {"1": 1, "2": 2, "3": 3}
    g = load_genome(path)
    assert file_sha256(g.mask_path()) == g.sparsity.mask.sha256 and len(load_masks(g)) == 109
    assert count(g).params == round(0.25 * count(base_genome("resnet110")).params)
    assert g.provenance["pattern"]["genomes"][0]["file"] == files[0].as_posix()


# ---- CLI ---------------------------------------------------------------------------------------------------
def test_cli_guide_writes_genomes(tmp_path, capsys):
    folder = discovered(tmp_path)
    pattern = tmp_path / "v.pattern.json"
    assert main(["mine", str(folder / "*.json"), "--out", str(pattern), "--no-plots"]) == 0
    capsys.readouterr()
    assert main(["guide", str(pattern), "--sizes", "0.2,0.3", "--out-dir", str(tmp_path / "g"),
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [Path(r["file"]).name for r in rows] == ["vgg16-cifar10-slimming-guided-0.2.json",
                                                    "vgg16-cifar10-slimming-guided-0.3.json"]
    assert [round(r["achieved"], 2) for r in rows] == [0.2, 0.3] and rows[0]["by"] == "params"
    assert load_genome(rows[0]["file"]).provenance["pattern_file"] == pattern.as_posix()


def test_cli_transfer_no_discover_error_is_one_line(tmp_path, capsys):
    code = main(["transfer", "vgg16-cifar10", "vgg19-cifar100", "--no-discover", "--discovered-dir",
                 str(tmp_path), "--out-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--no-discover" in err


def test_cli_transfer_bad_names_and_sizes(tmp_path, capsys):
    assert main(["transfer", "vgg16-cifar10", "vgg99-cifar100", "--discovered-dir", str(tmp_path)]) == 2
    assert "unknown model 'vgg99'" in capsys.readouterr().err
    folder = discovered(tmp_path)
    assert main(["transfer", "vgg16-cifar10", "vgg19-cifar100", "--sizes", "0.3,1.2", "--discovered-dir",
                 str(folder), "--out-dir", str(tmp_path / "o")]) == 2
    assert "size 1.2 is impossible" in capsys.readouterr().err
    pattern = tmp_path / "v.pattern.json"
    assert main(["mine", str(folder / "*.json"), "--out", str(pattern), "--no-plots"]) == 0
    assert main(["transfer", "vgg19-cifar10", "vgg16-cifar100", "--pattern", str(pattern)]) == 2
    assert "the pattern is of vgg16-cifar10, not vgg19-cifar10" in capsys.readouterr().err


@settings(max_examples=15, deadline=None)
@given(model=st.sampled_from(["vgg11", "resnet20", "vgg13-l1"]), seed=st.integers(0, 10_000),
       size=st.floats(0.15, 1.0), by=st.sampled_from(["params", "flops"]))
def test_guided_widths_hit_any_size(model, seed, size, by):
    """Random patterns, random sizes: the guided genome is valid and within one channel per layer of the
    size."""
    import random

    from prune_nas.core.genome import random_genome

    rng = random.Random(seed)
    p = mine_genomes([random_genome(model, rng, 0.2, 1.0) for _ in range(2)], ["a.json", "b.json"])
    target = target_base(p, model)
    genome, _ = guided_widths(p, target, size, by=by)
    assert within_one_channel(genome, target, group_ratios(p, target), size * getattr(count(target), by), by)


# ---- narrow runs (discover prunes width-multiplied models on digits) ---------------------------------------
def narrow_runs(folder: Path, width=0.25, runs=2) -> list[Path]:
    """Runs as discover writes them on digits: VGG-16 at a quarter width, provenance.source.width = 0.25."""
    base = base_genome("vgg16", width_mult=width)
    save_genome(base.replace(name=f"vgg16-x{width:g}-digits"), folder / f"vgg16-x{width:g}-digits.json")
    out = []
    for k in range(runs):
        w = {n: max(1, v // (2 if base.groups.stage(n) >= 4 else 1) - k) for n, v in base.widths.items()}
        prov = {"method": "slimming", "dataset": "digits", "seed": k, "ratio": 0.4,
                "reference": f"vgg16-x{width:g}-digits", "source": {"model": "vgg16", "width": width}}
        out.append(save_genome(base.replace(widths=w, provenance=prov),
                               folder / f"vgg16-x{width:g}-digits-slimming-r0.4-s{k}.json"))
    return out


def test_narrow_runs_are_measured_against_their_narrow_model(tmp_path):
    files = narrow_runs(tmp_path)
    save_genome(base_genome("vgg16-l1"), tmp_path / "vgg16-l1-digits-slimming-r0.4-s0.json")  # another model
    assert discovered_files("vgg16", "digits", "slimming", tmp_path) == files
    assert discovered_files("vgg16", "digits", "slimming", tmp_path, ratio=0.4) == files
    assert discovered_files("vgg16", "digits", "slimming", tmp_path, ratio=0.5) == []
    p = mine(files)
    assert p.reference == {"name": "vgg16-x0.25-digits", "width": 0.25}  # the reference file beside the runs
    assert p.layer("conv1")["base"] == 16 and p.layer("conv13")["base"] == 128
    assert p.stage(1)["ratio"] == pytest.approx((16 + 15) / 2 / 16)
    assert p.stage(5)["ratio"] == pytest.approx((64 + 63) / 2 / 128)
    assert p.size["params"][0] < 0.5  # of the narrow model, not of the full VGG-16 (that would be < 0.05)


def test_narrow_runs_without_reference_file_use_the_recorded_width(tmp_path):
    files = narrow_runs(tmp_path)
    (tmp_path / "vgg16-x0.25-digits.json").unlink()
    for f in files:  # discover's newer provenance: the large model under "pruned_from"
        data = json.loads(f.read_text())
        data["provenance"]["pruned_from"] = data["provenance"].pop("source")
        data["provenance"]["reference"] = "no-such-genome"  # unresolvable, wherever the tests run
        f.write_text(json.dumps(data))
    p = mine(files)
    assert p.reference == {"name": "vgg16-x0.25", "width": 0.25} and p.layer("conv13")["base"] == 128


def test_guided_narrow_target_writes_and_references_its_base(tmp_path):
    from prune_nas.core.library import reference_of

    p = mine(narrow_runs(tmp_path))
    target = target_base(p, "vgg19")
    assert target.widths["conv1"] == 16 and target.name == "vgg19-x0.25-digits"
    (path, genome, _), = generate(p, target, [0.4], tmp_path / "g", "vgg19-digits-slimming-guided")
    ref = reference_of(load_genome(path))
    assert ref.widths == target.widths and (tmp_path / "g" / "vgg19-x0.25-digits.json").exists()
    assert count(genome).params == pytest.approx(0.4 * count(target).params, rel=0.02)
    assert all(genome.widths[n] <= target.widths[n] for n in genome.widths)
    full = target_base(p, "vgg19", "cifar100")
    assert full.widths["conv1"] == 64 and full.num_classes == 100
    assert target_base(p, "vgg19", width=0.5).widths["conv1"] == 32


def test_run_discovery_calls_the_methods_discover(tmp_path, monkeypatch):
    """run_discovery calls prune_nas.design.discover.discover once per seed and takes the written paths."""
    import types

    from prune_nas.design.transfer import run_discovery

    disc = pytest.importorskip("prune_nas.design.discover")

    calls = []

    def fake(method, **kw):
        calls.append((method, kw))
        return types.SimpleNamespace(path=tmp_path / f"run-{kw['seed']}.json")

    monkeypatch.setattr(disc, "discover", fake)
    paths = run_discovery("slimming", "vgg16", "digits", 0.4, range(2), out_dir=tmp_path)
    assert paths == [tmp_path / "run-0.json", tmp_path / "run-1.json"]
    assert calls[1] == ("slimming", {"model": "vgg16", "dataset": "digits", "ratio": 0.4, "seed": 1,
                                     "out_dir": tmp_path})
