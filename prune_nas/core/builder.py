"""Genome -> nn.Module."""

from __future__ import annotations

from torch import nn

from prune_nas.core.arch import get_family
from prune_nas.core.genome import Genome
from prune_nas.core.geometry import structure_of


def build(genome: Genome, masks: bool = True) -> nn.Module:
    """A physically smaller ``nn.Module`` for ``genome``, freshly initialised.

    Sparse genomes get their masks attached (masked weights zero and kept at zero): the exact mask file, or
    for densities alone, masks sampled deterministically from the genome's sparsity seed.
    Conv module paths equal the layer names used by masks, densities and the cost model.

    >>> from prune_nas.core.genome import base_genome
    >>> type(build(base_genome("vgg16"))).__name__
    '_VGGNet'
    """
    model = get_family(genome.family).build(genome.spec, genome.blocks, genome.slot_widths(),
                                            genome.input_size,
                                            genome.in_channels, genome.num_classes, **structure_of(genome))
    if masks and genome.sparsity is not None:
        from prune_nas.core.masks import apply_masks, load_masks, sampled_masks

        # An exact mask file wins; densities alone are realised as seeded masks, so the model trains with
        # exactly the weights the cost model counts.
        exact = genome.sparsity.mask is not None
        apply_masks(model, load_masks(genome) if exact else sampled_masks(genome))
    return model
