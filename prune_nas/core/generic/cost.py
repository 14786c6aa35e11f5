"""Params and MACs of a generic genome from its cached analysis, without building a model.

Same definition as the built-in families (``core/cost.py``): ``params`` are all learnable parameters of the
built model; ``flops`` are the multiply-accumulates of conv and linear layers (and matmuls) for one image,
``FlopCounterMode`` / 2. A conv or linear weight of ``n`` entries applied at ``p`` output positions costs
``n * p`` MACs, and each parameter's shape follows from the group widths (``analysis.param_shapes``), so the
count is exact. Models whose MACs are not all conv / linear (attention matmuls) are counted by building the
narrowed model on the meta device instead. An exact mask file counts only kept conv weights, as built-ins do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from prune_nas.core.generic.analysis import Analysis, param_shapes

if TYPE_CHECKING:
    from prune_nas.core.genome import Genome


def analytic(analysis: Analysis, widths: Mapping[str, int],
             kept: Mapping[str, int] | None = None) -> tuple[int, int]:
    """(params, MACs) at ``widths``; ``kept``: conv layer -> kept weights (sparse genomes)."""
    shapes = param_shapes(analysis, widths)
    params = flops = 0
    for p in analysis.params:
        n = math.prod(shapes[p.name])
        if kept is not None and p.layer == "conv" and p.name[:-len(".weight")] in kept:
            n = kept[p.name[:-len(".weight")]]
        params += n
        if p.layer:
            flops += n * p.positions
    return params, flops


def count_generic(genome: Genome, kept: Mapping[str, int] | None = None) -> tuple[int, int]:
    """(params, MACs) of a generic genome: analytic where that is exact for the model, else measured."""
    from prune_nas.core.generic.analysis import analysis_of

    analysis = analysis_of(genome.spec)
    if analysis.flops_exact:
        return analytic(analysis, genome.widths, kept)
    return measured(genome)


def measured(genome: Genome) -> tuple[int, int]:
    """(params, MACs) of the narrowed model built on the meta device and run under FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from prune_nas.core.generic.build import narrowed

    net = narrowed(genome.spec, genome.widths, device="meta")
    x = torch.empty(1, genome.in_channels, genome.input_size, genome.input_size, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return sum(p.numel() for p in net.parameters()), counter.get_total_flops() // 2
