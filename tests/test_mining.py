"""Pattern mining: width and kernel averages on hand-made genomes with known answers, files, figures,
errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prune_nas.cli import main
from prune_nas.core.errors import UserError
from prune_nas.core.genome import Sparsity, base_genome, save_genome
from prune_nas.core.geometry import conv_ops
from prune_nas.design.mining import (
    NUM_CLASSES,
    Pattern,
    expand_paths,
    figure_paths,
    load_pattern,
    mine,
    mine_genomes,
    plot_kernels,
    plot_widths,
    run_info,
    save_pattern,
)
from prune_nas.design.transfer import write_genome

CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
CENTER = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=bool)


def vgg_runs(folder: Path) -> list[Path]:
    """Two VGG-16 runs: A keeps half of every layer; B keeps all but conv13, which keeps a quarter."""
    g = base_genome("vgg16")
    half = {n: w // 2 for n, w in g.widths.items()}
    runs = [g.replace(widths=half, provenance={"method": "slimming", "dataset": "cifar10", "seed": 0}),
            g.replace(widths={**g.widths, "conv13": 128},
                      provenance={"method": "slimming", "dataset": "cifar10",
                                                                      "seed": 1})]
    return [save_genome(r, folder / f"vgg16-cifar10-slimming-r0.4-s{i}.json") for i, r in enumerate(runs)]


def sparse_runs(folder: Path, model: str = "resnet20") -> list[Path]:
    """Two weight-pruned runs with masks: every 3x3 kernel keeps the cross in run 0 and the centre in run
    1."""
    g = base_genome(model)
    out = []
    for seed, kernel in enumerate((CROSS, CENTER)):
        masks = {n: np.broadcast_to(kernel, (op.cout, op.cin, 3, 3)).copy() for n, op in conv_ops(g).items()}
        genome = g.replace(sparsity=Sparsity(), provenance={"method": "magnitude", "dataset": "digits",
                                                            "seed": seed})
        path = folder / f"{model}-digits-magnitude-r0.5-s{seed}.json"
        write_genome(genome, path, masks)
        out.append(path)
    return out


def test_width_averages_match_hand_computed(tmp_path):
    p = mine(vgg_runs(tmp_path))
    assert p.runs == 2 and p.model == "vgg16" and p.family == "vgg"
    assert (p.dataset, p.method) == ("cifar10", "slimming")
    assert p.layer("conv13") == {"group": "conv13", "kind": "conv", "stage": 5, "base": 512, "mean": 192.0,
                                 "std": 64.0, "widths": [256, 128]}
    assert p.layer("conv1")["mean"] == 48.0 and p.layer("conv1")["std"] == 16.0
    # Stage 5: run A 0.5, 0.5, 0.5; run B 1, 1, 0.25 -> mean 0.625; per-run means 0.5 and 0.75 -> std 0.125.
    assert p.stage(5)["ratio"] == pytest.approx(0.625) and p.stage(5)["ratio_std"] == pytest.approx(0.125)
    assert p.stage(1)["ratio"] == pytest.approx(0.75) and p.stage(1)["groups"] == 2
    assert [s["stage"] for s in p.stages] == [1, 2, 3, 4, 5]
    assert p.pruned_kinds == ["conv"] and p.sparse is None


def test_paper_table8_stage_ratios():
    """The paper's VGG-16 slimming widths (Table 8, 5-run means) give its last stage as the most cut."""
    g = base_genome("vgg16")
    paper = [39, 64, 128, 128, 255, 250, 226, 217, 120, 63, 48, 62, 89]
    p = mine_genomes([g.replace(widths={f"conv{i}": w for i, w in enumerate(paper, 1)})], ["paper.json"])
    ratios = [s["ratio"] for s in p.stages]
    assert ratios[4] == pytest.approx((48 + 62 + 89) / 3 / 512)
    assert ratios[3] == pytest.approx((217 + 120 + 63) / 3 / 512)
    assert min(ratios) == ratios[4] and ratios[1] == 1.0


