"""ThiNet: the greedy criterion on constructed contributions, reconstruction against random channel choices,
zero-weight channels removed first, every supported family end to end, and bad input."""

import numpy as np
import pytest
import torch

from prune_nas import base_genome, build
from prune_nas.core.errors import UserError
from prune_nas.core.genome import Genome
from prune_nas.core.library import library_genomes
from prune_nas.methods._activations import layer_io, links, prune_sequential, sample_layer, target_widths
from prune_nas.methods._base import REGISTRY
from prune_nas.methods.surgery import shrink
from prune_nas.methods.thinet import CONFIGS, greedy_remove, scale_refit, thinet_select

THINET = REGISTRY["thinet"]


# Tiny models of every supported family (and VGG head kind); inputs as small as the model allows.
TINY = {
    "vgg11": dict(width_mult=0.125, input_size=16),
    "vgg16-l1": dict(width_mult=0.125, input_size=16),
    "vgg11-imagenet": dict(width_mult=0.0625, input_size=32),
    "resnet20": dict(width_mult=0.25, input_size=16),
    "resnet50": dict(width_mult=0.0625, input_size=32),
    "preresnet110": dict(width_mult=0.25, input_size=8, blocks=(2, 1, 2)),
}


def randomized(genome, seed=0):
    """A model with random weights and non-trivial BN statistics, in eval mode."""
    torch.manual_seed(seed)
    model = build(genome)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 1.5 + 0.1)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()


def images(genome, n, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, genome.in_channels, genome.input_size, genome.input_size, generator=gen)


# ---- the criterion -----------------------------------------------------------------------------------------
def test_greedy_removes_the_channels_whose_sum_stays_smallest():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 1))
    # Channels 2 and 5 cancel each other exactly; channel 3 is tiny; the rest are large and independent.
    Z = rng.normal(size=(300, 6)) * 3
    Z[:, 2], Z[:, 5], Z[:, 3] = base[:, 0], -base[:, 0], 0.01 * rng.normal(size=300)
    removed = greedy_remove(Z, 3)
    assert set(removed) == {2, 3, 5}
    assert removed[0] == 3  # alone, the tiny channel costs least; the cancelling pair only pays off together


def test_greedy_with_offset_removes_what_the_target_lacks():
    # The target already misses channel 1's contribution: removing channel 1 is then the exact fix.
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(200, 4))
    y = Z[:, [0, 2, 3]].sum(1)
    assert greedy_remove(Z, 1, offset=y - Z.sum(1)) == [1]


def test_scale_refit_recovers_known_channel_scales():
    rng = np.random.default_rng(2)
    from prune_nas.methods._activations import LayerSample

    Z = rng.normal(size=(400, 5))
    W = rng.normal(size=(3, 5, 1))
    y = Z[:, [0, 2, 4]] @ np.array([2.0, 0.5, -1.0])
    sample = LayerSample(Z, y, np.zeros((1, 5, 1)), np.zeros((1, 3)), W)
    new = scale_refit(sample, np.array([0, 2, 4]), ridge=0.0)
    assert np.allclose(new[:, [0, 2, 4], 0] / W[:, [0, 2, 4], 0], [2.0, 0.5, -1.0])
    assert not new[:, [1, 3]].any()


# ---- reconstruction on real layers -------------------------------------------------------------------------
def _layer_samples(genome, model, link, seed):
    """Selection sample from one batch, evaluation sample (many positions) from another."""
    rng = np.random.default_rng(seed)
    layer = model.get_submodule(link.consumer)
    fit_in, fit_out = layer_io(model, link.consumer, images(genome, 32, seed))
    test_in, test_out = layer_io(model, link.consumer, images(genome, 32, seed + 100))
    fit = sample_layer(layer, fit_in, fit_out, link.window, samples=800, positions=800, rng=rng)
    test = sample_layer(layer, test_in, test_out, link.window, samples=1, positions=4000, rng=rng)
    return fit, test


