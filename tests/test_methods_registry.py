"""The registry: every method declares what `prune-nas methods` shows, and every method x family it supports
returns a genome that validates and builds (parametrized over the registry, so a new method is tested too)."""

import pytest
import torch

from prune_nas import base_genome, build
from prune_nas.core.errors import UserError
from prune_nas.core.genome import Genome
from prune_nas.methods import Method, get_method, list_methods
from prune_nas.methods._base import Param

TINY = {
    "vgg": ("vgg11", {"width_mult": 0.125, "input_size": 16}),
    "resnet": ("resnet20", {"width_mult": 0.25, "input_size": 8}),
    "preresnet": ("preresnet110", {"width_mult": 0.25, "input_size": 8, "blocks": (2, 2, 2)}),
    "densenet": ("densenet40", {"width_mult": 0.5, "input_size": 8}),
    "generic": ("torchvision:resnet18", {"width_mult": 0.125, "input_size": 32, "num_classes": 10}),
}
# The activation-based methods sample and solve per layer (10-30 s a case on two shared cores): ThiNet runs on
# its first family by default, the rest with `-m slow`; their own test files cover each family's criterion.
SLOW = {"regression": 0, "thinet": 1}  # method -> how many of its families run by default


def _marks(method: str, i: int) -> list:
    return [pytest.mark.slow] if i >= SLOW.get(method, 99) else []


CASES = [pytest.param(m.name, fam, marks=_marks(m.name, i)) for m in list_methods()
         for i, fam in enumerate(m.families)]


def test_every_method_declares_itself():
    names = [m.name for m in list_methods()]
    assert {"l1-norm", "slimming", "magnitude", "uniform", "random"} <= set(names)
    for m in list_methods():
        assert isinstance(m, Method) and m.summary and m.citation and m.families
        assert m.target in ("predefined", "automatic")
        assert len({p.name for p in m.params}) == len(m.params)
    assert get_method("slimming").target == "automatic" and get_method("l1-norm").target == "predefined"
    assert not get_method("uniform").needs_training and get_method("magnitude").needs_training


def test_training_hooks_are_declared_with_plain_training_as_the_default():
    model_name, kw = TINY["resnet"]
    g = base_genome(model_name, **kw)
    assert {m.name for m in list_methods() if m.regularizes_training} == {"sfp", "slimming", "sss"}
    assert {m.name for m in list_methods() if not m.structured} == {"magnitude"}
    for m in list_methods():
        if not m.regularizes_training:
            assert m.regularizer(g, ratio=0.5) is None and m.training_record(g, ratio=0.5) is None
            assert m.training_callbacks(build(g), genome=g) == []
    assert get_method("sss").regularizer(g, penalty=0.2, threshold=0.1) == {"params": {"penalty": 0.2}}

    class Penalised(Method):  # no training_params: every parameter is part of the cache key
        name = "penalised"
        params = (Param("a", 1, ""), Param("b", 2, ""))
        regularizes_training = True

    reg = Penalised().regularizer(g, a=1, b=3, protocol=None, steps_per_epoch=10)
    assert reg == {"params": {"a": 1, "b": 3}}


def test_unknown_method_suggests_a_name():
    with pytest.raises(UserError, match="did you mean slimming"):
        get_method("slimmming")


@pytest.mark.parametrize("method, family", CASES)
def test_method_x_family_returns_a_valid_buildable_genome(method, family):
    model_name, kw = TINY[family]
    g = base_genome(model_name, **kw)
    m = get_method(method)
    torch.manual_seed(0)
    model = build(g).eval() if m.needs_training else None
    if model is not None and m.regularizes_training:
        m.training_callbacks(model, genome=g, lr=0.1)  # may attach parameters (SSS block scales)
    data = torch.randn(32, 3, g.input_size, g.input_size)
    # small samples keep the activation-based methods fast; their own tests check the criteria
    small_run = {"ratio": 0.5, "samples": 100, "images": 8, "positions": 200}
    kwargs = {k: v for k, v in small_run.items() if k in {p.name for p in m.params}}
    res = m.prune(g, model, data=data, seed=0, **kwargs)
    genome = res.genome
    if res.masks is None:  # sparse genomes are checked with their mask file in test_methods_magnitude
        again = Genome.from_dict(genome.to_dict())
        assert again == genome
    assert genome.model == g.model and min(genome.widths.values()) >= 1
    assert genome.provenance["method"] == method
    small = build(genome, masks=False)
    if res.state_dict is not None:
        missing, unexpected = small.load_state_dict(res.state_dict, strict=False)
        assert not unexpected and not [k for k in missing if not k.endswith("weight_mask")]
    assert small.eval()(data[:2]).shape == (2, g.num_classes)


@pytest.mark.parametrize("method", [m.name for m in list_methods()])
def test_a_family_outside_the_list_is_a_user_error(method):
    m = get_method(method)
    other = [f for f in TINY if f not in m.families]
    if not other:
        pytest.skip(f"{method} supports every family")
    model_name, kw = TINY[other[0]]
    with pytest.raises(UserError, match="does not apply"):
        m.check(base_genome(model_name, **kw))