def test_resnet_stage_ratio_ignores_unpruned_streams():
    g = base_genome("resnet20")
    w = dict(g.widths)
    for n in g.groups.names:
        if n.startswith("stage2.") and n.endswith("conv1"):
            w[n] = 8  # 8 of 32
    p = mine_genomes([g.replace(widths=w)], ["r.json"])
    assert p.pruned_kinds == ["conv"]
    assert p.stage(2)["ratio"] == pytest.approx(0.25)  # the 32-wide stream is not averaged in
    assert p.stage(2)["by_kind"] == {"conv": pytest.approx(0.25), "stream": 1.0}
    assert p.stage(1)["ratio"] == 1.0


def test_kernel_pattern_from_masks_known(tmp_path):
    p = mine(sparse_runs(tmp_path))
    assert p.sparse is not None
    expected = np.array([[0, 0.5, 0], [0.5, 1, 0.5], [0, 0.5, 0]])
    for s in p.sparse["stages"]:
        np.testing.assert_allclose(s["kernel_keep"], expected)
        assert s["density"] == pytest.approx(3 / 9)
    layer = p.sparse["layers"][0]
    assert layer["mean"] == pytest.approx(3 / 9) and layer["std"] == pytest.approx(2 / 9)
    assert p.sparse["stages"][0]["kernels"] == 2 * sum(op.cout * op.cin
                                                       for op in conv_ops(base_genome("resnet20"))
                                                       .values() if op.stage == 1)


def test_kernel_pattern_from_kernel_keep_maps():
    g = base_genome("resnet20")
    a = np.full((3, 3), 0.2).tolist()
    b = np.full((3, 3), 0.6).tolist()
    runs = [g.replace(sparsity=Sparsity(density={"stem.conv": d}, kernel_keep={"1": k}))
            for d, k in ((0.2, a), (0.6, b))]
    p = mine_genomes(runs, ["a.json", "b.json"])
    np.testing.assert_allclose(p.kernel_stage(1)["kernel_keep"], np.full((3, 3), 0.4))
    assert p.kernel_stage(2)["kernel_keep"] is None
    stem = next(x for x in p.sparse["layers"] if x["name"] == "stem.conv")
    assert stem["mean"] == pytest.approx(0.4) and stem["std"] == pytest.approx(0.2)


def test_pattern_file_round_trip_and_sources(tmp_path):
    files = vgg_runs(tmp_path)
    p = mine(files)
    path = save_pattern(p, tmp_path / "x.pattern.json")
    data = json.loads(path.read_text())
    assert data["format"] == "prune-nas.pattern" and data["version"] == 1 and data["runs"] == 2
    assert [s["file"] for s in data["sources"]] == [f.as_posix() for f in files]
    assert [s["seed"] for s in data["sources"]] == [0, 1]
    assert all(len(s["key"]) == 16 for s in data["sources"])
    q = load_pattern(path)
    assert q == p


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("stages"), "missing field 'stages'"),
    (lambda d: d.update(format="other"), "not a prune-nas pattern"),
    (lambda d: d.update(version=7), "version 7"),
    (lambda d: d["stages"][0].update(ratio=0), "malformed"),
    (lambda d: d.update(model="vgg17"), "malformed"),
])
def test_malformed_pattern_is_a_user_error(tmp_path, edit, message):
    data = mine(vgg_runs(tmp_path)).to_dict()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=message):
        load_pattern(path)


