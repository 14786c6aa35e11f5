"""Network Slimming: the global threshold is the documented quantile of all prunable |gamma|, the penalty hits
exactly the prunable BNs, no group is emptied, and every family yields a valid, buildable genome."""

import numpy as np
import pytest
import torch

from prune_nas import base_genome, build
from prune_nas.core.genome import Genome
from prune_nas.methods import get_method
from prune_nas.methods.slimming import (
    S_EXPONENT,
    BNScalePenalty,
    global_threshold,
    lr_sum,
    paper_lr_sum,
    prunable_bns,
    schedule_s,
)
from prune_nas.training.protocol import Protocol


def _set_gammas(genome, model, rng):
    """Distinct |gamma| per prunable channel; returns {group: array}."""
    out = {}
    with torch.no_grad():
        for g, names in prunable_bns(genome).items():
            w = genome.widths[g]
            v = (rng.permutation(w) + rng.random(w)) * 100.0 / w  # every group spans [0, 100): none empties
            v = v * rng.choice([-1, 1], size=len(v))  # the sign must not matter
            for n in names:
                model.get_submodule(n).weight.copy_(torch.as_tensor(v, dtype=torch.float32))
            out[g] = v
    return out


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_threshold_is_the_lower_quantile_of_all_gammas(ratio):
    g = base_genome("vgg11", width_mult=0.125, input_size=16)
    model = build(g)
    gammas = _set_gammas(g, model, np.random.default_rng(1))
    allv = np.abs(np.concatenate(list(gammas.values()))).astype(np.float32).astype(np.float64)
    res = get_method("slimming").prune(g, model, ratio=ratio)
    want = np.quantile(allv, ratio, method="lower")
    assert res.genome.provenance["threshold"] == pytest.approx(want, abs=0)
    # kept = exactly the channels above the threshold; with distinct values floor((N-1) q) + 1 go
    for grp, v in gammas.items():
        kept = np.abs(v.astype(np.float32)) > want
        assert res.genome.widths[grp] == max(1, kept.sum())
    removed = sum(g.widths.values()) - sum(res.genome.widths.values())
    assert removed == int(np.floor((len(allv) - 1) * ratio)) + 1


def test_kept_channels_carry_their_gammas():
    g = base_genome("vgg11", width_mult=0.125, input_size=16)
    model = build(g)
    gammas = _set_gammas(g, model, np.random.default_rng(2))
    res = get_method("slimming").prune(g, model, ratio=0.5)
    thr = res.genome.provenance["threshold"]
    for i in range(1, 9):
        v = np.abs(gammas[f"conv{i}"].astype(np.float32))
        kept = np.flatnonzero(v > thr) if (v > thr).any() else [int(np.argmax(v))]
        got = res.state_dict[f"features.bn{i}.weight"].abs().numpy()
        np.testing.assert_array_equal(got, v[kept])


def test_no_group_is_emptied_and_the_floor_is_reported():
    g = base_genome("vgg11", width_mult=0.125, input_size=16)
    model = build(g)
    _set_gammas(g, model, np.random.default_rng(3))
    with torch.no_grad():
        model.features.bn8.weight.fill_(1e-6)
        model.features.bn8.weight[5] = 2e-6
    res = get_method("slimming").prune(g, model, ratio=0.6)
    assert res.genome.widths["conv8"] == 1
    assert torch.equal(res.state_dict["features.bn8.weight"], torch.tensor([2e-6]))
    assert any(n.startswith("conv8: kept 1 of") for n in res.notes)


def test_which_bns_are_prunable():
    assert set(prunable_bns(base_genome("vgg16-l1"))) == {f"conv{i}" for i in range(1, 14)}  # not the BN1d
    r = prunable_bns(base_genome("resnet20"))
    names = {n for v in r.values() for n in v}
    assert "stage1.block0.bn1" in names and "stage1.block0.bn2" not in names and "stem.bn" not in names
    p = prunable_bns(base_genome("preresnet110"))
    names = {n for v in p.values() for n in v}
    assert {"stage1.block0.bn1", "stage1.block0.bn2", "stage1.block0.bn3", "head.bn"} <= names
    assert not any(k.startswith("stage") and "." not in k for k in p)  # no residual stream group
    d = prunable_bns(base_genome("densenet40"))
    assert set(d) == {k for k in base_genome("densenet40").groups.names if k.endswith(".select")}


