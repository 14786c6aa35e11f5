"""What a pruning method is here: an architecture generator.

A method takes a (usually trained) large model and its genome and returns a smaller ``Genome`` plus,
optionally, the inherited weights (for the fine-tuning baseline) and exact masks (for non-structured pruning).
Methods never emit invalid genomes: widths are chosen per width group of the coupling graph, and no group is
ever emptied (at least one channel is kept, and the result says so in ``notes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prune_nas.core.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from prune_nas.core.genome import Genome


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    help: str


@dataclass
class PruneResult:
    genome: Genome
    state_dict: dict | None = None  # inherited weights for the pruned model (fine-tune baseline)
    masks: dict[str, np.ndarray] | None = None  # exact masks (non-structured pruning)
    notes: list[str] = field(default_factory=list)  # e.g. "conv13: kept 1 channel (layer would be empty)"


class Method:
    """Base class. Subclasses set the class attributes and implement ``prune``.

    A method whose large model trains its own way (a sparsity penalty: slimming, SSS) sets
    ``regularizes_training`` and overrides ``training_callbacks``; the discover pipeline keys its cache of
    trained large models on ``regularizer`` and records ``training_record`` in the genome's provenance. The
    defaults describe plain training. The training hooks take the method's parameters as keywords, plus the
    schedule when it is known: ``protocol`` (a ``training.protocol.Protocol``) and the data's
    ``steps_per_epoch``.
    """

    name: str = ""
    summary: str = ""
    citation: str = ""
    target: str = "predefined"  # "predefined" (user fixes widths) or "automatic" (the method decides)
    families: tuple[str, ...] = ()
    params: tuple[Param, ...] = ()
    needs_training: bool = True  # whether the large model must be trained before pruning
    # False for non-structured (weight) pruning: genomes keep their widths and gain masks
    structured: bool = True
    regularizes_training: bool = False  # the large model trains with ``training_callbacks``, not plainly
    # The parameters the training phase depends on (the rest only prune); None: all of them
    training_params: tuple[str, ...] | None = None
    generic: "Method | None" = None  # its variant for generic models (methods/generic.py), if any

    def for_genome(self, genome: "Genome") -> "Method":
        """The method that prunes ``genome``: this one, or its generic variant for a generic model."""
        if genome.family == "generic" and "generic" not in self.families:
            if self.generic is None:
                raise UserError(f"method {self.name!r} does not apply to generic models ({genome.model}); "
                                "`prune-nas methods` shows which do")
            return self.generic
        return self

    def check(self, genome: Genome, **kwargs) -> None:
        if genome.family not in self.families:
            raise UserError(f"method {self.name!r} does not apply to {genome.family} models "
                            f"({genome.model}); it supports: {', '.join(self.families)}")

    def prune(self, genome: Genome, model: nn.Module | None, **kwargs) -> PruneResult:
        raise NotImplementedError

    def training_callbacks(self, model: nn.Module, **kwargs) -> list:
        """Callbacks for the training loop that train the large model the method's way; they may add
        parameters to ``model`` (SSS block scales), so they are attached before weights are loaded. Plain
        training: none."""
        return []

    def regularizer(self, genome: Genome, **kwargs) -> dict | None:
        """What the training phase depends on, for the cache key of the trained large model; None for plain
        training. By default the values of ``training_params`` (all the method's parameters when None: safe,
        but then a change of a pruning-only parameter trains again)."""
        if not self.regularizes_training:
            return None
        names = [p.name for p in self.params] if self.training_params is None else self.training_params
        return {"params": {n: kwargs.get(n) for n in names}}

    def training_record(self, genome: Genome, **kwargs) -> dict | None:
        """What the training phase used and how its defaults were derived (slimming: the effective s), for
        the genome's provenance; None when there is nothing to say."""
        return None
    def protocol(self, dataset: str, model: str, **overrides):
        """The training protocol of the large model and of the pruned model's scratch runs with this method
        on ``dataset``: the paper's for the dataset, unless the method's reference code trains otherwise."""
        from prune_nas.training.protocol import Protocol

        return Protocol.for_dataset(dataset, **overrides)


REGISTRY: dict[str, Method] = {}


def register(cls: type[Method]) -> type[Method]:
    REGISTRY[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    import difflib

    if not isinstance(name, str):  # from a user's file: a list or a number is not a method name
        raise UserError(f"a method name must be a string, got {name!r}")
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"unknown method {name!r}{hint}; `prune-nas methods` lists them")
    return REGISTRY[name]


def list_methods() -> list[Method]:
    return list(REGISTRY.values())


def check_ratio(ratio: float, what: str = "ratio") -> float:
    if not 0.0 < ratio < 1.0:
        raise UserError(f"{what} must be in (0, 1), got {ratio}")
    return ratio


def kept_width(group: str, width: int, ratio: float, notes: list[str]) -> int:
    """``int(width * (1 - ratio))``, the width a layer keeps when ``ratio`` of it is removed; never below one
    channel, with a note saying so when the floor applies."""
    k = int(width * (1 - ratio))
    if k < 1:
        notes.append(f"{group}: kept 1 of {width} channels (ratio {ratio:g} would empty the layer)")
        return 1
    return k

