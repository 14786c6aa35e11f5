"""Every registered model: builds from random valid genomes, runs forward, and costs exactly what it
builds."""

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from prune_nas import build
from prune_nas.core.arch import MODELS, list_models
from prune_nas.core.cost import count
from prune_nas.core.errors import GenomeError
from prune_nas.core.genome import base_genome, random_genome

# Unpruned parameter counts at the models' own class counts (10 on CIFAR, 1000 on ImageNet), cross-checked
# with published figures: ResNet-56 0.85M, ResNet-110 1.7M, VGG-19 20.04M, PreResNet-164 1.70M,
# DenseNet-40 1.06M, DenseNet-BC-100 0.77M, ResNet-34 21.8M, ResNet-50 25.56M, VGG-16 138.4M (+BN).
GOLDEN_PARAMS = {
    "vgg11": 9_228_362, "vgg13": 9_413_066, "vgg16": 14_724_042, "vgg19": 20_035_018,
    "vgg16-l1": 14_987_722, "resnet20": 269_722, "resnet32": 464_154, "resnet56": 853_018,
    "resnet110": 1_727_962, "preresnet110": 1_146_842, "preresnet164": 1_703_258, "densenet40": 1_059_298,
    "densenet-bc100": 769_162, "resnet34": 21_797_672, "resnet50": 25_557_032,
    # 132_866_088 before its head followed the reference (Network Slimming's ImageNet VGG-11): two BatchNorm1d
    # of 4096 units add 2 x 4096 x 2 scales and shifts.
    "vgg11-imagenet": 132_882_472,
    "vgg16-imagenet": 138_361_768,
    "vgg16-nobn-imagenet": 138_357_544,  # torchvision's VGG-16 (no BN) has exactly this many
}
# Multiply-accumulates (Li et al. report 3.13E8 for VGG-16, 1.25E8 for ResNet-56, 2.53E8 for ResNet-110,
# 3.64E9 for ResNet-34; ResNet-50 with stride on the 3x3 conv is 4.09G).
GOLDEN_MACS = {"vgg16-l1": 313_463_808, "resnet56": 125_485_696, "resnet110": 252_887_680,
               "resnet34": 3_663_761_408, "resnet50": 4_089_184_256}

# Forward passes run at small inputs to stay fast; the cost cross-check holds at any input size.
SMALL_INPUT = {name: 32 if spec.input_size > 32 else 16 for name, spec in MODELS.items()}


@pytest.mark.parametrize("model", sorted(GOLDEN_PARAMS))
def test_golden_parameter_counts(model):
    assert count(base_genome(model)).params == GOLDEN_PARAMS[model]


@pytest.mark.parametrize("model", sorted(GOLDEN_MACS))
def test_golden_macs(model):
    assert count(base_genome(model)).flops == GOLDEN_MACS[model]


def _check(genome):
    model = build(genome).eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(2, genome.in_channels, genome.input_size, genome.input_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        y = model(x)
    assert y.shape == (2, genome.num_classes)
    assert torch.isfinite(y).all()
    cost = count(genome)
    assert cost.params == params
    assert 2 * cost.flops * x.shape[0] == counter.get_total_flops()  # FlopCounterMode: 2 per MAC


@pytest.mark.parametrize("model", list_models())
def test_random_genomes_build_run_and_cost_exactly(model):
    rng = random.Random(hash(model) % 1000)
    kwargs = {"input_size": SMALL_INPUT[model]}
    if "imagenet" in model and MODELS[model].config.get("head") == "fc":
        kwargs["input_size"] = 224  # the FC head needs 7x7 maps; keep widths tiny instead
        kwargs["width_mult"] = 1.0
        rng_genome = random_genome(model, rng, 0.01, 0.03, num_classes=7, **kwargs)
        _check(rng_genome)
        return
    for _ in range(2):
        _check(random_genome(model, rng, 0.05, 0.5, num_classes=7, **kwargs))


@pytest.mark.parametrize("model,blocks,entries", [
    ("resnet56", (9, 0, 4), ()), ("resnet50", (0, 2, 5, 1), ()), ("resnet50", (0, 2, 5, 1), (2, 3)),
    ("resnet56", (9, 3, 4), (2, 3)), ("preresnet110", (3, 0, 12), ()), ("resnet34", (0, 4, 6, 3), ())])
def test_block_pruned_genomes_including_empty_stages(model, blocks, entries):
    g = base_genome(model, blocks=blocks, width_mult=0.25, input_size=SMALL_INPUT[model])
    _check(g.replace(shortcut_entries=entries))


def test_a_shortcut_entry_downsamples_and_its_blocks_are_identity_blocks():
    g = base_genome("resnet50", blocks=(3, 2, 6, 3), width_mult=0.125, input_size=64)
    entry = g.replace(shortcut_entries=(2,))
    assert entry.key != g.key and count(entry).flops < count(g).flops  # its blocks run at the low resolution
    stage = build(entry).stage2
    assert stage.shortcut[0].stride == (2, 2) and isinstance(stage.shortcut[1], torch.nn.BatchNorm2d)
    assert all(isinstance(b.shortcut, torch.nn.Identity) and b.conv2.stride == (1, 1)
               for b in (stage.block0, stage.block1))
    for bad, match in (((1,), "keeps all 3 blocks"), ((3, 2), "increasing order"), ((5,), "stages are 1..4")):
        with pytest.raises(GenomeError, match=match):
            g.replace(shortcut_entries=bad)
    with pytest.raises(GenomeError, match="identity shortcut"):
        base_genome("resnet20", blocks=(2, 3, 3)).replace(shortcut_entries=(1,))
    with pytest.raises(GenomeError, match="do not support"):
        base_genome("preresnet110", blocks=(3, 2, 12)).replace(shortcut_entries=(2,))


def test_cifar_shortcuts_average_pool_and_zero_pad_with_gradients():
    from prune_nas.core.arch.resnet import PadShortcut

    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4).requires_grad_()
    out = PadShortcut(2, 4, 2)(x)
    assert out.shape == (1, 4, 2, 2) and not out[:, 2:].any()
    assert torch.equal(out[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))  # 2x2 means, not x[::2, ::2]
    out.sum().backward()  # unlike the reference's detached shortcut, gradients reach the input
    assert torch.equal(x.grad, torch.full_like(x, 0.25))
    assert PadShortcut(2, 4, 2)(torch.ones(1, 2, 5, 5)).shape[-1] == 3  # as a stride-2 3x3 conv at odd sizes


