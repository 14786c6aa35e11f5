"""Generic models (torchvision:, timm:, python: references): width groups, genome round trips, exact cost,
build, state-dict import, and every method on a small model."""

from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

import prune_nas
from prune_nas.core.cost import count
from prune_nas.core.errors import GenomeError, UserError
from prune_nas.core.genome import Genome, base_genome, load_genome

SIZE = 32


class TinyNet(nn.Module):
    """A residual CNN with BN, a depthwise conv and a linear head: the user's own model."""

    def __init__(self, num_classes: int = 10, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.inner = nn.Sequential(nn.Conv2d(width, 2 * width, 1, bias=False), nn.BatchNorm2d(2 * width),
                                   nn.ReLU(),
                                   nn.Conv2d(2 * width, 2 * width, 3, padding=1, groups=2 * width,
                                             bias=False),
                                   nn.BatchNorm2d(2 * width), nn.ReLU(),
                                   nn.Conv2d(2 * width, width, 1, bias=False), nn.BatchNorm2d(width))
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                                  nn.BatchNorm2d(2 * width),
                                  nn.ReLU())
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.inner(x))
        x = self.down(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def tiny_net(num_classes: int = 10, width: int = 8) -> nn.Module:
    return TinyNet(num_classes, width)


class OptionA(nn.Module):
    """A CIFAR-style block whose shortcut zero-pads channels ("option A"), opaque to Torch-Pruning."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4))
        x = F.relu(self.conv3(F.relu(self.conv2(x))) + short)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def option_a(num_classes: int = 10) -> nn.Module:
    return OptionA(num_classes)


TINY = "python:test_generic_models:tiny_net"
FAST = ["torchvision:resnet18", "torchvision:mobilenet_v2", TINY,
        pytest.param("timm:mobilenetv3_small_050", marks=pytest.mark.skipif(
            __import__("importlib").util.find_spec("timm") is None, reason="timm not installed"))]
SLOW = [pytest.param(m, marks=pytest.mark.slow) for m in
        ("torchvision:resnet50", "torchvision:densenet121", "torchvision:efficientnet_b0",
         "torchvision:convnext_tiny")]


def _random_widths(genome: Genome, seed: int = 0) -> Genome:
    rng = random.Random(seed)
    return genome.replace(widths={g: rng.randint(1, w) for g, w in genome.widths.items()})


@pytest.mark.parametrize("model", FAST + SLOW)
def test_round_trip_cost_and_build(model):
    base = base_genome(model, num_classes=10, input_size=SIZE)
    assert base.family == "generic" and base.widths == base.groups.base_widths()
    g = _random_widths(base)
    again = Genome.from_json(g.to_json())
    assert again == g and again.key == g.key and json.loads(g.to_json())["model_args"] \
        == {"kwargs": {}, "fixed": []}
    net = prune_nas.build(g).eval()
    cost = count(g)
    assert sum(p.numel() for p in net.parameters()) == cost.params
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = net(torch.randn(1, 3, SIZE, SIZE))
    assert counter.get_total_flops() == 2 * cost.flops
    assert out.shape == (1, 10)
    assert count(base).params > cost.params


def test_group_names_are_readable_and_the_classifier_is_fixed():
    g = base_genome("torchvision:resnet18", num_classes=10, input_size=SIZE)
    assert list(g.widths)[:3] == ["conv1+2", "layer1.0.conv1", "layer1.1.conv1"]
    assert {"layer2", "layer3", "layer4"} <= set(g.widths) and len(g.widths) == 12
    assert g.groups.kind("layer2") == "stream" and g.groups.kind("layer2.0.conv1") == "conv"
    assert g.groups.stage("layer2") < g.groups.stage("layer3")
    assert not any(name.startswith("fc") for name in g.widths)


def test_fixed_layers_and_option_a_are_reported():
    from prune_nas.core.generic.analysis import analysis_of

    g = base_genome("python:test_generic_models:option_a", num_classes=10, input_size=SIZE)
    notes = analysis_of(g.spec).notes
    assert any("conv3" in n or "conv2" in n or "conv1" in n for n in notes), notes
    assert all("zero-padding" in n for n in notes)
    fixed = base_genome(TINY, num_classes=10, input_size=SIZE, model_args={"kwargs": {"width": 4},
                                                                         "fixed": ["down"]})
    assert "down.0" not in fixed.widths and fixed.model_args["kwargs"] == {"width": 4}
    assert Genome.from_json(fixed.to_json()) == fixed


def test_user_errors_are_one_line(tmp_path, capsys):
    from prune_nas.cli import main

    g = base_genome(TINY, num_classes=10, input_size=SIZE)
    d = json.loads(g.to_json())
    cases = {"unknown": {**d, "widths": {**d["widths"], "nope": 3}},
             "range": {**d, "widths": {**d["widths"], "down.0": 999}},
             "import": {**d, "model": "python:no_such_module_xyz:make"},
             "builtin-args": {**json.loads(base_genome("resnet20").to_json()), "model_args": {"kwargs": {}}}}
    for name, data in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(GenomeError):
            load_genome(path)
        assert main(["genome", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "999" in err and "no_such_module_xyz" in err


def _tp_pruned(net: nn.Module, size: int = SIZE):
    import torch_pruning as tp

    x = torch.randn(1, 3, size, size)
    head = [m for m in net.modules() if isinstance(m, nn.Linear)][-1:]
    pruner = tp.pruner.BasePruner(net, x, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=0.4, ignored_layers=head)
    pruner.step()
    return net


@pytest.mark.parametrize("model", ["torchvision:resnet18", "torchvision:mobilenet_v2", TINY,
                                   pytest.param("torchvision:densenet121", marks=pytest.mark.slow)])
def test_torch_pruning_model_round_trips(model, tmp_path):
    from prune_nas.core.importer import genome_from_state, load_pruned

    base = base_genome(model, num_classes=10, input_size=SIZE)
    torch.manual_seed(0)
    pruned = _tp_pruned(prune_nas.build(base).eval())
    torch.save(pruned.state_dict(), tmp_path / "pruned.pt")
    state = load_pruned(tmp_path / "pruned.pt")
    genome = genome_from_state(base, state, source="pruned.pt")
    assert count(genome).params == sum(p.numel() for p in pruned.parameters()) < count(base).params
    rebuilt = prune_nas.build(genome).eval()
    rebuilt.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), pruned(x), atol=1e-5)


def test_from_model_cli_state_dict_pickle_and_option_a(tmp_path, capsys):
    from prune_nas.cli import main

    base = base_genome(TINY, num_classes=10, input_size=SIZE)
    pruned = _tp_pruned(prune_nas.build(base).eval())
    torch.save(pruned, tmp_path / "module.pt")
    args = ["genome", "from-model", str(tmp_path / "module.pt"), "--base", TINY, "--num-classes", "10",
            "--input-size", str(SIZE), "--out", str(tmp_path / "g.json")]
    assert main(args) == 2 and "--trust-pickle" in capsys.readouterr().err
    assert main(args + ["--trust-pickle"]) == 0
    g = load_genome(tmp_path / "g.json")
    assert g.provenance["weights"]["file"] == "g.pt" and g.widths != base.widths
    # A built-in CIFAR ResNet with option-A shortcuts imports from its state dict (widths from tensor shapes).
    small = base_genome("resnet20", num_classes=10).replace(widths={**base_genome("resnet20").widths,
                                                                    "stage1.block0.conv1": 5})
    torch.save(prune_nas.build(small).state_dict(), tmp_path / "r20.pt")
    assert main(["genome", "from-model", str(tmp_path / "r20.pt"), "--base", "resnet20",
                 "--out", str(tmp_path / "r20.json")]) == 0
    assert load_genome(tmp_path / "r20.json").widths == small.widths
    assert main(["genome", "from-model", str(tmp_path / "r20.pt"), "--base", "resnet56",
                 "--out", str(tmp_path / "x.json")]) == 2


@pytest.fixture(scope="module")
def tiny_trained():
    from prune_nas.training.data import load_dataset

    torch.manual_seed(0)
    base = base_genome(TINY, num_classes=10, input_size=16)
    net = prune_nas.build(base)
    data = load_dataset("synthetic", input_size=16)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _, (x, y) in zip(range(3), data.train_batches(64, torch.Generator().manual_seed(0))):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return base, net.eval(), data


@pytest.mark.parametrize("method", ["uniform", "random", "l1-norm", "slimming", "magnitude", "taylor",
                                    "group-norm"])
def test_every_method_emits_a_valid_genome(method, tiny_trained, tmp_path):
    from prune_nas.methods import get_method

    base, net, data = tiny_trained
    m = get_method(method).for_genome(base)
    m.check(base, ratio=0.5)
    result = m.prune(base, net, ratio=0.5, data=data, seed=0)
    g = Genome.from_json(result.genome.to_json())
    if method == "magnitude":
        assert g.widths == base.widths and result.masks and g.sparsity is not None
    else:
        assert sum(g.widths.values()) < sum(base.widths.values())
        assert count(g).params < count(base).params
    if result.state_dict is not None:
        prune_nas.build(g, masks=False).load_state_dict(result.state_dict, strict=True)


def test_generic_baselines_take_sparsity_and_like(tiny_trained):
    from prune_nas.methods import get_method
    from prune_nas.methods.magnitude import densities

    base, net, _ = tiny_trained
    uniform, random_ = (get_method(n).for_genome(base) for n in ("uniform", "random"))
    # uniform --sparsity: every conv keeps the same fraction of its weights, exactly (random masks).
    sparse = uniform.prune(base, None, ratio=0.75, sparsity=True, seed=1)
    assert sparse.genome.widths == base.widths and sparse.masks
    assert list(densities(sparse.masks).values()) == pytest.approx([0.25] * len(sparse.masks), abs=0.02)
    Genome.from_json(sparse.genome.to_json())
    # uniform --like: uniform widths matched to another genome's params; random --like: its widths.
    other = base.replace(widths={**base.widths, "inner": 3, "down.0": 5})
    matched = uniform.prune(base, None, like=other).genome
    assert abs(count(matched).params / count(other).params - 1) < 0.1
    drawn = random_.prune(base, net, like=other, seed=3)
    assert drawn.genome.widths == other.widths and drawn.genome.provenance["params"]["like"]
    prune_nas.build(drawn.genome, masks=False).load_state_dict(drawn.state_dict, strict=True)
    with pytest.raises(UserError, match="does not combine"):
        uniform.check(base, sparsity=True, like=other)
    with pytest.raises(UserError, match="width groups"):
        random_.check(base, like=other.replace(widths={"x": 1}))


def test_builtin_only_methods_refuse_generic_models():
    from prune_nas.methods import get_method

    base = base_genome(TINY, num_classes=10, input_size=SIZE)
    with pytest.raises(UserError, match="generic"):
        get_method("thinet").for_genome(base)


def test_discover_and_train_a_generic_model(tmp_path):
    from prune_nas.design.discover import discover

    d = discover("l1-norm", model=TINY, dataset="synthetic", ratio=0.5, out_dir=tmp_path, epochs=1,
                 progress=False, log=lambda s: None)
    g = load_genome(d.path)
    assert g.model == TINY and g.provenance["method"] == "l1-norm" and d.weights is not None
    state = torch.load(d.weights, weights_only=True)
    prune_nas.build(g).load_state_dict(state, strict=True)
