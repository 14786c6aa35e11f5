"""Channel surgery: layer metadata is consistent, whole keeps are exact, pruned channels carry their
weights."""

import random

import numpy as np
import pytest
import torch

from prune_nas import base_genome, build
from prune_nas.core.arch import MODELS, get_family
from prune_nas.core.genome import random_genome
from prune_nas.core.geometry import ops_of
from prune_nas.methods.surgery import (
    bn_ops,
    channel_ids,
    consumers,
    group_scores,
    keep_largest,
    producers,
    shrink,
)

# Tiny versions of every family (and head kind), small enough to run forward passes on CPU in milliseconds.
TINY = {
    "vgg11": {"width_mult": 0.125, "input_size": 16},
    "vgg16-l1": {"width_mult": 0.125, "input_size": 16},
    "resnet20": {"width_mult": 0.25, "input_size": 8},
    "resnet50": {"width_mult": 0.0625, "input_size": 32},
    "preresnet110": {"width_mult": 0.25, "input_size": 4, "blocks": (2, 1, 2)},
    "densenet40": {"width_mult": 0.5, "input_size": 4},
    "densenet-bc100": {"width_mult": 0.25, "input_size": 4},
}


def _randomize(model, seed=0):
    """Non-trivial weights and BN statistics, so an exact match means something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                r = torch.randn(t.shape, generator=gen)
                t.copy_(r.abs() + 0.5 if name.endswith("running_var") else r * 0.5)
    return model.eval()


def _pair(large, state, small):
    """The small model carrying the inherited weights (loading strictly checks every key and shape)."""
    s = build(small)
    s.load_state_dict(state, strict=True)
    return s.eval()


@pytest.mark.parametrize("model", sorted(MODELS))
def test_layer_metadata_matches_widths(model):
    rng = random.Random(1)
    spec = MODELS[model]
    genomes = [base_genome(model), random_genome(model, rng)]
    if get_family(spec.family).block_pruning:
        genomes.append(random_genome(model, rng, blocks=(0,) * (len(spec.default_blocks) - 1) + (1,)))
    for g in genomes:
        sw = g.slot_widths()
        for op in ops_of(g):
            if op.out_slot:
                assert sw[op.out_slot] == op.cout, op
            if op.in_slots:
                channels = sum(sw[s] for s in op.in_slots)
                assert op.cin == channels or (op.kind == "linear" and op.cin % channels == 0), op
        limits = get_family(g.family).select_limits(g.spec, g.blocks, sw)
        for slot, limit in limits.items():
            assert sum(sw[r] for r in g.groups.slots[slot].reads) == limit
        # every conv/stream group is written by some layer (so surgery can always slice it), except the
        # stream of a CIFAR ResNet stage with no block left: only its zero-padding shortcut writes it
        for group in g.groups.names:
            kind = g.groups.kind(group)
            if kind == "conv" or (kind == "stream" and g.blocks[g.groups.stage(group) - 1] > 0):
                assert producers(g, group), group


@pytest.mark.parametrize("model", sorted(TINY))
def test_keeping_everything_reproduces_the_model(model):
    # A partially pruned large genome (selections at evenly spaced channels) makes index handling non-trivial.
    large = random_genome(model, random.Random(3), min_fraction=0.5, **TINY[model])
    big = _randomize(build(large))
    keep = {g: channel_ids(large, big, g) for g in large.groups.names}
    small, state = shrink(large, big, keep)
    assert small.widths == large.widths
    x = torch.randn(2, large.in_channels, large.input_size, large.input_size)
    torch.testing.assert_close(_pair(large, state, small)(x), big(x), rtol=0, atol=0)


@pytest.mark.parametrize("model", sorted(TINY))
def test_removing_silent_channels_is_exact(model):
    """Channels whose BN scale and shift are zero output exactly zero after ReLU; cutting them (conv groups
    followed by their own BN, and selections) must leave the function unchanged."""
    large = base_genome(model, **TINY[model])
    big = _randomize(build(large), seed=5)
    rng = np.random.default_rng(0)
    keep = {}
    sd = big.state_dict()
    for g in large.groups.names:
        bns = bn_ops(large, g)
        if large.groups.kind(g) == "stream" or not bns or large.widths[g] < 2:
            continue
        w = large.widths[g]
        drop = rng.choice(w, size=max(1, w // 3), replace=False)
        with torch.no_grad():
            for op in bns:
                sd[f"{op.name}.weight"][drop] = 0
                sd[f"{op.name}.bias"][drop] = 0
        keep[g] = channel_ids(large, big, g)[np.setdiff1d(np.arange(w), drop)]
    assert keep, "the test must cut something"
    small, state = shrink(large, big, keep)
    assert all(small.widths[g] == len(v) for g, v in keep.items())
    x = torch.randn(3, large.in_channels, large.input_size, large.input_size)
    want = big(x).detach()  # deep random nets reach large activations: compare relative to the output scale
    torch.testing.assert_close(_pair(large, state, small)(x), want, rtol=0,
                               atol=1e-5 * float(want.abs().max()))


def test_vgg_kept_filters_are_the_large_models_weights():
    large = base_genome("vgg11", width_mult=0.125, input_size=16)
    big = _randomize(build(large))
    keep = {"conv1": [1, 4, 6], "conv3": [0, 2, 5, 31]}
    small, state = shrink(large, big, keep)
    sd = big.state_dict()
    assert small.widths["conv1"] == 3 and small.widths["conv3"] == 4
    assert small.widths["conv2"] == large.widths["conv2"]
    assert torch.equal(state["features.conv1.weight"], sd["features.conv1.weight"][[1, 4, 6]])
    assert torch.equal(state["features.conv2.weight"], sd["features.conv2.weight"][:, [1, 4, 6]])
    for k in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(state[f"features.bn3.{k}"], sd[f"features.bn3.{k}"][[0, 2, 5, 31]])
    assert torch.equal(state["features.conv4.weight"], sd["features.conv4.weight"][:, [0, 2, 5, 31]])
    build(small).load_state_dict(state, strict=True)


def test_mlp_and_fc_heads_slice_linear_inputs():
    large = base_genome("vgg16-l1", width_mult=0.125, input_size=16)
    big = _randomize(build(large))
    _, state = shrink(large, big, {"conv13": [0, 7]})
    assert torch.equal(state["classifier.0.weight"], big.state_dict()["classifier.0.weight"][:, [0, 7]])
    # ImageNet head: Linear over a flattened c x 7 x 7 map keeps 49 features per kept channel, channel-major.
    large = base_genome("vgg11-imagenet", width_mult=0.0625, input_size=32)
    big = _randomize(build(large))
    _small, state = shrink(large, big, {"conv8": [2, 5]})
    full = big.state_dict()["classifier.0.weight"]
    cols = [c * 49 + j for c in (2, 5) for j in range(49)]
    assert torch.equal(state["classifier.0.weight"], full[:, cols])


def test_densenet_selections_follow_pruned_producers():
    large = base_genome("densenet40", width_mult=0.5, input_size=8)
    big = _randomize(build(large))
    g = large.widths["dense1.layer0.conv1"]  # growth 6 at this width
    stem = large.widths["stem"]
    # layer0 keeps 3 of its output channels; layer1 reads the stem and the kept ones only
    keep = {"dense1.layer0.conv1": [0, 2, 4],
            "dense1.layer1.select": list(range(stem)) + [stem + 0, stem + 4]}
    small, state = shrink(large, big, keep)
    assert small.widths["dense1.layer1.select"] == stem + 2
    assert state["dense1.layer1.select.index"].tolist() == list(range(stem)) + [stem + 0, stem + 2]
    # a selection of a pruned channel is an error, not a silent misread
    bad = {"dense1.layer0.conv1": [0, 2, 4], "dense1.layer1.select": [stem + 1]}
    with pytest.raises(ValueError, match="prunes them"):
        shrink(large, big, bad)
    # layer2 (no keep given) reads every surviving channel: its index skips the pruned ones
    idx = state["dense1.layer2.select.index"].tolist()
    assert len(idx) == stem + 3 + g and idx == sorted(idx)
    build(small).load_state_dict(state, strict=True)


def test_bad_keeps_are_rejected():
    large = base_genome("vgg11", width_mult=0.125, input_size=16)
    big = build(large)
    with pytest.raises(ValueError, match="zero channels"):
        shrink(large, big, {"conv1": []})
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        shrink(large, big, {"conv1": [8]})
    with pytest.raises(ValueError, match="unknown width groups"):
        shrink(large, big, {"conv99": [0]})


def test_keep_largest_and_group_scores():
    assert keep_largest([3.0, 1.0, 2.0, 5.0], 2).tolist() == [0, 3]
    assert keep_largest([1.0, 1.0], 0).tolist() == [0]  # never empty
    assert keep_largest([1.0, 2.0], 9).tolist() == [0, 1]
    g = base_genome("resnet20")
    scores = group_scores(g, {"stem": np.ones(16), "stage1": np.arange(16.0)})
    assert list(scores) == ["stage1"] and scores["stage1"][3] == 4.0
    readers = {op.name for op in consumers(g, "stage2.block0.conv1")}
    assert readers == {"stage2.block0.conv2"}
