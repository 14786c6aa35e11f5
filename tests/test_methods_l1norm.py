"""L1-norm filter pruning: keeps the largest-norm filters, reproduces the paper's named configs, honours skip
lists, prunes only the inner convs of residual blocks."""

import numpy as np
import pytest
import torch

from prune_nas import base_genome, build
from prune_nas.core.errors import UserError
from prune_nas.core.genome import Genome
from prune_nas.core.library import get
from prune_nas.methods import get_method
from prune_nas.methods.l1norm import conv_ids, filter_l1, target_widths
from prune_nas.methods.surgery import keep_largest

L1 = get_method("l1-norm")


def _known_norms(model, name, norms):
    """Make filter f of conv ``name`` have sum |W| == norms[f] (constant magnitude, random signs)."""
    conv = model.get_submodule(name)
    w = conv.weight
    per = w[0].numel()
    signs = torch.sign(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        conv.weight.copy_(signs * torch.as_tensor(norms, dtype=torch.float32).view(-1, 1, 1, 1) / per)


def test_keeps_the_largest_norm_filters():
    g = base_genome("vgg11", width_mult=0.125, input_size=16)  # conv1 has 8 filters
    model = build(g)
    norms = [5.0, 1.0, 7.0, 2.0, 8.0, 3.0, 6.0, 4.0]
    _known_norms(model, "features.conv1", norms)
    np.testing.assert_allclose(filter_l1(g, model, "conv1"), norms, rtol=1e-5)
    res = L1.prune(g, model, ratio=0.5)
    assert res.genome.widths["conv1"] == 4
    kept = [0, 2, 4, 6]  # norms 5, 7, 8, 6: the four largest, in their original order
    assert torch.equal(res.state_dict["features.conv1.weight"], model.features.conv1.weight.detach()[kept])
    # the next conv loses the matching input channels (its own filters are ranked the same way)
    out2 = keep_largest(filter_l1(g, model, "conv2"), res.genome.widths["conv2"])
    assert torch.equal(res.state_dict["features.conv2.weight"],
                       model.features.conv2.weight.detach()[out2][:, kept])


def test_ties_go_to_the_lower_index():
    g = base_genome("vgg11", width_mult=0.125, input_size=16)
    model = build(g)
    _known_norms(model, "features.conv1", [1.0] * 8)
    res = L1.prune(g, model, ratio=0.75)
    assert torch.equal(res.state_dict["features.conv1.weight"], model.features.conv1.weight.detach()[:2])


@pytest.mark.parametrize("name, model, config", [
    ("resnet56-a", "resnet56", "A"), ("resnet56-b", "resnet56", "B"), ("resnet110-a", "resnet110", "A"),
    ("resnet110-b", "resnet110", "B"), ("resnet34-a", "resnet34", "A"), ("resnet34-b", "resnet34", "B"),
])
def test_resnet_configs_reproduce_the_library(name, model, config):
    widths, notes = target_widths(base_genome(model), config=config)
    lib = get(name)
    base = base_genome(model)
    assert {g: w for g, w in lib.widths.items() if w != base.widths[g]} == widths
    assert not notes


def test_vgg16_config_a_reproduces_the_library():
    base = base_genome("vgg16-l1")
    widths, _ = target_widths(base, config="a")
    assert {**base.widths, **widths} == dict(get("vgg16-a").widths)
    # a narrowed model is pruned in proportion: conv1 keeps 32/64 of its 16 channels
    assert target_widths(base_genome("vgg16", width_mult=0.25), config="A")[0]["conv1"] == 8


def test_resnet_prunes_only_inner_convs_and_skips_ids():
    g = base_genome("resnet20", width_mult=0.5, input_size=8)
    ids = conv_ids(g)
    assert ids[1] == "stem.conv" and ids[2] == "stage1.block0.conv1" and ids[4] == "stage1.block1.conv1"
    res = L1.prune(g, build(g), ratio=0.5, skip=(2, 8))
    for grp in g.groups.names:
        if grp in ("stage1.block0.conv1", "stage2.block0.conv1"):  # ids 2 and 8
            assert res.genome.widths[grp] == g.widths[grp]
        elif ".block" in grp:
            assert res.genome.widths[grp] == int(g.widths[grp] * 0.5)
        else:  # stem and residual streams stay
            assert res.genome.widths[grp] == g.widths[grp]
    build(res.genome).load_state_dict(res.state_dict, strict=True)


def test_floor_at_one_filter_is_reported():
    g = base_genome("resnet20", width_mult=0.125, input_size=8)  # stage1 inner convs have 2 channels
    res = L1.prune(g, build(g), ratio=0.9)
    assert min(res.genome.widths.values()) == 1
    assert any("kept 1 of 2" in n for n in res.notes)


@pytest.mark.parametrize("model, kw", [
    ("vgg16", {"width_mult": 0.125, "input_size": 16}),
    ("vgg16-l1", {"width_mult": 0.125, "input_size": 16}),
    ("resnet20", {"width_mult": 0.25, "input_size": 8}),
    ("resnet50", {"width_mult": 0.0625, "input_size": 32}),
])
def test_every_family_gives_a_valid_buildable_genome(model, kw):
    g = base_genome(model, **kw)
    m = build(g).eval()
    res = L1.prune(g, m, ratio=0.4)
    again = Genome.from_dict(res.genome.to_dict())
    assert sum(again.widths.values()) < sum(g.widths.values())
    small = build(again)
    small.load_state_dict(res.state_dict, strict=True)
    assert small.eval()(torch.randn(2, 3, g.input_size, g.input_size)).shape == (2, g.num_classes)


@pytest.mark.parametrize("kwargs, match", [
    ({"config": "C"}, "no config 'C'"),
    ({"config": "A", "ratio": 0.5}, "not both"),
    ({"ratio": 1.5}, r"\(0, 1\)"),
    ({"ratio": 0.5, "skip": (99,)}, "not conv ids"),
])
def test_bad_parameters_are_user_errors(kwargs, match):
    with pytest.raises(UserError, match=match):
        L1.check(base_genome("resnet56"), **kwargs)


def test_does_not_apply_to_densenet():
    with pytest.raises(UserError, match="does not apply to densenet"):
        L1.check(base_genome("densenet40"))
