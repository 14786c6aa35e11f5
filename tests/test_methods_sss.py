"""Sparse Structure Selection: block scales leave the model unchanged at 1, the proximal step zeroes small
scales, blocks with zero scale (and only those) are removed, inherited weights reproduce the scaled model,
and the ResNet-50 genomes match the paper's ResNet-41/32/26."""

import pytest
import torch
from test_methods_thinet import randomized

from prune_nas import base_genome, build
from prune_nas.core.cost import count
from prune_nas.core.errors import UserError
from prune_nas.core.genome import Genome
from prune_nas.core.library import library_genomes
from prune_nas.methods._base import REGISTRY
from prune_nas.methods.sss import (
    ProximalScales,
    attach_scales,
    block_scales,
    detach_scales,
    soft_threshold,
    training_callbacks,
)
from prune_nas.training.data import load_dataset
from prune_nas.training.loop import train_model
from prune_nas.training.protocol import Protocol

SSS = REGISTRY["sss"]
TINY = {
    "resnet20": dict(width_mult=0.25, input_size=16),
    "resnet34": dict(width_mult=0.0625, input_size=32, blocks=(2, 2, 2, 1)),
    "resnet50": dict(width_mult=0.125, input_size=64),
    "preresnet110": dict(width_mult=0.25, input_size=8, blocks=(3, 3, 3)),
}


def x_for(genome, n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, genome.input_size, genome.input_size, generator=gen)


def set_scales(model, values):
    with torch.no_grad():
        for name, p in attach_scales(model).items():
            p.fill_(values.get(name, 1.0))


@pytest.mark.parametrize("model_name", sorted(TINY))
def test_scales_of_one_leave_the_model_unchanged(model_name):
    genome = base_genome(model_name, **TINY[model_name])
    model = randomized(genome)
    x = x_for(genome)
    with torch.no_grad():
        plain = model(x)
        scales = attach_scales(model)
        assert len(scales) == sum(genome.blocks)
        assert attach_scales(model).keys() == scales.keys()  # idempotent
        assert torch.equal(model(x), plain)
        set_scales(model, {name: 0.0 for name in scales})
        assert not torch.allclose(model(x), plain)  # the scale really acts on the branch
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in build(genome).parameters()) \
        + sum(genome.blocks)


def test_proximal_step_zeroes_small_scales_and_shrinks_the_rest():
    genome = base_genome("resnet20", width_mult=0.25, input_size=16)
    model = build(genome)
    values = [0.04, -0.03, 0.5, -0.2, 0.05, 1.0, 0.0, 0.3, -0.06]
    set_scales(model, dict(zip(attach_scales(model), values)))
    step = ProximalScales(penalty=0.5, lr=0.1)  # threshold 0.05
    step.after_step(model)
    after = list(block_scales(model).values())
    assert after == pytest.approx([0.0, 0.0, 0.45, -0.15, 0.0, 0.95, 0.0, 0.25, -0.01], abs=1e-6)
    assert [v == 0.0 for v in after] == [True, True, False, False, True, False, True, False, False]
    assert soft_threshold(torch.tensor([-0.3]), 0.1).item() == pytest.approx(-0.2)


def test_scales_take_proximal_gradient_steps_outside_the_optimizer():
    from prune_nas.training.protocol import make_optimizer

    genome = base_genome("resnet20", width_mult=0.25, input_size=16)
    torch.manual_seed(0)
    model = build(genome)
    (callback,) = training_callbacks(model, penalty=0.2, lr=0.1)
    optimizer = make_optimizer(model, Protocol(lr=0.1))  # momentum 0.9, weight decay 1e-4
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    for _ in range(3):  # a few steps, so that SGD's momentum would show if it acted on the scales
        before = {n: p.detach().clone() for n, p in attach_scales(model).items()}
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in attach_scales(model).items()}
        conv = model.stage1.block0.conv1.weight.detach().clone()
        callback.after_backward(model)
        optimizer.step()
        callback.after_step(model)
        for n, p in attach_scales(model).items():
            assert torch.allclose(p.detach(), soft_threshold(before[n] - 0.1 * grads[n], 0.02)), n
        assert not torch.equal(model.stage1.block0.conv1.weight, conv)  # SGD still trains the rest


def test_proximal_step_follows_the_protocol_learning_rate():
    step = ProximalScales(penalty=1.0, protocol=Protocol(epochs=4, lr=0.1))  # lr 0.1, 0.1, 0.01, 0.001
    rates = []
    for epoch in range(4):
        rates.append(step.current_lr())
        step.epoch = epoch + 1
    assert rates == pytest.approx([0.1, 0.1, 0.01, 0.001])
    with pytest.raises(UserError, match="protocol"):
        ProximalScales(penalty=1.0)