# The reference initialises BatchNorm scales at 0.5 in its Network Slimming models and its L1-norm VGG-16, and
# at 1 elsewhere (torchvision and bearpaw models, the L1-norm ResNets, ThiNet's and regression's ResNets).
BN_INIT = {"vgg11": 0.5, "vgg16": 0.5, "vgg19": 0.5, "vgg16-l1": 0.5, "vgg11-imagenet": 0.5,
           "preresnet164": 0.5, "densenet40": 0.5, "preresnet110": 1.0, "densenet-bc100": 1.0,
           "resnet56": 1.0, "resnet110": 1.0, "resnet34": 1.0, "resnet50": 1.0, "vgg16-imagenet": 1.0}


@pytest.mark.parametrize("model", sorted(BN_INIT))
def test_batchnorm_scale_init_follows_the_reference(model):
    built = build(base_genome(model, width_mult=0.125, input_size=SMALL_INPUT[model]))
    bns = [m for m in built.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(torch.all(m.weight == BN_INIT[model]) and not m.bias.any() for m in bns)
    assert MODELS[model].bn_init == BN_INIT[model]


def test_vgg_without_batchnorm_has_conv_biases_and_no_bn():
    built = build(base_genome("vgg16-nobn-imagenet", width_mult=0.0625, input_size=32))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in built.modules())
    assert all(m.bias is not None for m in built.modules() if isinstance(m, torch.nn.Conv2d))


def test_registry_covers_the_required_families():
    required = {"vgg11", "vgg13", "vgg16", "vgg19", "resnet20", "resnet32", "resnet56", "resnet110",
                "preresnet110", "preresnet164", "densenet40", "densenet-bc100", "resnet34", "resnet50",
                "vgg11-imagenet", "vgg16-imagenet"}
    assert required <= set(MODELS)
    assert {"vgg16", "vgg16-l1"} <= set(list_models("vgg16*"))


def test_conv_module_paths_equal_op_names():
    from prune_nas.core.geometry import ops_of

    for model in ("vgg16", "resnet56", "preresnet110", "densenet-bc100", "resnet50"):
        g = base_genome(model, width_mult=0.25)
        built = build(g)
        convs = {n for n, m in built.named_modules() if isinstance(m, torch.nn.Conv2d)}
        assert convs == {op.name for op in ops_of(g) if op.kind == "conv"}


def test_density_genome_counts_kept_weights_only():
    from prune_nas.core.genome import Sparsity

    g = base_genome("vgg16")
    dense = count(g)
    sparse = g.replace(sparsity=Sparsity(density={"features.conv13": 0.25}))
    w = 512 * 512 * 9
    assert dense.params - count(sparse).params == w - round(0.25 * w)
    assert dense.flops - count(sparse).flops == (w - round(0.25 * w)) * 2 * 2


def test_density_only_genomes_build_with_exactly_the_counted_weights():
    from prune_nas.core.genome import Sparsity

    g = base_genome("vgg11", width_mult=0.125, input_size=16)
    keep = {"features.conv3": [[0.2, 0.9, 0.2], [0.9, 1.0, 0.9], [0.2, 0.9, 0.2]]}
    sparse = g.replace(sparsity=Sparsity(density={"features.conv3": 0.3, "features.conv5": 0.55},
                                         kernel_keep={"3": keep["features.conv3"]}, seed=4))
    from prune_nas.core.cost import kept_weights

    torch.manual_seed(0)
    model = build(sparse)
    for name, kept in kept_weights(sparse).items():
        layer = model.get_submodule(name)
        mask = getattr(layer, "weight_mask", None)
        # Count the mask, not nonzero values: a random init may draw an exact 0.0 in a dense layer.
        assert (int(mask.sum()) if mask is not None else layer.weight.numel()) == kept, name
        if mask is not None:
            assert not layer.weight[mask == 0].any(), name  # masked weights are zero
    assert kept_weights(sparse)["features.conv3"] == round(0.3 * 32 * 16 * 9)
    w = model.get_submodule("features.conv3").weight.detach()
    again = build(sparse).get_submodule("features.conv3").weight.detach()
    assert torch.equal(w != 0, again != 0)  # the same masks every time for the same genome
    # The centre of the 3x3 kernel is kept more often than the corners, following the keep map.
    kept = (w != 0).float().mean(dim=(0, 1))
    assert kept[1, 1] > kept[0, 0]
