"""Pruning methods on any model (generic genomes: ``torchvision:``, ``timm:``, ``python:`` references).

Each method scores the channels of every width group of the model's own graph (Torch-Pruning's
DependencyGraph, ``core/generic``), keeps the best ones, and narrows a copy of the trained model with
Torch-Pruning: the result is a genome (the kept widths) plus the inherited weights, as for built-in models.

* ``l1-norm``: a group's channel score is the sum of the L1 norms of the filters that write it; every
  non-stream group (a ResNet's residual streams stay, as in Li et al.) loses ``ratio`` of its channels, or its
  own ratio from ``ratios`` (``{"layer1.0.conv1": 0.3, ...}``).
* ``slimming``: the built-in rule (``slimming.py``): L1 on the scales of the BatchNorms of non-stream groups
  while training, one global ``|gamma|`` threshold (numpy's "lower" quantile) over all their channels.
* ``magnitude``: one global magnitude threshold over all conv weights, an exact mask file; widths unchanged.
* ``uniform`` / ``random``: every group keeps ``1 - ratio`` of its channels, the first / random ones.
* ``taylor`` and ``group-norm``: Torch-Pruning's ``GroupTaylorImportance`` (first-order Taylor, gradients of
  the training loss on a few batches) and ``GroupMagnitudeImportance`` (the L2 norm over the whole coupled
  group), every group losing ``ratio`` of its channels.

The built-in methods of the same names (``get_method("slimming")``) hand generic genomes to these through
``Method.generic``; ``taylor`` and ``group-norm`` exist for generic models only.
"""

from __future__ import annotations

import copy
import random as _random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from prune_nas.core.errors import UserError
from prune_nas.methods._base import REGISTRY, Method, Param, PruneResult, check_ratio, kept_width, register
from prune_nas.methods.baselines import Random, Uniform, like_widths
from prune_nas.methods.slimming import BNScalePenalty, Slimming, global_threshold
from prune_nas.methods.surgery import state_of

if TYPE_CHECKING:
    from prune_nas.core.genome import Genome

DEPGRAPH = "Fang, Ma, Song, Mi & Wang, DepGraph: Towards Any Structural Pruning, CVPR 2023 (Torch-Pruning)"


# ---- shared machinery --------------------------------------------------------------------------------------
def traced_groups(genome: Genome, model: nn.Module) -> dict[str, Any]:
    """Group name -> Torch-Pruning group of ``model`` (the genome's reference model, trained)."""
    from prune_nas.core.generic.analysis import analysis_of, dependency_graph, writers_of

    analysis = analysis_of(genome.spec)
    by_writers = {g.writers: g.name for g in analysis.groups}
    module_name = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(module_name.values())}
    named = dict(model.named_modules())
    x = torch.zeros(1, genome.in_channels, genome.input_size, genome.input_size)
    model.eval()
    dg = dependency_graph(model, x)
    out = {}
    for group in dg.get_all_groups(ignored_layers=[named[n] for n in analysis.fixed],
                                   root_module_types=[nn.modules.conv._ConvNd, nn.Linear]):
        name = by_writers.get(writers_of(group, dg, module_name, order))
        if name is not None:
            out[name] = group
    return out


def writer_l1(group, width: int) -> np.ndarray:
    """Per channel of the group: the summed L1 norm of the conv / linear filters writing it."""
    score = torch.zeros(width, dtype=torch.float64)
    for item in group:
        m, idxs = item.dep.target.module, list(item.idxs)
        if (isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
                and item.dep.handler.__name__.endswith("out_channels")):
            w = m.weight.detach().double()
            norms = w.abs().flatten(1).sum(1) if not getattr(m, "transposed", False) else \
                w.abs().transpose(0, 1).flatten(1).sum(1)
            score[list(item.root_idxs)] += norms[idxs]
    return score.numpy()