def test_penalty_adds_s_sign_gamma_to_prunable_bn_grads_only():
    g = base_genome("resnet20", width_mult=0.25, input_size=8)
    model = build(g)
    (cb,) = get_method("slimming").training_callbacks(model, genome=g, s=1e-3)
    assert isinstance(cb, BNScalePenalty) and cb.s == 1e-3
    with torch.no_grad():
        model.stage1.block0.bn1.weight[0] = -2.0
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    cb.after_backward(model)
    grad = model.stage1.block0.bn1.weight.grad
    assert grad[0].item() == pytest.approx(-1e-3) and grad[1].item() == pytest.approx(1e-3)
    assert model.stage1.block0.bn2.weight.grad.abs().sum() == 0  # writes into the residual stream
    assert model.stem.bn.weight.grad.abs().sum() == 0
    assert get_method("slimming").regularizer(g) == {"l1_bn_scales": 1e-5}
    assert get_method("slimming").regularizer(base_genome("vgg19")) == {"l1_bn_scales": 1e-4}


@pytest.mark.parametrize("model, kw", [
    ("vgg19", {"width_mult": 0.125, "input_size": 16}),
    ("resnet20", {"width_mult": 0.25, "input_size": 8}),
    ("preresnet110", {"width_mult": 0.25, "input_size": 8}),
    ("densenet40", {"width_mult": 0.5, "input_size": 8}),
    ("densenet-bc100", {"width_mult": 0.25, "input_size": 8}),
])
def test_every_family_gives_a_valid_buildable_genome(model, kw):
    g = base_genome(model, **kw)
    m = build(g)
    _set_gammas(g, m, np.random.default_rng(4))
    res = get_method("slimming").prune(g, m, ratio=0.6)
    again = Genome.from_dict(res.genome.to_dict())
    assert again.widths == res.genome.widths and sum(again.widths.values()) < sum(g.widths.values())
    small = build(again)
    small.load_state_dict(res.state_dict, strict=True)
    x = torch.randn(2, 3, g.input_size, g.input_size)
    assert small.eval()(x).shape == (2, g.num_classes)
    # residual streams are never narrowed by slimming
    for grp in g.groups.names:
        if g.groups.kind(grp) == "stream":
            assert again.widths[grp] == g.widths[grp]


def test_bad_ratio_is_a_user_error():
    from prune_nas.core.errors import UserError

    g = base_genome("vgg11", width_mult=0.125, input_size=16)
    with pytest.raises(UserError, match=r"\(0, 1\)"):
        get_method("slimming").prune(g, build(g), ratio=1.0)


def test_global_threshold_convention():
    assert global_threshold(np.array([4.0, 1.0, 3.0, 2.0]), 0.5) == 2.0  # index floor(3 * 0.5) = 1 of sorted
    assert global_threshold(np.arange(10.0), 0.7) == 6.0


def test_paper_schedule_keeps_the_papers_s():
    assert paper_lr_sum() == pytest.approx(782 * (80 * 0.1 + 40 * 0.01 + 40 * 0.001))  # 6600.08
    for fam, paper in (("vgg", 1e-4), ("resnet", 1e-5), ("preresnet", 1e-5), ("densenet", 1e-5)):
        for proto in (Protocol.cifar(), Protocol.for_dataset("cifar100")):
            got = schedule_s(fam, protocol=proto, steps_per_epoch=782)
            assert got["s"] == paper and got["rule"] == "schedule"
        assert schedule_s(fam) == {"s": paper, "rule": "reference",
                                   "text": f"s = {paper:g}, the reference code's for CIFAR {fam} "
                                           "(no schedule to scale it to)"}