def random_subset_errors(fit, test, keep, refit, trials=8, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(trials):
        kept = np.sort(rng.choice(fit.channels, keep, replace=False))
        if refit is None:
            W = np.zeros_like(fit.W)
            W[:, kept] = fit.W[:, kept]
        else:
            W = refit(fit, kept)
        out.append(test.error(W))
    return float(np.mean(out))


def reconstruction_vs_random(model_name, select, refit, layers=3):
    """For the first prunable layers of a random model, keeping half the channels: held-out relative errors of
    the method's choice after its refit (``ours``) and before (``ours_plain``), and the mean over random
    choices of the same size without (``rand_plain``) and with the same refit (``rand_refit``)."""
    genome = base_genome(model_name, width_mult=0.5 if model_name == "resnet20" else 0.25, input_size=16)
    model = randomized(genome)
    rows = []
    for i, link in enumerate(links(genome)[:layers]):
        fit, test = _layer_samples(genome, model, link, seed=i)
        keep = fit.channels // 2
        kept, W = select(fit, keep)
        plain = np.zeros_like(fit.W)
        plain[:, kept] = fit.W[:, kept]
        rows.append(dict(layer=link.group, ours=test.error(W), ours_plain=test.error(plain),
                         rand_plain=random_subset_errors(fit, test, keep, None),
                         rand_refit=random_subset_errors(fit, test, keep, refit)))
    return rows


@pytest.mark.parametrize("model_name", ["vgg11", "resnet20"])
def test_thinet_reconstructs_better_than_random_channels(model_name):
    rows = reconstruction_vs_random(model_name, thinet_select, lambda s, k: scale_refit(s, k, 1e-3))
    for r in rows:
        # Held-out images: the greedy choice beats random choices of the same size, with or without the
        # refit, and the refit does not hurt the greedy choice.
        assert r["ours_plain"] < r["rand_plain"] and r["ours"] < r["rand_refit"], r
        assert r["ours"] <= r["ours_plain"] * 1.01, r
    assert np.mean([r["ours"] / r["rand_refit"] for r in rows]) < 0.8, rows


def test_channels_with_zero_weights_in_the_consumer_go_first():
    genome = base_genome("vgg11", width_mult=0.125, input_size=16)  # conv1: 8 channels
    model = randomized(genome)
    useless = [1, 4, 6]
    with torch.no_grad():
        model.features.conv2.weight[:, useless] = 0
    x = images(genome, 16, 0)
    kept, work, _ = prune_sequential(genome, model, x, {"conv1": 5}, lambda s, k: thinet_select(s, k),
                                     samples=500, positions=lambda k, r: 500, seed=0)
    assert kept == {"conv1": [0, 2, 3, 5, 7]}
    # The working copy carries the refit; the caller's model is untouched.
    assert model.features.conv2.weight[:, 0].abs().sum() > 0
    assert not work.features.conv2.weight[:, useless].any()


# ---- end to end --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", sorted(TINY))
def test_every_family_gives_a_valid_genome_and_better_weights_than_random(model_name):
    genome = base_genome(model_name, **TINY[model_name])
    model = randomized(genome)
    result = THINET.prune(genome, model, data=images(genome, 32, 0), ratio=0.5, samples=400)
    small = result.genome
    again = Genome.from_json(small.to_json())  # schema + semantic validation
    assert again.key == small.key and small.provenance["method"] == "thinet"
    prunable = {link.group for link in links(genome)}
    if genome.family == "vgg":  # a ratio leaves the last stage alone, as ThiNet-Conv does
        last = max(map(genome.groups.stage, genome.groups.names))
        prunable = {g for g in prunable if genome.groups.stage(g) < last}
    assert prunable
    for g, w in genome.widths.items():
        assert small.widths[g] == (max(1, int(w * 0.5)) if g in prunable else w), g
    pruned = build(small)
    pruned.load_state_dict(result.state_dict, strict=True)
    pruned.eval()
    x = images(genome, 16, 7)
    with torch.no_grad():
        ref = model(x)
        ours = ((pruned(x) - ref) ** 2).sum() / (ref ** 2).sum()
        # The same architecture with randomly chosen channels (no refit): worse on average.
        rng = np.random.default_rng(0)
        errs = []
        for _ in range(3):
            keep = {g: np.sort(rng.choice(genome.widths[g], small.widths[g], replace=False))
                    for g in prunable}
            g2, state = shrink(genome, model, keep)
            m2 = build(g2)
            m2.load_state_dict(state)
            errs.append(float(((m2.eval()(x) - ref) ** 2).sum() / (ref ** 2).sum()))
    assert torch.isfinite(ours) and float(ours) < np.mean(errs), (float(ours), errs)


def test_no_layer_is_emptied():
    genome = base_genome("vgg11", width_mult=0.125, input_size=16)  # conv1 has 8 channels, conv2 16
    result = THINET.prune(genome, randomized(genome), data=images(genome, 8, 0), ratio=0.95, samples=200)
    assert result.genome.widths["conv1"] == 1 and result.genome.widths["conv3"] == 1
    assert any("conv1: kept 1 of 8" in n for n in result.notes)


def test_accepts_a_dataset():
    from prune_nas.training.data import load_dataset

    genome = base_genome("resnet20", width_mult=0.25, input_size=16)
    data = load_dataset("synthetic", input_size=16)
    result = THINET.prune(genome, randomized(genome), data=data, ratio=0.25, images=16, samples=200)
    assert result.genome.widths["stage1.block0.conv1"] == 3


@pytest.mark.slow
def test_on_a_trained_model_the_pruned_weights_keep_most_of_the_accuracy():
    """VGG-11 at a quarter width trained on digits, half of every layer's channels removed, no fine-tuning:
    ThiNet's and regression's inherited weights keep far more accuracy than random channel choices."""
    from prune_nas.training.data import load_dataset
    from prune_nas.training.loop import evaluate_model, train_model
    from prune_nas.training.protocol import Protocol

    genome = base_genome("vgg11", width_mult=0.25, input_size=16, in_channels=1)
    data = load_dataset("digits", input_size=16, in_channels=1)
    torch.manual_seed(0)
    model = build(genome)
    train_model(model, data, Protocol(epochs=8, flip=False), seed=0, progress=False, evaluate=False)
    model.eval()
    full = evaluate_model(model, data)["top1"]
    acc = {}
    for name in ("thinet", "regression"):
        result = REGISTRY[name].prune(genome, model, data=data, ratio=0.5)
        pruned = build(result.genome)
        pruned.load_state_dict(result.state_dict)
        acc[name] = evaluate_model(pruned, data)["top1"]
    rng = np.random.default_rng(0)
    keep = {g: np.sort(rng.choice(w, w // 2, replace=False)) for g, w in genome.widths.items()}
    g2, state = shrink(genome, model, keep)
    random_model = build(g2)
    random_model.load_state_dict(state)
    acc["random"] = evaluate_model(random_model, data)["top1"]
    assert full > 0.9, full
    assert acc["thinet"] > max(0.5, acc["random"] + 0.2), acc
    assert acc["regression"] > max(0.8, acc["random"] + 0.2), acc


@pytest.mark.parametrize("alias", sorted(CONFIGS))
def test_named_configs_give_the_library_widths(alias):
    named = library_genomes()[CONFIGS[alias]]
    genome = base_genome(named.model)
    keep, _ = target_widths("thinet", genome, None, alias, CONFIGS)
    assert {**genome.widths, **keep} == dict(named.widths)


@pytest.mark.slow
def test_a_ratio_on_vgg16_leaves_the_last_stage_as_thinet_conv_does():
    """ThiNet-Conv halves conv1-10 of VGG-16 and keeps conv11-13: --ratio 0.5 gives exactly its widths."""
    genome = base_genome("vgg16-nobn-imagenet")
    by_ratio, _ = THINET.targets(genome, 0.5, None)
    by_config, _ = THINET.targets(genome, None, "vgg-conv")
    assert by_ratio == by_config
    assert sorted(by_ratio, key=lambda g: int(g[4:])) == [f"conv{i}" for i in range(1, 11)]
    # Regression (He et al.) keeps its uniform ratio over every prunable layer.
    assert len(REGISTRY["regression"].targets(genome, 0.5, None)[0]) == 13


def test_named_config_end_to_end_on_vgg16_gap_without_bn():
    genome = base_genome("vgg16-nobn-imagenet-gap")
    model = randomized(genome)
    x = torch.randn(4, 3, 16, 16)  # the global-pool head takes any size >= 16
    result = THINET.prune(genome, model, data=x, config="vgg-tiny", samples=200)
    assert result.genome.key == library_genomes()["thinet-vgg-tiny"].key
    pruned = build(result.genome)
    pruned.load_state_dict(result.state_dict)
    assert pruned.eval()(x).shape == (4, 1000)


@pytest.mark.parametrize("kwargs, message", [
    (dict(ratio=1.5), "ratio must be in (0, 1)"),
    (dict(ratio=0.0), "ratio must be in (0, 1)"),
    (dict(ratio=0.5, config="vgg-gap"), "either a ratio or a config"),
    (dict(config="vgg-gap"), "is for vgg16-nobn-imagenet-gap, not vgg11"),
    (dict(config="nope"), "unknown config"),
])
def test_bad_input_is_one_clear_user_error(kwargs, message):
    genome = base_genome("vgg11", width_mult=0.125, input_size=16)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        THINET.prune(genome, build(genome), data=images(genome, 4, 0), **kwargs)


def test_needs_data_and_a_supported_family():
    genome = base_genome("vgg11", width_mult=0.125, input_size=16)
    with pytest.raises(UserError, match="needs data"):
        THINET.prune(genome, build(genome), ratio=0.5)
    dense = base_genome("densenet40", width_mult=0.5, input_size=8)
    with pytest.raises(UserError, match="does not apply to densenet"):
        THINET.prune(dense, build(dense), data=images(dense, 4, 0), ratio=0.5)


def test_registry_entry():
    assert THINET.target == "predefined" and THINET.needs_training
    assert set(THINET.families) == {"vgg", "resnet", "preresnet"}
    assert {p.name for p in THINET.params} >= {"ratio", "config", "samples", "images", "seed"}
    assert "ICCV 2017" in THINET.citation