@pytest.mark.parametrize("model_name", sorted(TINY))
def test_exactly_the_zero_scale_blocks_are_removed(model_name):
    genome = base_genome(model_name, **TINY[model_name])
    model = randomized(genome)
    names = [f"stage{s}.block{b}" for s, n in enumerate(genome.blocks, start=1) for b in range(n)]
    zero = names[1::3] + [f"stage{len(genome.blocks)}.block0"]  # later blocks and a stage's first block
    set_scales(model, {n: (0.0 if n in zero else 0.5 + 0.1 * i) for i, n in enumerate(names)})
    result = SSS.prune(genome, model)
    assert sorted(result.genome.provenance["removed_blocks"]) == sorted(set(zero))
    expected = tuple(sum(1 for b in range(n) if f"stage{s}.block{b}" not in zero)
                     for s, n in enumerate(genome.blocks, start=1))
    assert result.genome.blocks == expected
    small = Genome.from_json(result.genome.to_json())
    assert small.key == result.genome.key
    pruned = build(small)
    pruned.load_state_dict(result.state_dict, strict=True)
    assert torch.isfinite(pruned.eval()(x_for(genome))).all()
    assert count(small).flops < count(genome).flops


@pytest.mark.parametrize("model_name", sorted(TINY))
def test_inherited_weights_compute_what_the_scaled_model_computes(model_name):
    # Removing blocks other than a stage's first keeps every tensor where it was, so the pruned model with
    # the scales folded into its weights must reproduce the trained model exactly.
    genome = base_genome(model_name, **TINY[model_name])
    model = randomized(genome)
    scales = {f"stage{s}.block{b}": (0.0 if b == n - 1 and n > 1 else 0.3 + 0.2 * b)
              for s, n in enumerate(genome.blocks, start=1) for b in range(n)}
    set_scales(model, scales)
    x = x_for(genome)
    with torch.no_grad():
        expected = model(x)
    result = SSS.prune(genome, model)
    pruned = build(result.genome)
    pruned.load_state_dict(result.state_dict, strict=True)
    with torch.no_grad():
        assert torch.allclose(pruned.eval()(x), expected, atol=1e-5, rtol=1e-4)
    assert not any("freshly initialised" in n for n in result.notes)
    assert block_scales(model) == pytest.approx(scales)  # the caller's model keeps its scales


@pytest.mark.parametrize("model_name", ["resnet20", "resnet50"])
def test_a_removed_first_block_leaves_its_shortcut_and_identity_blocks(model_name):
    genome = base_genome(model_name, **TINY[model_name])
    model = randomized(genome)
    x = x_for(genome)
    # Stage 1 of ResNet-20 has an identity entry: dropping its first block is just fewer blocks. Elsewhere the
    # stage keeps block 0's shortcut (pooling + zero-padding, or the projection), which down-samples, and its
    # other blocks stay identity blocks at the low resolution: as the reference, and exact.
    for removed, entries in (("stage1.block0", () if model_name == "resnet20" else (1,)),
                             ("stage2.block0", (2,))):
        set_scales(model, {removed: 0.0})
        with torch.no_grad():
            expected = model(x)
        result = SSS.prune(genome, model)
        assert result.genome.shortcut_entries == entries
        removed_stage = int(removed[5])
        assert result.genome.blocks == tuple(n - (s == removed_stage) for s, n in enumerate(genome.blocks, 1))
        pruned = build(result.genome)
        pruned.load_state_dict(result.state_dict)
        assert torch.allclose(pruned.eval()(x), expected, atol=1e-5, rtol=1e-4)
        assert not any("freshly initialised" in n for n in result.notes)
        stage = getattr(pruned, removed.split(".")[0])
        assert isinstance(stage.block0.shortcut, torch.nn.Identity) and stage.block0.conv1.stride == (1, 1)
        if model_name == "resnet50":
            assert torch.equal(result.state_dict[f"{removed[:6]}.shortcut.0.weight"],
                               model.get_submodule(f"{removed}.shortcut.0").weight)