def bn_scales(group, width: int, norms: tuple[str, ...], module_name: dict) -> np.ndarray:
    """Per channel of the group: the summed |gamma| of its BatchNorms (the built-in slimming rule)."""
    score = torch.zeros(width, dtype=torch.float64)
    for item in group:
        m = item.dep.target.module
        if module_name.get(m) in norms:
            score[list(item.root_idxs)] += m.weight.detach().double().abs()[list(item.idxs)]
    return score.numpy()


def top(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` largest scores (ties: the lower index), in increasing order."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return sorted(int(i) for i in order[:k])


def finish(method: Method, genome: Genome, model: nn.Module | None, keep: dict[str, list[int]],
           params: dict, notes: list[str]) -> PruneResult:
    """The pruned genome (widths = kept counts) and, given a model, its narrowed copy's weights."""
    from prune_nas.core.generic.build import narrow

    widths = {**genome.widths, **{g: len(k) for g, k in keep.items()}}
    state = None
    if model is not None:
        small_model = narrow(copy.deepcopy(model).cpu(), genome.spec, widths, keep)
        state = state_of(small_model)
    provenance = {**genome.provenance, "method": method.name, "params": params}
    small = genome.replace(widths=widths, name=f"{genome.name or genome.model}-{method.name}",
                           provenance=provenance, sparsity=None)
    return PruneResult(small, state, notes=notes)


def _ratio(ratio) -> float:
    return check_ratio(0.5 if ratio is None else float(ratio))


class GenericMethod(Method):
    families = ("generic",)

    def check(self, genome, ratio=0.5, **kwargs) -> None:
        super().check(genome)
        _ratio(ratio)


def _local(method: Method, genome, model, ratio, score: Callable[[str, Any, int], np.ndarray] | None,
           groups: list[str] | None = None, ratios: dict | None = None, seed: int = 0,
           params: dict | None = None) -> PruneResult:
    """Every group in ``groups`` (default all) keeps ``1 - ratio`` of its channels (or its own ratio), the
    best by ``score(name, tp_group, width)``, the first ones when ``score`` is None, random ones for
    "random"."""
    ratio = _ratio(ratio)
    ratios = dict(ratios or {})
    names = list(genome.groups.names) if groups is None else groups
    unknown = [g for g in ratios if g not in genome.widths]
    if unknown:
        raise UserError(f"{method.name}: unknown width group {unknown[0]!r}; `prune-nas genome info "
                        f"{genome.model}` lists them")
    traced = traced_groups(genome, model) if model is not None and score is not None else {}
    rng, keep, notes = _random.Random(seed), {}, []
    for g in names:
        width = int(genome.widths[g])
        k = kept_width(g, width, check_ratio(float(ratios.get(g, ratio)), f"ratio of {g}"), notes)
        if score is None:
            keep[g] = list(range(k))
        elif score == "random":
            keep[g] = sorted(rng.sample(range(width), k))
        else:
            keep[g] = top(score(g, traced[g], width), k)
    return finish(method, genome, model, keep, params or {"ratio": ratio}, notes)


# ---- the methods ------------------------------------------------------------------------------------------
class GenericUniform(Uniform):
    """The built-in's parameters and checks; with ``sparsity`` or ``like`` its own arithmetic (it holds for
    any model), with a ratio the model's width groups."""

    families = ("generic",)

    def prune(self, genome, model=None, *, ratio=0.5, sparsity=False, like=None, seed=0, **kw) -> PruneResult:
        if sparsity or like is not None:
            return super().prune(genome, model, ratio=ratio, sparsity=sparsity, like=like, seed=seed, **kw)
        self.check(genome, ratio=ratio)
        return _local(self, genome, None, ratio, None)


