"""Uniform and random baselines: exact widths and densities, parameter matching, reproducible randomness."""

import random

import numpy as np
import pytest
import torch

from prune_nas import base_genome, build
from prune_nas.core.cost import count
from prune_nas.core.errors import UserError
from prune_nas.core.genome import Genome
from prune_nas.core.library import get
from prune_nas.methods import get_method
from prune_nas.methods.baselines import (
    match_params,
    random_keep,
    random_masks,
    uniform_genome,
    uniform_sparsity_genome,
)


def test_uniform_keeps_the_same_fraction_everywhere():
    g = base_genome("resnet56")
    u = uniform_genome(g, 0.5)
    assert all(u.widths[n] == max(1, round(w * 0.5)) for n, w in g.widths.items())
    # selections never exceed the channels that exist
    d = uniform_genome(base_genome("densenet40"), 0.3)
    assert Genome.from_dict(d.to_dict()) == d


def test_uniform_sparsity_has_equal_density_and_exact_masks():
    g = base_genome("vgg11", width_mult=0.125, input_size=16)
    s = uniform_sparsity_genome(g, 0.3, seed=4)
    assert set(s.sparsity.density.values()) == {0.3} and s.sparsity.seed == 4
    masks = random_masks(s, seed=4)
    for m in masks.values():
        assert m.sum() == max(1, round(0.3 * m.size))
    again = random_masks(s, seed=4)
    assert all(np.array_equal(masks[k], again[k]) for k in masks)
    res = get_method("uniform").prune(g, None, ratio=0.7, sparsity=True, seed=4)
    assert res.masks is not None and res.genome.sparsity.density["features.conv1"] == pytest.approx(0.3)


@pytest.mark.parametrize("target", ["vgg16-a", "resnet56-b", "resnet110-a"])
def test_match_params_is_within_one_channel_per_group(target):
    other = get(target)
    base = base_genome(other.model)
    m = match_params(base, count(other).params)
    p = count(m).params
    # one more / one fewer channel in every group brackets the target
    up = m.replace(widths={g: min(w + 1, base.widths[g]) for g, w in m.widths.items()})
    down = m.replace(widths={g: max(w - 1, 1) for g, w in m.widths.items()})
    assert count(down).params <= count(other).params <= count(up).params
    assert abs(p - count(other).params) / count(other).params < 0.05
    # and it is uniform: one fraction for all groups, up to rounding
    fr = [m.widths[g] / base.widths[g] for g in base.widths if base.widths[g] >= 16]
    assert max(fr) - min(fr) < 2 / 16


def test_uniform_like_matches_params():
    res = get_method("uniform").prune(base_genome("vgg16-l1"), None, like="vgg16-a")
    assert res.genome.provenance["params"]["target_params"] == count(get("vgg16-a")).params
    assert "matched" in res.notes[0]


def test_random_like_takes_the_other_widths_and_is_seeded():
    g = base_genome("vgg16-l1", width_mult=0.25, input_size=16)
    like = g.replace(widths={k: max(1, w // 3) for k, w in g.widths.items()})
    model = build(g).eval()
    rnd = get_method("random")
    a = rnd.prune(g, model, like=like, seed=1)
    b = rnd.prune(g, model, like=like, seed=1)
    c = rnd.prune(g, model, like=like, seed=2)
    assert a.genome.widths == like.widths
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert any(not torch.equal(a.state_dict[k], c.state_dict[k]) for k in a.state_dict
               if k.endswith("conv1.weight"))
    small = build(a.genome)
    small.load_state_dict(a.state_dict, strict=True)


def test_random_keep_respects_densenet_producers():
    g = base_genome("densenet40", width_mult=0.5, input_size=8)
    widths = uniform_genome(g, 0.5).widths
    keep = random_keep(g, dict(widths), seed=0, model=build(g))
    from prune_nas.methods.surgery import shrink

    small, state = shrink(g, build(g).state_dict(), keep)  # raises if a selection read a pruned channel
    assert small.widths == widths
    build(small).load_state_dict(state, strict=True)


def test_random_like_a_different_model_is_a_user_error():
    with pytest.raises(UserError, match="not a vgg16"):
        get_method("random").check(base_genome("vgg16"), like="resnet56-a")


@pytest.mark.parametrize("model", ["vgg16", "resnet56", "preresnet164", "densenet40", "resnet50"])
@pytest.mark.parametrize("method", ["uniform", "random"])
def test_every_family_gives_a_valid_genome_without_training(model, method):
    g = base_genome(model)
    res = get_method(method).prune(g, None, ratio=0.6, seed=0)
    again = Genome.from_dict(res.genome.to_dict())
    assert count(again).params < count(g).params
    assert res.state_dict is None  # nothing to inherit without a trained model


@pytest.mark.parametrize("model, kw", [
    ("vgg11", {"width_mult": 0.125, "input_size": 16}), ("resnet20", {"width_mult": 0.25, "input_size": 8}),
    ("preresnet110", {"width_mult": 0.25, "input_size": 8}),
    ("densenet40", {"width_mult": 0.5, "input_size": 8}),
])
def test_random_with_a_model_builds(model, kw):
    g = base_genome(model, **kw)
    res = get_method("random").prune(g, build(g), ratio=0.5, seed=random.Random(0).randint(0, 9))
    small = build(res.genome)
    small.load_state_dict(res.state_dict, strict=True)
    assert small.eval()(torch.randn(2, 3, g.input_size, g.input_size)).shape == (2, 10)
