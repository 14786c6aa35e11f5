"""What a pruning method is here: an architecture generator.

A method takes a (usually trained) large model and its genome and returns a smaller ``Genome`` plus,
optionally, the inherited weights (for the fine-tuning baseline) and exact masks (for non-structured pruning).
Methods never emit invalid genomes: widths are chosen per width group of the coupling graph, and no group is
ever emptied (at least one channel is kept, and the result says so in ``notes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

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
    genome: "Genome"
    state_dict: dict | None = None  # inherited weights for the pruned model (fine-tune baseline)
    masks: dict[str, "np.ndarray"] | None = None  # exact masks (non-structured pruning)
    notes: list[str] = field(default_factory=list)  # e.g. "conv13: kept 1 channel (layer would be empty)"


class Method:
    """Base class. Subclasses set the class attributes and implement ``prune``."""

    name: str = ""
    summary: str = ""
    citation: str = ""
    target: str = "predefined"  # "predefined" (user fixes widths) or "automatic" (the method decides)
    families: tuple[str, ...] = ()
    params: tuple[Param, ...] = ()
    needs_training: bool = True  # whether the large model must be trained before pruning

    def check(self, genome: "Genome", **kwargs) -> None:
        if genome.family not in self.families:
            raise UserError(f"method {self.name!r} does not apply to {genome.family} models "
                            f"({genome.model}); it supports: {', '.join(self.families)}")

    def prune(self, genome: "Genome", model: "nn.Module | None", **kwargs) -> PruneResult:
        raise NotImplementedError


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


KeepFn = Callable[[int], int]