class GenericRandom(Random):
    """The built-in's parameters and checks; random channels chosen in the model's width groups."""

    families = ("generic",)

    def prune(self, genome, model=None, *, ratio=0.5, like=None, seed=0, **_) -> PruneResult:
        self.check(genome, ratio=ratio, like=like)
        if like is None:
            return _local(self, genome, model, ratio, "random", seed=seed,
                          params={"ratio": _ratio(ratio), "seed": seed})
        rng, widths = _random.Random(seed), like_widths(genome, like)
        keep = {g: sorted(rng.sample(range(int(genome.widths[g])), int(widths[g])))
                for g in genome.groups.names}
        return finish(self, genome, model, keep, {"like": str(like), "seed": seed},
                      [f"random channels at the widths of {like} (seed {seed})"])


class GenericL1Norm(GenericMethod):
    name = "l1-norm"
    summary = REGISTRY["l1-norm"].summary
    citation = REGISTRY["l1-norm"].citation
    target = "predefined"
    params = (Param("ratio", 0.5, "fraction of channels removed from every non-stream group"),
              Param("ratios", None, "per-group ratios overriding ratio, e.g. {\"layer1.0.conv1\": 0.3}"),)

    def prune(self, genome, model, *, ratio=0.5, ratios=None, **_) -> PruneResult:
        if model is None:
            raise ValueError("l1-norm prunes a trained model")
        if ratios is not None and not isinstance(ratios, dict):
            raise UserError("l1-norm: ratios must be a JSON object, e.g. --param 'ratios={\"conv1\": 0.3}'")
        groups = genome.groups
        names = [g for g in groups.names if groups.kind(g) != "stream" or g in (ratios or {})]
        return _local(self, genome, model, ratio, lambda g, tg, w: writer_l1(tg, w), names, ratios,
                      params={"ratio": _ratio(ratio), **({"ratios": ratios} if ratios else {})})


class GenericSlimming(Slimming):
    families = ("generic",)

    def check(self, genome, ratio=0.5, **kwargs) -> None:
        Method.check(self, genome)
        _ratio(ratio)
        if not prunable_norms(genome):
            raise UserError(f"slimming: {genome.model} has no BatchNorm in a prunable width group")

    def training_callbacks(self, model, *, genome=None, **kwargs) -> list:
        modules = [n for names in prunable_norms(genome).values() for n in names]
        return [BNScalePenalty(modules, self.training_record(genome, **kwargs)["s"])]

    def prune(self, genome, model, *, ratio=0.5, s=None, **_) -> PruneResult:
        ratio = _ratio(ratio)
        if model is None:
            raise ValueError("slimming prunes a trained model")
        norms = prunable_norms(genome)
        traced = traced_groups(genome, model)
        module_name = {m: n for n, m in model.named_modules()}
        scores = {g: bn_scales(traced[g], int(genome.widths[g]), names, module_name)
                  for g, names in norms.items()}
        values = np.concatenate(list(scores.values()))
        threshold = global_threshold(values, ratio)
        keep, notes = {}, []
        for g, sc in scores.items():
            pos = np.flatnonzero(sc > threshold).tolist()
            if not pos:
                pos = [int(np.argmax(sc))]
                notes.append(f"{g}: kept 1 of {len(sc)} channels "
                             "(every |gamma| is at or below the threshold)")
            keep[g] = pos
        removed = len(values) - sum(len(k) for k in keep.values())
        notes.insert(0, f"global |gamma| threshold {threshold:.4g} over {len(values)} channels in "
                        f"{len(scores)} groups; removed {removed} ({removed / len(values):.1%})")
        result = finish(self, genome, model, keep, {"ratio": ratio, **({"s": s} if s is not None else {})},
                        notes)
        result.genome = result.genome.replace(provenance={**result.genome.provenance, "threshold": threshold})
        return result


def prunable_norms(genome) -> dict[str, list[str]]:
    """Width group -> its BatchNorms that slimming penalises and reads: those of non-stream groups."""
    from prune_nas.core.generic.analysis import analysis_of

    return {g.name: list(g.norms) for g in analysis_of(genome.spec).groups if g.kind != "stream" and g.norms}


