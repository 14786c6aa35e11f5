"""Soft Filter Pruning (He, Kang, Dong, Fu & Yang, IJCAI 2018): zero the weakest filters after every epoch,
let them train on, and remove them at the end.

Training (the large model's, through the one training loop's callbacks): at the end of every epoch, in every
pruned layer the filters with the smallest L2 norm (``||W_f||_2`` over the filter's ``cin x k x k`` weights)
are set to zero. They stay trainable ("soft"): the next epoch's gradient updates them like any other filter,
so a filter zeroed once can grow back and another one be zeroed in its place. The BN that follows a zeroed
filter is left as it is, and so is the optimizer's momentum, as in the reference code (``Mask.do_mask`` of
its ``pruning_cifar10_resnet.py``).

The reference also zeroes once before training. That is left out here: at initialisation every BN shift is 0,
so a zeroed filter's BN outputs exactly 0 and the ReLU after it passes no gradient; the filter (and its
shift) would stay at zero for good, and the method would prune by the norms of the random initial weights.
(After an epoch the same holds for a zeroed filter whose BN shift is <= 0: SFP on conv-BN-ReLU layers only
revives filters whose shift went positive.)

Pruning ("hard"): the trained model's filters are ranked by L2 norm again and the same number is removed by
channel surgery (``methods.surgery.shrink``), which emits the smaller genome and its inherited weights. With
the last epoch's zeroing in place the removed filters are exactly the ones zeroed at the end of training.

How many: ``ratio`` is the fraction of filters *removed* from each pruned layer, ``floor(n * ratio)`` of
``n`` (at least one filter is kept). The reference's ``--rate`` is the fraction *kept*, and it zeroes
``int(n * (1 - rate))`` filters, so ``--rate 0.7`` (its README's ResNet-56 command) is ``ratio=0.3`` here,
the default.

Which layers: the reference zeroes filters of every conv, the stem and the convs that write into a
residual stream included; that is a mask, not a smaller architecture, since a residual stream's channels
must line up across blocks. Here, as for L1-norm (``methods.l1norm.prunable_groups``), a ResNet prunes the
inner convs of its residual blocks (``conv1`` of a basic block, ``conv1``/``conv2`` of a bottleneck) and
keeps the residual width, so the result is a real, narrower architecture; a VGG prunes every conv.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from prune_nas.methods._base import Method, Param, PruneResult, check_ratio, register
from prune_nas.methods.l1norm import prunable_groups
from prune_nas.methods.surgery import keep_largest, producers, shrink, state_of

DEFAULT_RATIO = 0.3  # the reference's --rate 0.7 (kept) for CIFAR ResNets


def pruned_count(width: int, ratio: float) -> int:
    """Filters removed from a layer of ``width``: ``floor(width * ratio)``, leaving at least one.
    The epsilon keeps ``10 * 0.3`` at 3 despite binary fractions.

    >>> pruned_count(16, 0.3), pruned_count(10, 0.3), pruned_count(1, 0.9)
    (4, 3, 0)
    """
    return min(int(width * ratio + 1e-9), width - 1)


def layer_convs(genome) -> dict[str, list[str]]:
    """Pruned width group -> module paths of the convs producing its channels."""
    return {g: [op.name for op in producers(genome, g)] for g in prunable_groups(genome)}


def filter_l2(weights: list[torch.Tensor]) -> np.ndarray:
    """L2 norm of each output filter, over the filters of every conv producing the group's channels."""
    total = None
    for w in weights:
        sq = w.detach().double().reshape(w.shape[0], -1).pow(2).sum(1)
        total = sq if total is None else total + sq
    return total.sqrt().cpu().numpy()


class SoftFilterZeroing:
    """Training callback: zero the ``floor(n * ratio)`` smallest-L2 filters of every pruned layer at the end
    of every epoch. ``zeroed`` holds the last choice: group -> indices of the zeroed filters."""

    def __init__(self, convs: dict[str, list[str]], ratio: float):
        self.convs, self.ratio = dict(convs), float(ratio)
        self.zeroed: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        for group, names in self.convs.items():
            weights = [model.get_submodule(n).weight for n in names]
            n = weights[0].shape[0]
            k = pruned_count(n, self.ratio)
            keep = keep_largest(filter_l2(weights), n - k)
            drop = np.setdiff1d(np.arange(n), keep)
            self.zeroed[group] = drop
            if drop.size:
                idx = torch.as_tensor(drop, dtype=torch.long, device=weights[0].device)
                for w in weights:
                    w.index_fill_(0, idx, 0.0)

    def on_epoch_end(self, model: nn.Module, epoch: int, metrics: dict) -> None:
        self.apply(model)


@register
class SoftFilterPruning(Method):
    name = "sfp"
    summary = "soft filter pruning: after every training epoch zero the smallest-L2 filters of each pruned " \
              "layer (they keep training), then remove them; residual blocks prune only their inner convs"
    citation = "He, Kang, Dong, Fu & Yang, Soft Filter Pruning for Accelerating Deep Convolutional Neural " \
               "Networks, IJCAI 2018"
    target = "predefined"
    families = ("resnet", "vgg")
    params = (Param("ratio", DEFAULT_RATIO,
                    "fraction of filters removed from every pruned layer, floor(n * ratio) (the "
                    "reference's --rate is the kept fraction: 1 - ratio)"),)
    regularizes_training = True  # the large model trains with the per-epoch zeroing callback
    training_params = ("ratio",)

    def check(self, genome, ratio=DEFAULT_RATIO, **kwargs) -> None:
        super().check(genome)
        check_ratio(DEFAULT_RATIO if ratio is None else ratio)

    def regularizer(self, genome, *, ratio=DEFAULT_RATIO, **_) -> dict:
        """What the training phase depends on (the large model's cache key): the zeroing ratio."""
        return {"soft_filter_ratio": float(DEFAULT_RATIO if ratio is None else ratio), "criterion": "l2"}

    def training_callbacks(self, model: nn.Module, *, genome=None, ratio=DEFAULT_RATIO, **_) -> list:
        """The zeroing callback (it zeroes nothing before training: see the module doc)."""
        if genome is None:
            raise ValueError("sfp's training callback needs the genome (which layers are pruned)")
        ratio = DEFAULT_RATIO if ratio is None else float(ratio)
        check_ratio(ratio)
        return [SoftFilterZeroing(layer_convs(genome), ratio)]

    def prune(self, genome, model, *, ratio=DEFAULT_RATIO, **_) -> PruneResult:
        ratio = DEFAULT_RATIO if ratio is None else float(ratio)
        self.check(genome, ratio=ratio)
        if model is None:
            raise ValueError("sfp prunes the model it trained with soft filter zeroing")
        state = state_of(model)
        keep, notes = {}, []
        for group, names in layer_convs(genome).items():
            n = genome.widths[group]
            k = pruned_count(n, ratio)
            if k == 0:
                notes.append(f"{group}: kept all {n} channels (ratio {ratio:g} removes none)")
                continue
            keep[group] = keep_largest(filter_l2([state[f"{c}.weight"] for c in names]), n - k)
        small, new_state = shrink(genome, state, keep)
        provenance = {**small.provenance, "method": self.name, "params": {"ratio": ratio}}
        small = small.replace(name=f"{genome.name or genome.model}-{self.name}", provenance=provenance)
        return PruneResult(small, new_state, notes=notes)
