"""Network Slimming (Liu et al., ICCV 2017): L1 on BatchNorm scales during training, then one global threshold.

Training: every *prunable* BN scale gamma gets ``s * sign(gamma)`` added to its gradient after backward
(``s = 1e-4`` for VGG, ``1e-5`` for ResNet, PreResNet and DenseNet, as in the paper).

Pruning: ONE threshold over the |gamma| of all prunable BNs together, the ``ratio`` quantile with numpy's
``"lower"`` convention: ``np.quantile(|gamma|, ratio, method="lower")``, i.e. the value at index
``floor((N - 1) * ratio)`` of the N sorted scales. A channel is kept when ``|gamma| > threshold``, so with
distinct scales exactly ``floor((N - 1) * ratio) + 1`` channels go (the reference code takes the value at
``int(N * ratio)``, one channel more). A group left with no channel keeps its largest-|gamma| channel, and the
result says so in ``notes``.

Which BNs are prunable (the penalty and the threshold see the same set): a BN whose channels are a width
group of kind ``conv`` or ``select``, never one of kind ``stream``. Per family:

* VGG: every conv's BN (``features.bn{i}``); not the BN1d of the L1-norm paper's MLP head.
* ResNet (post-activation): the BNs of the inner convs (``bn1``; ``bn1``, ``bn2`` in bottlenecks) and the stem
  BN where the stem is its own group (ResNet-50); never ``bn2``/``bn3`` or shortcut BNs, which write into the
  residual stream.
* PreResNet: each block's input BN ``bn1`` (a channel *selection* of the residual stream, see
  ``arch/preresnet.py``), the inner ``bn2``, ``bn3``, and the final ``head.bn`` (a selection too).
* DenseNet: each layer's and transition's input BN ``bn1`` (selections of the concatenation), BC's ``bn2``,
  and ``head.bn``.

A group normalised by more than one BN would add their |gamma| (none of the built-in families has one).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._base import Method, Param, PruneResult, check_ratio, register
from .surgery import bn_ops, channel_ids, shrink, state_of

S_DEFAULT = {"vgg": 1e-4}
S_OTHER = 1e-5


def default_s(family: str) -> float:
    return S_DEFAULT.get(family, S_OTHER)


def prunable_bns(genome) -> dict[str, list[str]]:
    """Width group -> module paths of the BNs slimming reads and penalises for it (see the module doc)."""
    groups, out = genome.groups, {}
    for g in groups.names:
        if groups.kind(g) == "stream":
            continue
        names = [op.name for op in bn_ops(genome, g)]
        if names:
            out[g] = names
    return out


class BNScalePenalty:
    """Training callback: add ``s * sign(gamma)`` to the gradient of every prunable BN scale."""

    def __init__(self, modules: list[str], s: float):
        self.modules, self.s = list(modules), float(s)
        self._cache: tuple[int, list[nn.Parameter]] | None = None

    def _weights(self, model: nn.Module) -> list[nn.Parameter]:
        if self._cache is None or self._cache[0] != id(model):
            self._cache = (id(model), [model.get_submodule(n).weight for n in self.modules])
        return self._cache[1]

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        for w in self._weights(model):
            if w.grad is not None:
                w.grad.add_(torch.sign(w), alpha=self.s)


def global_threshold(values: np.ndarray, ratio: float) -> float:
    """The ``ratio`` quantile of ``values`` with numpy's "lower" convention (a value that occurs)."""
    return float(np.quantile(np.asarray(values, dtype=np.float64), ratio, method="lower"))


@register
class Slimming(Method):
    name = "slimming"
    summary = "L1 penalty on BN scales while training, then one global |gamma| threshold over all prunable BNs"
    citation = "Liu, Li, Shen, Huang, Yan & Zhang, Learning Efficient Convolutional Networks through Network " \
               "Slimming, ICCV 2017"
    target = "automatic"
    families = ("vgg", "resnet", "preresnet", "densenet")
    params = (
        Param("ratio", 0.5, "fraction of all prunable channels removed (the global |gamma| quantile)"),
        Param("s", None, "L1 weight on BN scales during training (default 1e-4 for VGG, 1e-5 otherwise)"),
    )
    training_params = ("s",)

    def check(self, genome, ratio=0.5, **kwargs) -> None:
        super().check(genome)
        check_ratio(ratio if ratio is not None else 0.5)

    def regularizer(self, genome, s=None, **_) -> dict:
        """What the training phase depends on (part of the trained model's cache key)."""
        return {"l1_bn_scales": s if s is not None else default_s(genome.family)}

    def training_callbacks(self, model: nn.Module, *, genome=None, s=None, **_) -> list:
        if genome is None:
            raise ValueError("slimming's training callback needs the genome (which BNs are prunable)")
        s = default_s(genome.family) if s is None else float(s)
        modules = [n for names in prunable_bns(genome).values() for n in names]
        return [BNScalePenalty(modules, s)]

    def prune(self, genome, model, *, ratio=0.5, s=None, **_) -> PruneResult:
        ratio = 0.5 if ratio is None else float(ratio)
        self.check(genome, ratio=ratio)
        if model is None:
            raise ValueError("slimming prunes a trained model")
        state = state_of(model)
        scores = {g: sum(state[f"{n}.weight"].abs().double().numpy() for n in names)
                  for g, names in prunable_bns(genome).items()}
        values = np.concatenate(list(scores.values()))
        threshold = global_threshold(values, ratio)
        keep, notes = {}, []
        for g, sc in scores.items():
            pos = np.flatnonzero(sc > threshold)
            if pos.size == 0:
                pos = np.array([int(np.argmax(sc))])
                notes.append(f"{g}: kept 1 of {len(sc)} channels (every |gamma| is at or below the threshold)")
            keep[g] = channel_ids(genome, model, g)[pos]
        small, new_state = shrink(genome, state, keep)
        removed = sum(len(sc) for sc in scores.values()) - sum(len(k) for k in keep.values())
        notes.insert(0, f"global |gamma| threshold {threshold:.4g} over {len(values)} channels in "
                        f"{len(scores)} groups; removed {removed} ({removed / len(values):.1%})")
        params = {"ratio": ratio, "s": s if s is not None else default_s(genome.family)}
        provenance = {**small.provenance, "method": self.name, "params": params, "threshold": threshold}
        small = small.replace(name=f"{genome.name or genome.model}-{self.name}", provenance=provenance)
        return PruneResult(small, new_state, notes=notes)
