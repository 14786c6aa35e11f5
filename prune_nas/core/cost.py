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



def kept_weights(genome: "Genome", ops: list[Op] | None = None) -> dict[str, int]:
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


def count(genome: "Genome") -> Cost:
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
