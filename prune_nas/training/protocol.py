"""The paper's training protocol and the Scratch-E / Scratch-B budgets.

>>> Protocol.cifar().lr_milestones()
[80, 120]
>>> Protocol.sss_imagenet().with_epochs(145).lr_milestones()
[43, 86, 129]
>>> scratch_b_epochs(reference_flops=3, candidate_flops=2, base_epochs=160)
240
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from prune_nas.core.genome import Genome

IMAGENET_RATIO_CAP = 2.0  # ImageNet Scratch-B: ratio >= 2 trains 2 x 90 = 180 epochs (lr steps every 60)


@dataclass(frozen=True)
class Protocol:
    """Optimisation hyper-parameters. Defaults are the paper's CIFAR protocol.

    ``lr_steps`` are fractions of ``epochs``: the lr is multiplied by ``lr_gamma`` at the start of epoch
    ``int(f * epochs)`` for each f, so a Scratch-B run that trains longer moves its steps with it.
    ``lr_step_every`` instead drops it every ``int(f * epochs)`` epochs (the reference's ``epoch // step``
    schedules): Sparse Structure Selection's 100 epochs with steps at 30 / 60 / 90 are ``0.3``, and a
    Scratch-B run of 145 epochs then steps every 43 (43 / 86 / 129), as the reference code's README lists.
    Recorded (``to_dict``) only when set, so every other protocol keeps its run keys.
    """

    epochs: int = 160
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    lr_steps: tuple[float, ...] = (0.5, 0.75)
    lr_gamma: float = 0.1
    crop_padding: int = 4
    flip: bool = True
    eval_batch_size: int = 256
    lr_step_every: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_steps", tuple(float(f) for f in self.lr_steps))
        if self.lr_step_every is not None:
            from prune_nas.core.errors import UserError

            if not 0 < self.lr_step_every <= 1:
                raise UserError(f"lr_step_every is a fraction of the epochs in (0, 1], got "
                                f"{self.lr_step_every}")
            if self.lr_steps:
                raise UserError("give lr_steps (fractions) or lr_step_every (a period), not both")

    @classmethod
    def cifar(cls, **overrides: Any) -> "Protocol":
        return replace(cls(), **overrides)

    @classmethod
    def imagenet(cls, **overrides: Any) -> "Protocol":
        """90 epochs, batch 256, lr 0.1 divided by 10 every 30 epochs (the folder loader augments)."""
        return replace(cls(epochs=90, batch_size=256, lr_steps=(1 / 3, 2 / 3), crop_padding=0), **overrides)

    @classmethod
    def sss_imagenet(cls, **overrides: Any) -> Protocol:
        """Sparse Structure Selection on ImageNet (its reference code's defaults): 100 epochs, lr 0.1 divided
        by 10 every 30 epochs (at 30, 60 and 90), batch 256 as the other ImageNet runs here."""
        return cls.imagenet(**{"epochs": 100, "lr_steps": (), "lr_step_every": 0.3, **overrides})

    @classmethod
    def finetune(cls, base: "Protocol | None" = None, **overrides: Any) -> "Protocol":
        """Fine-tuning a pruned model: 40 epochs at constant lr 0.001 (CIFAR). ImageNet: pass ``epochs``
        (20 for L1-norm, 10 for weight-level, 5 for slimming) with ``base=Protocol.imagenet()``."""
        return replace(base or cls(), **{"epochs": 40, "lr": 0.001, "lr_steps": (), "lr_step_every": None,
                                         **overrides})

    @classmethod
    def for_dataset(cls, name: str, **overrides: Any) -> "Protocol":
        """The paper's protocol for a dataset. Digits turn flips off (a mirrored digit is another digit)."""
        if name == "imagenet":
            return cls.imagenet(**overrides)
        return cls.cifar(**{"flip": name != "digits", **overrides})

    def with_epochs(self, epochs: int) -> "Protocol":
        return replace(self, epochs=int(epochs))

    def lr_milestones(self) -> list[int]:
        """0-based epochs at whose start the lr drops. The epsilon keeps 2/3 * 90 at 60 despite binary
        fractions (int() floors otherwise); no step comes before epoch 1, so a short run starts at ``lr``."""
        if self.lr_step_every is not None:
            period = max(1, int(self.lr_step_every * self.epochs + 1e-9))
            return list(range(period, self.epochs, period))
        return [max(1, int(f * self.epochs + 1e-9)) for f in self.lr_steps]

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``, to 12 significant digits (0.001, not 0.0010000000000000002)."""
        return float(f"{self.lr * self.lr_gamma ** sum(epoch >= m for m in self.lr_milestones()):.12g}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_steps"] = list(self.lr_steps)
        if self.lr_step_every is None:
            del d["lr_step_every"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Protocol":
        return cls(**{**d, "lr_steps": tuple(d.get("lr_steps", ()))})


def scratch_b_epochs(reference_flops: int, candidate_flops: int, base_epochs: int,
                     cap: float | None = None) -> int:
    """Scratch-B epochs: ``int(base_epochs * FLOPs(reference) / FLOPs(candidate))``, at least 1.

    Computed in exact integer arithmetic (floor of a rational), so no float rounding can move it by an epoch.
    ``cap`` bounds the FLOPs ratio: the paper's ImageNet rule is ``cap=2`` with 90 base epochs (ratio >= 2
    gives 180 epochs, else ``int(90 * ratio)``), see :data:`IMAGENET_RATIO_CAP`.

    >>> scratch_b_epochs(10, 2, 90, cap=IMAGENET_RATIO_CAP), scratch_b_epochs(3, 2, 90, cap=2.0)
    (180, 135)
    """
    if reference_flops <= 0 or candidate_flops <= 0:
        raise ValueError("FLOPs must be positive")
    epochs = (int(base_epochs) * int(reference_flops)) // int(candidate_flops)
    if cap is not None:
        epochs = min(epochs, int(base_epochs * cap))
    return max(1, epochs)



def make_optimizer(model: nn.Module, protocol: Protocol) -> torch.optim.SGD:
    # Weight decay on every parameter, BN included, as in the reference code.
    return torch.optim.SGD(model.parameters(), lr=protocol.lr, momentum=protocol.momentum,
                           weight_decay=protocol.weight_decay, nesterov=protocol.nesterov)


@dataclass(frozen=True)
class Budget:
    """How long to train. ``epochs`` (Scratch-E): the base epochs as they are. ``flops`` (Scratch-B): the
    same training FLOPs as ``reference`` trained for the base epochs, ``cap`` bounding the FLOPs ratio.
    ``epochs=None`` takes the protocol's epochs."""

    kind: str = "epochs"
    epochs: int | None = None
    reference: "Genome | None" = None
    cap: float | None = None

    def __post_init__(self) -> None:
        from prune_nas.core.errors import UserError

        if self.kind not in ("epochs", "flops"):
            raise UserError(f"unknown budget {self.kind!r}; use 'epochs' (Scratch-E) or 'flops' (Scratch-B)")
        if self.kind == "flops" and self.reference is None:
            raise UserError("a flops budget (Scratch-B) needs a reference genome")
        if self.epochs is not None and self.epochs < 1:
            raise UserError(f"epochs must be >= 1, got {self.epochs}")

    def resolve(self, genome: "Genome", base_epochs: int) -> dict:
        """The budget with every number filled in: base epochs, FLOPs of both genomes, ratio, epochs."""
        from prune_nas.core.cost import count

        base = self.epochs or base_epochs
        out: dict[str, Any] = {"kind": self.kind, "base_epochs": base}
        if self.kind == "epochs":
            return {**out, "epochs": base}
        ref, cand = count(self.reference).flops, count(genome).flops
        return {**out, "reference": self.reference.key, "reference_flops": ref, "candidate_flops": cand,
                "ratio": round(ref / cand, 6), "cap": self.cap,
                "epochs": scratch_b_epochs(ref, cand, base, self.cap)}
