"""Layer geometry of a genome: the ``Op`` list its family describes at the genome's widths.

One layer below the genome, the cost model and the masks, which all read it; it needs only the family
registry, so nothing here imports the genome at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prune_nas.core.arch import get_family
from prune_nas.core.arch._base import Op

if TYPE_CHECKING:
    from prune_nas.core.genome import Genome


def ops_of(genome: "Genome") -> list[Op]:
    """Every conv / linear / BN layer of ``genome`` with its channels, kernel and output size."""
    family = get_family(genome.family)
    return family.ops(genome.spec, genome.blocks, genome.slot_widths(), genome.input_size,
                      genome.in_channels, genome.num_classes, **structure_of(genome))


def structure_of(genome: Genome) -> dict:
    """What a family's ``ops`` and ``build`` take beyond blocks and widths: ``shortcut_entries`` when set."""
    return {"shortcut_entries": genome.shortcut_entries} if genome.shortcut_entries else {}


def conv_ops(genome: "Genome") -> dict[str, Op]:
    """Conv ops of a genome by layer name."""
    return {op.name: op for op in ops_of(genome) if op.kind == "conv"}
