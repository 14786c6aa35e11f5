"""Soft Filter Pruning: the smallest-L2 filters are zeroed before training and after every epoch (they keep
training), and the hard prune removes them, with residual blocks pruned only in their inner convs."""

import numpy as np
import torch

from prune_nas import base_genome, build
from prune_nas.design.discover import discover
from prune_nas.methods import get_method
from prune_nas.methods.sfp import filter_l2, layer_convs, pruned_count
from prune_nas.training.data import load_dataset
from prune_nas.training.loop import train_model
from prune_nas.training.protocol import Protocol

SFP = get_method("sfp")


def _zero_filters(model, convs):
    return {g: int((model.get_submodule(names[0]).weight.detach().flatten(1).abs().sum(1) == 0).sum())
            for g, names in convs.items()}


def test_pruned_count_is_the_reference_rate_complement():
    # the reference zeroes int(n * (1 - rate)) filters; --rate 0.7 is ratio 0.3 here
    assert [pruned_count(n, 0.3) for n in (4, 8, 10, 16, 64)] \
        == [int(n * (1 - 0.7)) for n in (4, 8, 10, 16, 64)]
    assert pruned_count(10, 0.9) == 9 and pruned_count(1, 0.5) == 0


def test_zeroes_the_smallest_l2_filters_of_the_inner_convs_only():
    g = base_genome("resnet20", width_mult=0.5, input_size=8)  # inner widths 8 / 16 / 32
    model = build(g)
    convs = layer_convs(g)
    assert set(convs) == {grp for grp in g.groups.names if ".block" in grp}  # no stem, no stream convs
    name = convs["stage1.block0.conv1"][0]
    w = model.get_submodule(name).weight
    with torch.no_grad():  # filter f gets L2 norm f + 1: filters 0 and 1 are the two smallest
        w.copy_(w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * torch.arange(1.0, 9.0).view(-1, 1, 1, 1))
    stream_before = model.get_submodule("stem.conv").weight.detach().clone()
    cb = SFP.training_callbacks(model, genome=g, ratio=0.3)[0]
    assert not cb.zeroed and _zero_filters(model, convs) == dict.fromkeys(convs, 0)  # nothing before training
    cb.on_epoch_end(model, 0, {})
    assert cb.zeroed["stage1.block0.conv1"].tolist() == [0, 1]  # int(8 * 0.3) = 2
    assert _zero_filters(model, convs) == {grp: pruned_count(g.widths[grp], 0.3) for grp in convs}
    assert torch.equal(model.get_submodule("stem.conv").weight, stream_before)
    np.testing.assert_allclose(filter_l2([w])[2:], np.arange(3.0, 9.0), rtol=1e-5)


def test_filters_are_zeroed_after_every_epoch_and_keep_training():
    g = base_genome("resnet20", width_mult=0.25, input_size=8)
    data = load_dataset("synthetic", input_size=8)
    torch.manual_seed(0)
    model = build(g)
    cb = SFP.training_callbacks(model, genome=g, ratio=0.5)[0]
    convs = layer_convs(g)
    expected = {grp: pruned_count(g.widths[grp], 0.5) for grp in convs}
    counts, grads = [], []

    class Watch:  # runs after the zeroing callback: counts zero filters at each epoch end
        def on_epoch_end(self, model, epoch, metrics):
            counts.append(_zero_filters(model, convs))

    class Grad:  # once zeroed, filters still get gradients (soft: they are not frozen)
        def after_backward(self, model):
            for grp, drop in cb.zeroed.items():
                w = model.get_submodule(convs[grp][0]).weight
                grads.append(float(w.grad[torch.as_tensor(drop)].abs().sum()))

    train_model(model, data, Protocol(epochs=3, batch_size=64), seed=0, callbacks=[cb, Watch(), Grad()],
                progress=False, evaluate=False)
    assert counts == [expected] * 3
    assert grads and max(grads) > 0


def test_prune_removes_the_zeroed_filters():
    g = base_genome("resnet20", width_mult=0.5, input_size=8)
    torch.manual_seed(0)
    model = build(g)
    cb = SFP.training_callbacks(model, genome=g, ratio=0.3)[0]
    cb.on_epoch_end(model, 0, {})
    res = SFP.prune(g, model, ratio=0.3)
    for grp in layer_convs(g):
        assert res.genome.widths[grp] == g.widths[grp] - pruned_count(g.widths[grp], 0.3)
    for grp in g.groups.names:
        if grp not in layer_convs(g):
            assert res.genome.widths[grp] == g.widths[grp]  # the residual width stays
    kept = np.setdiff1d(np.arange(8), cb.zeroed["stage1.block0.conv1"])
    w = model.get_submodule("stage1.block0.conv1").weight.detach()
    assert torch.equal(res.state_dict["stage1.block0.conv1.weight"], w[kept])
    assert res.genome.provenance["params"] == {"ratio": 0.3}


def test_discover_end_to_end_on_digits(tmp_path):
    d = discover("sfp", dataset="digits", ratio=0.5, epochs=1, out_dir=tmp_path,
                 store_root=tmp_path / "store",
                 progress=False, log=lambda s: None)
    assert d.path.name == "resnet20-x0.25-digits-sfp-r0.5-s0-1ep.json"
    assert d.genome.widths["stage1.block0.conv1"] == 2 and d.genome.widths["stage3.block2.conv1"] == 8
    assert d.genome.widths["stage1"] == d.base.widths["stage1"]  # the residual width
    assert d.genome.provenance["source"].startswith("He, Kang")
    assert d.large["key"] and not d.large["reused"] and d.weights.exists()
