"""Params and FLOPs of a genome, computed from its layer geometry without building a model.

Convention (one, documented, tested against torch.utils.flop_counter):
* ``flops`` are multiply-accumulates (MACs) of conv and linear layers for one image at the genome's input
  size. BatchNorm, activations, pooling, residual adds and channel selections are not counted.
  ``torch.utils.flop_counter.FlopCounterMode`` reports 2 x this number.
* ``params`` are all learnable parameters (conv and linear weights and biases, BN scales and shifts), exactly
  ``sum(p.numel() for p in build(genome).parameters())`` for a dense genome.
* Sparse genomes count only kept conv weights, in params and in FLOPs (a kept weight costs one MAC per
  output pixel). Densities round to the nearest whole weight per layer; a mask file is counted exactly.
* Scratch-B epochs use ``int(epochs * flops(reference) / flops(candidate))`` on these numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prune_nas.core.arch._base import Op
from prune_nas.core.geometry import ops_of
from prune_nas.core.masks import load_masks

if TYPE_CHECKING:
    from prune_nas.core.genome import Genome


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int


def match_factor(cost_at: Callable[[float], float], target: float, lo: float, hi: float,
                 iters: int = 50) -> float:
    """The x in [lo, hi] whose ``cost_at(x)`` is closest to ``target``; ``cost_at`` must never decrease in x.

    Costs of genomes are step functions of a scale factor (widths and weights are whole numbers), so the
    search is a bisection: ``hi`` if even it costs at most ``target``, ``lo`` if even it costs at least
    ``target``, else ``iters`` halvings keep ``cost_at(a) <= target < cost_at(b)`` and the closer of a and b
    is returned (a, the smaller, on a tie). The one cost-matching search of the package: matched baselines,
    random architectures and guided pruning all use it.

    >>> x = match_factor(lambda x: int(10 * x), 4.4, 0.0, 1.0)
    >>> int(10 * x), round(x, 9)
    (4, 0.5)
    >>> match_factor(lambda x: int(10 * x), 4.6, 0.0, 1.0)
    0.5
    """
    cost_hi = cost_at(hi)
    if cost_hi <= target:
        return hi
    cost_lo = cost_at(lo)
    if cost_lo >= target:
        return lo
    for _ in range(iters):
        mid = (lo + hi) / 2
        cost = cost_at(mid)
        if cost <= target:
            lo, cost_lo = mid, cost
        else:
            hi, cost_hi = mid, cost
    return lo if target - cost_lo <= cost_hi - target else hi


def kept_weights(genome: Genome, ops: list[Op] | None = None) -> dict[str, int]:
    """Kept weights per conv layer: exact from a mask file, else rounded from densities."""
    ops = ops if ops is not None else ops_of(genome)
    kept = {op.name: op.weight_count for op in ops if op.kind == "conv"}
    sp = genome.sparsity
    if sp is None:
        return kept
    if sp.mask is not None:
        for name, mask in load_masks(genome).items():
            kept[name] = int(mask.sum())
        return kept
    for name, density in sp.density.items():
        kept[name] = int(round(density * kept[name]))
    return kept


def count(genome: Genome) -> Cost:
    """Params and FLOPs (MACs) of ``genome``.

    >>> from prune_nas.core.genome import base_genome
    >>> count(base_genome("resnet56")).params
    853018
    """
    if genome.family == "generic":  # exact from the model's cached analysis (core/generic/cost.py)
        from prune_nas.core.generic.cost import count_generic

        return Cost(*count_generic(genome, kept_weights(genome) if genome.sparsity else None))
    ops = ops_of(genome)
    kept = kept_weights(genome, ops) if genome.sparsity else None
    params = flops = 0
    for op in ops:
        if op.kind == "bn":
            params += 2 * op.cout
            continue
        w = kept[op.name] if kept is not None and op.kind == "conv" else op.weight_count
        params += w + (op.cout if op.bias else 0)
        flops += w * op.hw * op.hw
    return Cost(params, flops)