class GenericMagnitude(GenericMethod):
    name = "magnitude"
    summary = REGISTRY["magnitude"].summary
    citation = REGISTRY["magnitude"].citation
    target = "automatic"
    params = (Param("ratio", 0.5,
                    "sparsity: fraction of all conv weights removed (exactly round(ratio * N))"),)

    def prune(self, genome, model, *, ratio=0.5, **_) -> PruneResult:
        from prune_nas.core.genome import Sparsity
        from prune_nas.methods.magnitude import densities, masked_state

        ratio = _ratio(ratio)
        if model is None:
            raise ValueError("magnitude pruning needs trained weights")
        masks, new_state, notes = masked_state(genome, model, ratio)
        provenance = {**genome.provenance, "method": self.name, "params": {"ratio": ratio}}
        small = genome.replace(name=f"{genome.name or genome.model}-{self.name}",
                               sparsity=Sparsity(density=densities(masks)), provenance=provenance)
        return PruneResult(small, new_state, masks=masks, notes=notes)


class _TorchPruningImportance(GenericMethod):
    target = "predefined"
    params = (Param("ratio", 0.5, "fraction of channels removed from every group"),)

    def importance(self, genome, model, data, seed: int):
        raise NotImplementedError

    def prune(self, genome, model, *, ratio=0.5, data=None, seed=0, **_) -> PruneResult:
        if model is None:
            raise ValueError(f"{self.name} prunes a trained model")
        model = copy.deepcopy(model).cpu()
        imp = self.importance(genome, model, data, seed)
        return _local(self, genome, model, ratio,
                      lambda g, tg, w: imp(tg).detach().double().numpy(), params={"ratio": _ratio(ratio)})


@register
class Taylor(_TorchPruningImportance):
    name = "taylor"
    summary = ("first-order Taylor importance of each coupled channel group (loss gradients x weights on a "
               "few training batches), every group pruned by ratio")
    citation = ("Molchanov, Mallya, Tyree, Frosio & Kautz, Importance Estimation for Neural Network "
                "Pruning, CVPR 2019; " + DEPGRAPH)
    params = _TorchPruningImportance.params + (Param("batches", 4,
                                                     "training batches the gradients come from"),)

    def prune(self, genome, model, *, ratio=0.5, data=None, seed=0, batches=4, **kw) -> PruneResult:
        self._batches = int(batches)
        return super().prune(genome, model, ratio=ratio, data=data, seed=seed, **kw)

    def importance(self, genome, model, data, seed):
        import torch_pruning as tp

        if data is None:
            raise UserError("taylor needs training data (or images) for its gradients")
        model.eval()  # BN statistics stay as trained; gradients only
        model.zero_grad()
        if isinstance(data, torch.Tensor):  # images without labels: the model's own predictions stand in
            with torch.no_grad():
                batches = [(data, model(data).argmax(1))]
        else:
            batches = data.train_batches(64, torch.Generator().manual_seed(seed), crop_padding=0, flip=False)
        for _, (x, y) in zip(range(max(1, getattr(self, "_batches", 4))), batches):
            nn.functional.cross_entropy(model(x), y).backward()
        return tp.importance.GroupTaylorImportance()


@register
class GroupNorm(_TorchPruningImportance):
    name = "group-norm"
    summary = "L2 norm over every parameter of a coupled channel group (the whole group scored together), " \
              "every group pruned by ratio"
    citation = DEPGRAPH
    needs_training = True

    def importance(self, genome, model, data, seed):
        import torch_pruning as tp

        return tp.importance.GroupMagnitudeImportance(p=2)


# The built-in methods hand generic genomes to these (``Method.generic``).
for _cls in (GenericUniform, GenericRandom, GenericL1Norm, GenericSlimming, GenericMagnitude):
    REGISTRY[_cls.name].generic = _cls()