def test_unreadable_pattern_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_pattern(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        load_pattern(tmp_path / "x.json")


def test_mixed_models_and_families_refused(tmp_path):
    files = vgg_runs(tmp_path)
    other = save_genome(base_genome("vgg19"), tmp_path / "vgg19-cifar10-slimming-r0.4-s0.json")
    with pytest.raises(UserError, match="different model"):
        mine([files[0], other])
    resnet = save_genome(base_genome("resnet56"), tmp_path / "resnet56-cifar10-slimming-r0.4-s0.json")
    with pytest.raises(UserError, match="different family.*vgg.*resnet"):
        mine([files[0], resnet])


def test_mixed_datasets_methods_and_dense_sparse_refused(tmp_path):
    g = base_genome("resnet20")
    a = save_genome(g, tmp_path / "resnet20-cifar10-slimming-r0.4-s0.json")
    b = save_genome(g, tmp_path / "resnet20-cifar100-slimming-r0.4-s0.json")
    c = save_genome(g, tmp_path / "resnet20-cifar10-l1-norm-r0.4-s0.json")
    with pytest.raises(UserError, match="different dataset"):
        mine([a, b])
    with pytest.raises(UserError, match="different method"):
        mine([a, c])
    sparse = sparse_runs(tmp_path)
    dense = save_genome(g.replace(provenance={"method": "magnitude", "dataset": "digits"}),
                        tmp_path / "d.json")
    with pytest.raises(UserError, match="dense and sparse"):
        mine([sparse[0], dense])


def test_run_info_from_file_name_or_provenance():
    g = base_genome("vgg16-l1")
    info = run_info(g, "x/vgg16-l1-cifar100-l1-norm-r0.5-s3.json")
    assert info == {"dataset": "cifar100", "method": "l1-norm", "ratio": 0.5, "seed": 3}
    g2 = g.replace(provenance={"method": "slimming", "dataset": "digits", "seed": 9})
    assert run_info(g2, "whatever.json") == {"dataset": "digits", "method": "slimming", "ratio": None,
                                             "seed": 9}


def test_expand_paths_globs_and_errors(tmp_path):
    files = vgg_runs(tmp_path)
    assert expand_paths([str(tmp_path / "*.json"), str(files[0])]) == files
    with pytest.raises(UserError, match="no files matched"):
        expand_paths([str(tmp_path / "nothing-*.json")])
    with pytest.raises(UserError, match="not found"):
        expand_paths([str(tmp_path / "missing.json")])


def test_figures_are_pngs(tmp_path):
    p = mine(sparse_runs(tmp_path))
    figs = figure_paths(tmp_path / "r.pattern.json")
    assert figs["kernels"].name == "r.kernels.png" and figs["widths"].name == "r.widths.png"
    for path in (plot_kernels(p, figs["kernels"]), plot_widths(p, figs["widths"])):
        head = path.read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    dense = mine(vgg_runs(tmp_path))
    with pytest.raises(UserError, match="no kernel maps"):
        plot_kernels(dense, tmp_path / "k.png")


def test_cli_mine_prints_table_and_writes_files(tmp_path, capsys):
    vgg_runs(tmp_path)
    out = tmp_path / "vgg16-cifar10.pattern.json"
    assert main(["mine", str(tmp_path / "vgg16-cifar10-slimming-*.json"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "conv13" in text and "192.0 ± 64.0" in text and "0.625 ± 0.125" in text
    assert out.exists() and (tmp_path / "vgg16-cifar10.widths.png").exists()
    assert not (tmp_path / "vgg16-cifar10.kernels.png").exists()
    assert isinstance(load_pattern(out), Pattern)


def test_cli_mine_sparse_draws_heat_maps(tmp_path, capsys):
    sparse_runs(tmp_path)
    out = tmp_path / "r.pattern.json"
    assert main(["mine", *map(str, sorted(tmp_path.glob("*.json"))), "--out", str(out)]) == 0
    assert "0.00 0.50 0.00 | 0.50 1.00 0.50" in capsys.readouterr().out.replace("  |  ", " | ")
    assert (tmp_path / "r.kernels.png").exists()


def test_cli_mine_error_is_one_line(tmp_path, capsys):
    files = vgg_runs(tmp_path)
    other = save_genome(base_genome("resnet56"), tmp_path / "o.json")
    assert main(["mine", str(files[0]), str(other), "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prune-nas: error: cannot mine runs with different family")
    assert not (tmp_path / "p.json").exists()


def test_dataset_names_match_data_module():
    from prune_nas.training.data import NAMES

    assert set(NUM_CLASSES) == set(NAMES)
