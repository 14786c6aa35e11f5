"""prune-nas: network pruning as neural architecture search.

>>> import prune_nas
>>> g = prune_nas.library_genome("vgg16-a")
>>> model = prune_nas.build(g)
"""

from __future__ import annotations

from prune_nas.core.errors import GenomeError, UserError
from prune_nas.core.genome import Genome, base_genome, load_genome, save_genome
from prune_nas.core.version import __version__


def build(genome, masks: bool = True):
    """Build an ``nn.Module`` from a genome (imports torch on first use)."""
    from prune_nas.core.builder import build as _build

    return _build(genome, masks=masks)


def library_genome(name: str) -> Genome:
    from prune_nas.core.library import get

    return get(name)


__all__ = ["Genome", "GenomeError", "UserError", "base_genome", "build", "library_genome", "load_genome",
           "save_genome", "__version__"]
