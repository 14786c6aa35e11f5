"""The one training loop, the paper's protocol, and the Scratch-E / Scratch-B budgets.

>>> Protocol.cifar().lr_milestones()
[80, 120]
>>> scratch_b_epochs(reference_flops=3, candidate_flops=2, base_epochs=160)
240

Pruning methods that need a special training phase (Network Slimming's L1 on BN scales, SSS's block scales)
pass callbacks to :func:`train_model` instead of writing their own loop. A callback is any object with some of
these methods:

* ``extra_loss(model) -> Tensor``: added to the cross-entropy before backward;
* ``after_backward(model)``: e.g. add ``s * sign(gamma)`` to BN weight gradients;
* ``after_step(model)``: after the optimizer step;
* ``on_epoch_end(model, epoch, metrics)``: ``metrics`` is that epoch's curve entry.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .data import Dataset

IMAGENET_RATIO_CAP = 2.0  # ImageNet Scratch-B: ratio >= 2 trains 2 x 90 = 180 epochs (lr steps every 60)


@dataclass(frozen=True)
class Protocol:
    """Optimisation hyper-parameters. Defaults are the paper's CIFAR protocol.

    ``lr_steps`` are fractions of ``epochs``: the lr is multiplied by ``lr_gamma`` at the start of epoch
    ``int(f * epochs)`` for each f, so a Scratch-B run that trains longer moves its steps with it.
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_steps", tuple(float(f) for f in self.lr_steps))

    @classmethod
    def cifar(cls, **overrides: Any) -> "Protocol":
        return replace(cls(), **overrides)

    @classmethod
    def imagenet(cls, **overrides: Any) -> "Protocol":
        """90 epochs, batch 256, lr 0.1 divided by 10 every 30 epochs (augmentation is the folder loader's)."""
        return replace(cls(epochs=90, batch_size=256, lr_steps=(1 / 3, 2 / 3), crop_padding=0), **overrides)

    @classmethod
    def finetune(cls, base: "Protocol | None" = None, **overrides: Any) -> "Protocol":
        """Fine-tuning a pruned model: 40 epochs at constant lr 0.001 (CIFAR). ImageNet: pass ``epochs``
        (20 for L1-norm, 10 for weight-level, 5 for slimming) with ``base=Protocol.imagenet()``."""
        return replace(base or cls(), **{"epochs": 40, "lr": 0.001, "lr_steps": (), **overrides})

    @classmethod
    def for_dataset(cls, name: str, **overrides: Any) -> "Protocol":
        """The paper's protocol for a dataset. Digits turn flips off (a mirrored digit is another digit)."""
        if name == "imagenet":
            return cls.imagenet(**overrides)
        return cls.cifar(**{"flip": name != "digits", **overrides})

    def with_epochs(self, epochs: int) -> "Protocol":
        return replace(self, epochs=int(epochs))

    def lr_milestones(self) -> list[int]:
        # The small epsilon keeps 2/3 * 90 at 60 despite binary fractions; int() floors otherwise.
        return [int(f * self.epochs + 1e-9) for f in self.lr_steps]

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``."""
        return self.lr * self.lr_gamma ** sum(epoch >= m for m in self.lr_milestones())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_steps"] = list(self.lr_steps)
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


# ---- the loop ----------------------------------------------------------------------------------------------
@dataclass
class TrainHistory:
    """What one training run produced. ``curve`` has one entry per epoch."""

    curve: list[dict] = field(default_factory=list)
    status: str = "ok"  # "ok" | "failed"
    reason: str | None = None
    wall_time_s: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status != "ok"

    def summary(self) -> dict:
        """Final and best test accuracy (top-5 too when the curve has it)."""
        out: dict[str, Any] = {"status": self.status, "reason": self.reason, "epochs_run": len(self.curve)}
        scored = [c for c in self.curve if c.get("test_top1") is not None]
        for k in ("top1", "top5"):
            vals = [c[f"test_{k}"] for c in scored if c.get(f"test_{k}") is not None]
            out[f"final_{k}"] = vals[-1] if vals else None
            out[f"best_{k}"] = max(vals) if vals else None
        out["best_epoch"] = max(scored, key=lambda c: c["test_top1"])["epoch"] if scored else None
        return out


def _hooks(callbacks: Sequence[Any], name: str) -> list:
    return [getattr(cb, name) for cb in callbacks if callable(getattr(cb, name, None))]


def make_optimizer(model: nn.Module, protocol: Protocol) -> torch.optim.SGD:
    # Weight decay on every parameter, BN included, as in the reference code.
    return torch.optim.SGD(model.parameters(), lr=protocol.lr, momentum=protocol.momentum,
                           weight_decay=protocol.weight_decay, nesterov=protocol.nesterov)


def train_model(model: nn.Module, dataset: Dataset, protocol: Protocol, *, seed: int,
                device: str | torch.device = "cpu", callbacks: Iterable[Any] = (), progress: bool = True,
                desc: str = "", evaluate: bool = True) -> TrainHistory:
    """Train ``model`` in place with SGD under ``protocol`` and return its per-epoch history.

    ``seed`` drives shuffling, crop offsets and flips (one CPU generator) and the global torch RNG (dropout);
    model initialisation is the caller's. A non-finite training loss ends the run with ``status="failed"``
    and the reason; the model is left as it was at that point.

    >>> from prune_nas import base_genome, build
    >>> from prune_nas.data import load_dataset
    >>> g = base_genome("vgg11", width_mult=0.125, input_size=16)
    >>> h = train_model(build(g), load_dataset("synthetic", input_size=16), Protocol(epochs=1), seed=0,
    ...                 progress=False)
    >>> len(h.curve), h.status
    (1, 'ok')
    """
    from tqdm.auto import tqdm

    callbacks = list(callbacks)
    extra_loss, after_backward = _hooks(callbacks, "extra_loss"), _hooks(callbacks, "after_backward")
    after_step, on_epoch_end = _hooks(callbacks, "after_step"), _hooks(callbacks, "on_epoch_end")
    device = torch.device(device)
    model.to(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model, protocol)
    history = TrainHistory()
    steps = dataset.steps_per_epoch(protocol.batch_size)
    bar = tqdm(total=protocol.epochs * steps, desc=desc or "train", unit="step", leave=False,
               disable=None if progress else True, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        for epoch in range(protocol.epochs):
            lr = protocol.lr_at(epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            bar.set_description(f"{desc + ' ' if desc else ''}epoch {epoch + 1}/{protocol.epochs}")
            model.train()
            t0 = time.perf_counter()
            # Sums stay on the device; one sync per epoch keeps GPU runs asynchronous.
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            for x, y in dataset.train_batches(protocol.batch_size, gen, device, crop_padding=protocol.crop_padding,
                                              flip=protocol.flip):
                out = model(x)
                loss = F.cross_entropy(out, y)
                for fn in extra_loss:
                    loss = loss + fn(model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                for fn in after_backward:
                    fn(model)
                opt.step()
                for fn in after_step:
                    fn(model)
                loss_sum += loss.detach() * len(y)
                correct += (out.detach().argmax(1) == y).sum()
                seen += len(y)
                bar.update(1)
            mean_loss = float(loss_sum) / max(seen, 1)
            entry: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "loss": mean_loss,
                                     "train_top1": float(correct) / max(seen, 1)}
            entry["train_time_s"] = round(time.perf_counter() - t0, 4)
            if not math.isfinite(mean_loss):
                history.curve.append(entry)
                history.status = "failed"
                history.reason = f"non-finite training loss ({mean_loss}) in epoch {epoch + 1}"
                break
            if evaluate:
                m = evaluate_model(model, dataset, device, batch_size=protocol.eval_batch_size)
                entry.update({f"test_{k}": v for k, v in m.items()})
            history.curve.append(entry)
            bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{entry['train_top1']:.3f}",
                            test=f"{entry.get('test_top1', float('nan')):.3f}")
            for fn in on_epoch_end:
                fn(model, epoch, entry)
    finally:
        bar.close()
        history.wall_time_s = round(time.perf_counter() - start, 3)
    return history


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset: Dataset, device: str | torch.device = "cpu", *,
                   batch_size: int = 256) -> dict:
    """Test-set top-1 and mean loss; top-5 too when the dataset has more than 10 classes (else ``None``)."""
    model.eval()
    device = torch.device(device)
    top1 = torch.zeros((), device=device, dtype=torch.long)
    top5 = torch.zeros((), device=device, dtype=torch.long)
    loss = torch.zeros((), device=device, dtype=torch.float64)
    n = 0
    k5 = dataset.num_classes > 10
    for x, y in dataset.test_batches(batch_size, device):
        out = model(x)
        loss += F.cross_entropy(out, y, reduction="sum").double()
        top1 += (out.argmax(1) == y).sum()
        if k5:
            top5 += (out.topk(5, 1).indices == y[:, None]).any(1).sum()
        n += len(y)
    n = max(n, 1)
    return {"top1": float(top1) / n, "top5": float(top5) / n if k5 else None, "loss": float(loss) / n}