def test_resnet50_gives_the_papers_resnet41_32_26():
    genome = base_genome("resnet50")
    names = [f"stage{s}.block{b}" for s, n in enumerate(genome.blocks, start=1) for b in range(n)]
    library = library_genomes()
    # The reference's config.units: (blocks kept, whether the stage's first block is kept) per stage.
    units = {"sss-resnet41": [(0, False), (4, True), (6, True), (3, True)],
             "sss-resnet32": [(1, False), (4, True), (4, True), (1, True)],
             "sss-resnet26": [(0, False), (2, False), (5, False), (1, True)]}
    for target, stages in units.items():
        kept = set()
        for s, (n, first) in enumerate(stages, start=1):
            kept |= {f"stage{s}.block{b}" for b in range(0 if first else 1, 6)[:n]}
        result = SSS.prune(genome, None, scales={n: float(n in kept) for n in names})
        assert result.state_dict is None
        assert result.genome.blocks == tuple(n for n, _ in stages)
        entries = tuple(s for s, (n, first) in enumerate(stages, 1) if n and not first)
        assert result.genome.shortcut_entries == entries
        assert result.genome.key == library[target].key
        assert 3 * sum(result.genome.blocks) + 2 == int(target.removeprefix("sss-resnet"))


def test_a_threshold_removes_near_zero_blocks_and_the_model_is_never_emptied():
    genome = base_genome("resnet20", width_mult=0.25, input_size=16)
    names = [f"stage{s}.block{b}" for s in (1, 2, 3) for b in range(3)]
    scales = {n: 1e-3 for n in names}
    scales["stage3.block1"] = 0.5
    assert SSS.prune(genome, None, scales=scales, threshold=0.0).genome.blocks == (3, 3, 3)
    assert SSS.prune(genome, None, scales=scales).genome.blocks == (0, 0, 1)  # default threshold 0.01
    result = SSS.prune(genome, None, scales={n: 0.0 for n in names[:-1]} | {names[-1]: -1e-4},
                       threshold=1e-3)
    assert result.genome.blocks == (0, 0, 1)
    assert any("so the model is not empty" in n for n in result.notes)


def test_training_with_a_strong_penalty_drives_scales_to_exactly_zero():
    genome = base_genome("resnet20", width_mult=0.25, input_size=16)
    data = load_dataset("synthetic", input_size=16)
    protocol = Protocol(epochs=1)
    outcomes = {}
    for penalty in (0.0, 3.0):
        torch.manual_seed(0)
        model = build(genome)
        callbacks = training_callbacks(model, penalty=penalty, protocol=protocol)
        history = train_model(model, data, protocol, seed=0, callbacks=callbacks, progress=False,
                              evaluate=False)
        assert history.status == "ok"
        outcomes[penalty] = block_scales(model)
        assert callbacks[0].history == [sum(v != 0 for v in outcomes[penalty].values())]
    assert all(v != 0 for v in outcomes[0.0].values())  # the scales are trained, not thresholded
    assert all(v == 0 for v in outcomes[3.0].values())  # 8 steps of lr 0.1 x 3.0 swamp the gradient


def test_detach_folds_the_scales_into_the_weights():
    genome = base_genome("resnet50", **TINY["resnet50"])
    model = randomized(genome)
    set_scales(model, {"stage2.block1": 0.25, "stage4.block0": 0.0})
    x = x_for(genome)
    with torch.no_grad():
        expected = model(x)
        values = detach_scales(model)
        assert values["stage2.block1"] == 0.25 and not block_scales(model)
        assert torch.allclose(model(x), expected, atol=1e-5, rtol=1e-4)
    assert set(model.state_dict()) == set(build(genome).state_dict())


def test_bad_input():
    for name in ("vgg16", "densenet40"):
        genome = base_genome(name, width_mult=0.25, input_size=16)
        with pytest.raises(UserError, match=f"does not apply to {genome.family} models"):
            SSS.prune(genome, build(genome))
    genome = base_genome("resnet20", width_mult=0.25, input_size=16)
    with pytest.raises(UserError, match="no block scales"):
        SSS.prune(genome, build(genome))
    with pytest.raises(UserError, match="scales do not match"):
        SSS.prune(genome, None, scales={"stage1.block0": 1.0})
    with pytest.raises(UserError, match="threshold must be >= 0"):
        SSS.prune(genome, None, scales={}, threshold=-1)


def test_registry_entry():
    assert SSS.target == "automatic" and SSS.needs_training
    assert set(SSS.families) == {"resnet", "preresnet"}
    assert {p.name for p in SSS.params} == {"penalty", "threshold", "config"}
    assert "ECCV 2018" in SSS.citation
    model = build(base_genome("resnet20", width_mult=0.25, input_size=16))
    callbacks = SSS.training_callbacks(model, penalty=0.1, protocol=Protocol(epochs=1))
    assert len(block_scales(model)) == 9 and all(hasattr(cb, "after_step") for cb in callbacks)