def test_imagenet_vgg11_takes_the_reference_s_and_schedule():
    assert paper_lr_sum(imagenet=True) == pytest.approx(5005 * 30 * (0.1 + 0.01 + 0.001))  # 16666.65
    g = base_genome("vgg11-imagenet")
    slim = get_method("slimming")
    got = slim.training_record(g, protocol=Protocol.imagenet(), steps_per_epoch=5005)
    assert (got["s"], got["rule"], got["reference_s"]) == (1e-5, "schedule", 1e-5)
    # A short schedule scales the reference's 1e-5 (not CIFAR VGG's 1e-4), and the text says which rule did it
    short = slim.training_record(g, protocol=Protocol.imagenet(epochs=10), steps_per_epoch=100)
    assert short["s"] == pytest.approx(1e-5 * (paper_lr_sum(True) / short["lr_sum"]) ** S_EXPONENT, rel=1e-3)
    assert short["text"].startswith(f"s = {short['s']:.4g} by the schedule rule: the reference code's s for "
                                    "ImageNet vgg, 1e-05 on its schedule of 90 epochs x 5005 steps")
    assert "paper's" not in short["text"]


def test_imagenet_vgg11_head_units_share_the_global_threshold():
    g = base_genome("vgg11-imagenet", width_mult=0.0625, input_size=32)
    slim = get_method("slimming")
    assert prunable_bns(g)["fc1"] == ["classifier.1"] and prunable_bns(g)["fc2"] == ["classifier.4"]
    model = build(g)
    (cb,) = slim.training_callbacks(model, genome=g, s=1e-3)
    assert "classifier.1" in cb.modules and "classifier.4" in cb.modules
    with torch.no_grad():  # head units far smaller than every conv channel: the global cut takes them first
        for name, m in model.named_modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                low, high = (0.001, 0.01) if name.startswith("classifier") else (0.5, 1.0)
                m.weight.uniform_(low, high)
    n_head = g.widths["fc1"] + g.widths["fc2"]
    n_all = sum(g.widths.values())
    result = slim.prune(g, model, ratio=(n_head - 2) / n_all)
    assert result.genome.widths["fc1"] + result.genome.widths["fc2"] <= 3
    assert all(result.genome.widths[k] == g.widths[k] for k in g.widths if k.startswith("conv"))
    pruned = build(result.genome)
    pruned.load_state_dict(result.state_dict)
    assert pruned.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 1000)


@pytest.mark.parametrize("epochs", [3, 5, 10, 20, 40])
def test_shorter_schedules_scale_s_by_the_lr_sum(epochs):
    proto = Protocol.for_dataset("digits", epochs=epochs)
    got = schedule_s("vgg", protocol=proto, steps_per_epoch=23)
    ratio = paper_lr_sum() / lr_sum(proto, 23)
    assert got["s"] == pytest.approx(1e-4 * ratio ** S_EXPONENT, rel=1e-3)
    assert got["s"] > 1e-4 and got["lr_sum"] == pytest.approx(23 * sum(proto.lr_at(e) for e in range(epochs)))
    assert f"{epochs} epochs x 23 steps" in got["text"] and got["reference_s"] == 1e-4
    assert ("the large model may collapse" in got["text"]) == (epochs < 10)
    # given explicitly: used as given, whatever the schedule
    assert schedule_s("vgg", 3e-3, proto, 23) == {"s": 3e-3, "rule": "given", "text": "s = 0.003, as given"}


def test_regularizer_and_callbacks_use_the_effective_s():
    g = base_genome("vgg11", width_mult=0.125, input_size=16)
    slim = get_method("slimming")
    proto = Protocol.for_dataset("digits", epochs=10)
    want = schedule_s("vgg", protocol=proto, steps_per_epoch=23)["s"]
    assert slim.regularizer(g, protocol=proto, steps_per_epoch=23) == {"l1_bn_scales": want}
    assert slim.regularizer(g, protocol=proto, steps_per_epoch=23, s=1e-3) == {"l1_bn_scales": 1e-3}
    (cb,) = slim.training_callbacks(build(g), genome=g, protocol=proto, steps_per_epoch=23, ratio=0.5)
    assert cb.s == want
    assert slim.training_record(g, protocol=proto, steps_per_epoch=23)["s"] == want
