"""Regression-based feature reconstruction (He et al.): LASSO selection on constructed contributions, the
least-squares refit, reconstruction against random channel choices, every supported family end to end."""

import numpy as np
import pytest
import torch
from test_methods_thinet import TINY, images, randomized, reconstruction_vs_random

from prune_nas import base_genome, build
from prune_nas.core.errors import UserError
from prune_nas.core.genome import Genome
from prune_nas.core.library import library_genomes
from prune_nas.methods._activations import LayerSample, links, prune_sequential, target_widths
from prune_nas.methods._base import REGISTRY
from prune_nas.methods.regression import CONFIGS, lasso_select, lstsq_refit, regression_select

REGRESSION = REGISTRY["regression"]


# ---- the criterion -----------------------------------------------------------------------------------------
def test_lasso_keeps_the_channels_the_target_is_made_of():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(500, 12))
    informative = [1, 4, 5, 9]
    y = Z[:, informative] @ np.array([1.0, 0.8, -1.2, 0.6]) + 0.01 * rng.normal(size=500)
    assert lasso_select(Z, y, 4).tolist() == informative


def test_lasso_hits_the_target_count_exactly():
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(300, 20)) * rng.uniform(0.1, 2.0, size=20)
    y = Z.sum(1)
    for keep in (1, 5, 11, 19):
        kept = lasso_select(Z, y, keep)
        assert len(kept) == keep and len(set(kept.tolist())) == keep
    # Columns that contribute nothing are never chosen over ones that do, even when LASSO stops short.
    Z[:, [3, 7]] = 0.0
    assert not {3, 7} & set(lasso_select(Z, Z.sum(1), 18).tolist())


def test_lstsq_refit_recovers_the_weights_that_made_the_output():
    rng = np.random.default_rng(2)
    P = rng.normal(size=(600, 6, 4))  # positions x channels x window
    W_true = rng.normal(size=(3, 6, 4))
    W_true[:, [0, 3]] = 0.0  # the output only depends on channels 1, 2, 4, 5
    Y = P.reshape(600, -1) @ W_true.reshape(3, -1).T
    sample = LayerSample(np.zeros((1, 6)), np.zeros(1), P, Y, rng.normal(size=(3, 6, 4)))
    W = lstsq_refit(sample, np.array([1, 2, 4, 5]), ridge=0.0)
    assert np.allclose(W, W_true, atol=1e-8)
    assert sample.error(W) < 1e-12


# ---- reconstruction on real layers -------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["vgg11", "resnet20"])
def test_regression_reconstructs_better_than_random_channels(model_name):
    rows = reconstruction_vs_random(model_name, regression_select, lambda s, k: lstsq_refit(s, k, 1e-3))
    for r in rows:
        # Held-out images: LASSO's choice beats random choices of the same size before and after the
        # least-squares refit, and the refit improves on the original weights.
        assert r["ours_plain"] < r["rand_plain"] and r["ours"] < r["rand_refit"], r
        assert r["ours"] < r["ours_plain"], r
    assert np.mean([r["ours"] / r["rand_refit"] for r in rows]) < 0.8, rows


def test_channels_with_zero_weights_in_the_consumer_go_first():
    genome = base_genome("resnet20", width_mult=0.5, input_size=16)  # block conv1: 8 channels
    model = randomized(genome)
    useless = [0, 3, 4]
    with torch.no_grad():
        model.stage1.block1.conv2.weight[:, useless] = 0
    group = "stage1.block1.conv1"
    kept, work, _ = prune_sequential(genome, model, images(genome, 16, 0), {group: 5}, regression_select,
                                     samples=500, positions=lambda k, r: 500, seed=0)
    assert kept == {group: [1, 2, 5, 6, 7]}
    assert not work.stage1.block1.conv2.weight[:, useless].any()


# ---- end to end --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", sorted(TINY))
def test_every_family_gives_a_valid_genome_that_builds(model_name):
    genome = base_genome(model_name, **TINY[model_name])
    model = randomized(genome)
    result = REGRESSION.prune(genome, model, data=images(genome, 32, 0), ratio=0.25, samples=300)
    small = result.genome
    assert Genome.from_json(small.to_json()).key == small.key
    assert small.provenance["method"] == "regression" and small.provenance["params"]["ratio"] == 0.25
    prunable = {link.group for link in links(genome)}
    for g, w in genome.widths.items():
        assert small.widths[g] == (max(1, int(w * 0.75)) if g in prunable else w), g
    pruned = build(small)
    pruned.load_state_dict(result.state_dict, strict=True)
    x = images(genome, 8, 5)
    with torch.no_grad():
        ref, out = model(x), pruned.eval()(x)
    assert torch.isfinite(out).all()
    assert float(((out - ref) ** 2).sum() / (ref ** 2).sum()) < 0.5


def test_refit_beats_no_refit_end_to_end():
    genome = base_genome("resnet20", width_mult=0.5, input_size=16)
    model = randomized(genome)
    x = images(genome, 32, 3)
    keep = {link.group: 4 for link in links(genome)}

    def no_refit(sample, k):
        kept, _ = regression_select(sample, k)
        W = np.zeros_like(sample.W)
        W[:, kept] = sample.W[:, kept]
        return kept, W

    errs = {}
    for name, select in (("refit", regression_select), ("plain", no_refit)):
        _, work, _ = prune_sequential(genome, model, x, keep, select, samples=400,
                                      positions=lambda k, r: 2000, seed=0)
        with torch.no_grad():
            held_out = images(genome, 16, 9)
            ref = model(held_out)
            errs[name] = float(((work(held_out) - ref) ** 2).sum() / (ref ** 2).sum())
    assert errs["refit"] < errs["plain"], errs


def test_named_config_gives_the_library_widths():
    named = library_genomes()["vgg16-5x"]
    genome = base_genome("vgg16-nobn-imagenet")
    keep, _ = target_widths("regression", genome, None, "vgg16-5x", CONFIGS)
    assert {**genome.widths, **keep} == dict(named.widths)
    with pytest.raises(UserError, match="is for vgg16-nobn-imagenet, not vgg16"):
        target_widths("regression", base_genome("vgg16"), None, "vgg16-5x", CONFIGS)
    # A narrowed model is pruned in proportion: conv1 keeps 24 of 64 at full width, so 6 of 16 at a quarter.
    narrow = base_genome("vgg16-nobn-imagenet", width_mult=0.25)
    keep, _ = target_widths("regression", narrow, None, "vgg16-5x", CONFIGS)
    assert keep["conv1"] == 6 and keep["conv3"] == 10 and "conv13" not in keep


@pytest.mark.parametrize("ratio", [1.0, -0.2, 2])
def test_a_ratio_outside_the_open_interval_is_a_user_error(ratio):
    genome = base_genome("resnet20", width_mult=0.25, input_size=16)
    with pytest.raises(UserError, match=r"ratio must be in \(0, 1\)"):
        REGRESSION.prune(genome, build(genome), data=images(genome, 4, 0), ratio=ratio)


def test_registry_entry():
    assert REGRESSION.target == "predefined" and REGRESSION.needs_training
    assert set(REGRESSION.families) == {"vgg", "resnet", "preresnet"}
    assert {p.name for p in REGRESSION.params} >= {"ratio", "config", "samples", "positions", "images"}
    assert "He" in REGRESSION.citation and "ICCV 2017" in REGRESSION.citation
