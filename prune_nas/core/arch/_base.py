"""What every model family provides, and the records the rest of the package reads.

A family describes one base model (``ModelSpec``) at a given block count as three pure-Python lists:

* ``slots``: every channel dimension that can be pruned (a conv's output channels, a residual stream, or a
  channel *selection* that a pre-activation BN reads from a shared tensor);
* ``couplings``: pairs of slots that must have the same width (residual adds);
* ``ops``: the geometry of every conv / linear / BN layer once widths are known, which is all the cost model
  needs, so params and FLOPs never require allocating a model.

``build`` turns the same description into an ``nn.Module`` whose conv module paths equal the op names, so
masks, densities and inherited weights can be addressed by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:  # torch is only needed to build, never to describe or cost
    from torch import nn


@dataclass(frozen=True)
class Slot:
    """A prunable channel dimension.

    kind: ``conv`` (output channels of one conv), ``stream`` (a residual tensor written by several convs) or
    ``select`` (how many channels of a shared tensor a BN reads; bounded by ``limit`` of that tensor).
    stage: resolution stage the slot lives in (1-based), used for mining and transfer.
    """

    name: str
    base_width: int
    kind: str = "conv"
    stage: int = 1
    # For a ``select`` slot: the slots whose channels, concatenated in this order, form the tensor it reads.
    reads: tuple[str, ...] = ()


@dataclass(frozen=True)
class Op:
    """Geometry of one layer with learnable weights. ``hw`` is the output's spatial side (1 for linear/BN1d).

    ``in_slots``: the slots whose channels, concatenated in order, are the layer's input channels (empty: the
    image, or a layer no width group reaches, like the hidden Linear of a VGG head). ``out_slot``: the slot
    whose channels the layer writes (a BN: the slot it normalises; ``None`` when no width group sets it). A
    Linear reading a flattened ``c x h x w`` map has ``cin = c * h * w``, channel-major. Channel surgery and
    importance criteria use these to slice weights without knowing the family.
    """

    name: str
    kind: str  # "conv" | "linear" | "bn"
    cin: int
    cout: int
    k: int = 1
    hw: int = 1
    bias: bool = False
    stage: int = 0
    in_slots: tuple[str, ...] = ()
    out_slot: str | None = None

    @property
    def weight_count(self) -> int:
        if self.kind == "bn":
            return self.cout
        return self.cin * self.cout * self.k * self.k


@dataclass(frozen=True)
class ModelSpec:
    """A named base model: family plus the family's own configuration."""

    name: str
    family: str
    num_classes: int
    input_size: int
    in_channels: int = 3
    default_blocks: tuple[int, ...] | None = None
    config: Mapping = field(default_factory=dict)
    summary: str = ""
    # Initial BatchNorm scale (gamma) of a fresh model. The reference code fills it with 0.5 in the models its
    # Network Slimming code trains (CIFAR VGG, PreResNet-164, DenseNet-40, ImageNet VGG-11) and in the L1-norm
    # VGG-16, and leaves it at 1 elsewhere. Run specs record it when it is not 1 (``RunSpec.init_dict``).
    bn_init: float = 1.0


class Family:
    """Base class of a model family. Subclasses are stateless; one instance each lives in the registry."""

    name: str = ""
    block_pruning: bool = False  # whether ``blocks`` (kept blocks per stage) may differ from the base

    def slots(self, spec: ModelSpec, blocks: tuple[int, ...] | None) -> list[Slot]:
        raise NotImplementedError

    def couplings(self, spec: ModelSpec, blocks: tuple[int, ...] | None) -> list[tuple[str, str]]:
        return []

    def select_limits(self, spec: ModelSpec, blocks, widths: Mapping[str, int]) -> dict[str, int]:
        """For each ``select`` slot, how many channels the tensor it reads has (given the other widths)."""
        return {}

    def ops(self, spec: ModelSpec, blocks, widths: Mapping[str, int], input_size: int,
            in_channels: int, num_classes: int) -> list[Op]:
        raise NotImplementedError

    def build(self, spec: ModelSpec, blocks, widths: Mapping[str, int], input_size: int,
              in_channels: int, num_classes: int) -> "nn.Module":
        """A freshly initialised model; takes what :meth:`ops` takes, so families need no genome."""
        raise NotImplementedError

    def min_input_size(self, spec: ModelSpec) -> int:
        return 1

    def shortcut_entry_problem(self, spec: ModelSpec, blocks: tuple[int, ...], stage: int) -> str | None:
        """Why ``stage`` cannot open with its first block's shortcut alone (``Genome.shortcut_entries``), or
        None. Families that support it take ``shortcut_entries`` in :meth:`ops` and :meth:`build`."""
        return f"{self.name} models do not support shortcut entries"
