"""Magnitude pruning: exactly the requested global sparsity, one global threshold, deterministic ties, no
layer emptied, and per-stage 3x3 keep maps computed from the exact masks."""

import numpy as np
import pytest
import torch

from prune_nas import base_genome, build
from prune_nas.core.cost import count
from prune_nas.core.geometry import ops_of
from prune_nas.methods import get_method
from prune_nas.methods.magnitude import global_masks, kernel_keep

MAG = get_method("magnitude")


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.77, 0.95])
def test_hits_the_requested_global_sparsity_exactly(ratio):
    g = base_genome("vgg11", width_mult=0.125, input_size=16)
    model = build(g)
    res = MAG.prune(g, model, ratio=ratio)
    total = sum(m.size for m in res.masks.values())
    kept = sum(int(m.sum()) for m in res.masks.values())
    assert total - kept == round(ratio * total)
    # one global threshold: every kept |w| >= every pruned |w|
    sd = model.state_dict()
    kept_min = min(sd[f"{n}.weight"].abs().numpy()[m].min() for n, m in res.masks.items())
    pruned_max = max(sd[f"{n}.weight"].abs().numpy()[~m].max() for n, m in res.masks.items() if (~m).any())
    assert kept_min >= pruned_max
    # inherited weights are the trained ones times the mask
    for n, m in res.masks.items():
        assert torch.equal(res.state_dict[f"{n}.weight"], sd[f"{n}.weight"] * torch.as_tensor(m))
    assert res.genome.sparsity.density == {n: pytest.approx(m.mean()) for n, m in res.masks.items()}


def test_ties_are_broken_by_layer_order_then_position():
    w = {"a": np.ones((2, 1, 1, 2)), "b": np.ones((1, 1, 1, 3))}
    masks, notes = global_masks(w, 3 / 7)
    assert masks["a"].reshape(-1).tolist() == [False, False, False, True]
    assert masks["b"].all() and not notes


def test_no_layer_is_emptied_and_sparsity_stays_exact():
    w = {"small": np.full((1, 1, 1, 2), 0.01), "big": np.arange(1.0, 9.0).reshape(2, 1, 2, 2)}
    masks, notes = global_masks(w, 0.5)  # 5 of 10: both tiny weights would go
    assert masks["small"].reshape(-1).tolist() == [False, True]  # its larger (later, on a tie) weight stays
    assert masks["big"].reshape(-1).tolist() == [False] * 4 + [True] * 4  # weight 4 goes instead
    assert notes and notes[0].startswith("small: kept 1 of 2")


def test_kernel_keep_maps_per_stage():
    g = base_genome("vgg11", width_mult=0.125, input_size=16)
    convs = {op.name: op for op in ops_of(g) if op.kind == "conv"}
    masks = {}
    for n, op in convs.items():
        m = np.zeros((op.cout, op.cin, 3, 3), dtype=bool)
        m[:, :, 1, 1] = True  # centre always kept
        if op.stage == 5:
            m[:, :, 0, 1] = True  # up kept in stage 5 only
        if op.name == "features.conv1":
            m[: op.cout // 2, :, 0, 0] = True  # corner kept in half the kernels of conv1 (stage 1)
        masks[n] = m
    km = kernel_keep(g, masks)
    assert sorted(km) == ["1", "2", "3", "4", "5"]
    assert km["1"][1][1] == 1.0 and km["1"][0][0] == 0.5 and km["1"][2][2] == 0.0
    assert km["5"][0][1] == 1.0 and km["4"][0][1] == 0.0


def test_genome_counts_only_kept_weights():
    g = base_genome("resnet20", width_mult=0.25, input_size=8)
    res = MAG.prune(g, build(g), ratio=0.6)
    dense, sparse = count(g), count(res.genome)
    conv_weights = sum(m.size for m in res.masks.values())
    assert dense.params - sparse.params == pytest.approx(round(0.6 * conv_weights), abs=len(res.masks))


@pytest.mark.parametrize("model, kw", [
    ("vgg16", {"width_mult": 0.125, "input_size": 16}),
    ("resnet20", {"width_mult": 0.25, "input_size": 8}),
    ("preresnet110", {"width_mult": 0.25, "input_size": 8}),
    ("densenet40", {"width_mult": 0.5, "input_size": 8}),
])
def test_every_family_gives_a_valid_buildable_genome(model, kw, tmp_path):
    from dataclasses import replace

    from prune_nas.core.genome import MaskRef, load_genome, save_genome
    from prune_nas.core.masks import save_masks

    g = base_genome(model, **kw)
    m = build(g)
    res = MAG.prune(g, m, ratio=0.7)
    sha = save_masks(res.masks, tmp_path / "m.npz")
    sp = replace(res.genome.sparsity, mask=MaskRef("m.npz", sha))
    path = save_genome(res.genome.replace(sparsity=sp, source_dir=tmp_path), tmp_path / "g.json")
    again = load_genome(path)
    small = build(again)  # masks attached
    small.load_state_dict(res.state_dict, strict=False)
    for name, mask in res.masks.items():
        w = small.get_submodule(name).weight
        assert torch.equal(w != 0, torch.as_tensor(mask) & (w != 0))
        assert (w[~torch.as_tensor(mask)] == 0).all()
    assert small.eval()(torch.randn(2, 3, g.input_size, g.input_size)).shape == (2, 10)
