"""The one training loop (and test-set evaluation).

Pruning methods that need a special training phase (Network Slimming's L1 on BN scales, SSS's block scales)
pass callbacks to :func:`train_model` instead of writing their own loop. A callback is any object with some of
these methods:

* ``extra_loss(model) -> Tensor``: added to the cross-entropy before backward;
* ``after_backward(model)``: e.g. add ``s * sign(gamma)`` to BN weight gradients;
* ``after_step(model)``: after the optimizer step;
* ``on_epoch_end(model, epoch, metrics)``: ``metrics`` is that epoch's curve entry.

The fast engine (``prune_nas.training.engine``) is a way of running this loop, not a second loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from prune_nas.training import distributed
from prune_nas.training.data import Dataset
from prune_nas.training.protocol import Protocol


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

def train_model(model: nn.Module, dataset: Dataset, protocol: Protocol, *, seed: int,
                device: str | torch.device = "cpu", callbacks: Iterable[Any] = (), progress: bool = True,
                desc: str = "", evaluate: bool = True, engine: Any = "eager") -> TrainHistory:
    """Train ``model`` in place with SGD under ``protocol`` and return its per-epoch history.

    ``seed`` drives shuffling, crop offsets and flips (one CPU generator) and the global torch RNG (dropout);
    model initialisation is the caller's. A non-finite training loss ends the run with ``status="failed"``
    and the reason; the model is left as it was at that point. ``engine`` is ``"eager"`` (plain PyTorch) or
    ``"fast"`` (device-resident epochs, bf16 + channels_last + one CUDA graph per step on CUDA): see
    ``prune_nas.training.engine``; both run this same loop.

    >>> from prune_nas.core.builder import build
    >>> from prune_nas.core.genome import base_genome
    >>> from prune_nas.training.data import load_dataset
    >>> g = base_genome("vgg11", width_mult=0.125, input_size=16)
    >>> h = train_model(build(g), load_dataset("synthetic", input_size=16), Protocol(epochs=1), seed=0,
    ...                 progress=False)
    >>> len(h.curve), h.status
    (1, 'ok')
    """
    from tqdm.auto import tqdm

    from prune_nas.training.engine import make_step

    callbacks = list(callbacks)
    on_epoch_end = _hooks(callbacks, "on_epoch_end")
    device = torch.device(device)
    model.to(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    step = make_step(model, protocol, device, engine, callbacks)
    replicas = distributed.attach(step, model, device)  # None unless this process is one of several ranks
    history = TrainHistory()
    steps = step.steps_per_epoch(dataset, protocol.batch_size)
    bar = tqdm(total=protocol.epochs * steps, desc=desc or "train", unit="step", leave=False,
               disable=None if progress else True, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        for epoch in range(protocol.epochs):
            lr = protocol.lr_at(epoch)
            step.set_lr(lr)
            bar.set_description(f"{desc + ' ' if desc else ''}epoch {epoch + 1}/{protocol.epochs}")
            model.train()
            t0 = time.perf_counter()
            step.reset()  # sums stay on the device; one sync per epoch keeps GPU runs asynchronous
            seen = 0
            batches = step.batches(dataset, protocol, gen)
            for x, y in (replicas.shard(batches) if replicas else batches):
                step(x, y)
                seen += len(y)
                bar.update(1)
            loss_sum, correct = step.loss_sum, step.correct
            if replicas:
                loss_sum, correct, seen = replicas.totals(loss_sum, correct, seen)
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
        if replicas:
            replicas.close()
        step.release()  # a CUDA graph holds a private memory pool: free it before the next candidate
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


def _device_name(device: str | torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    import os
    import platform

    name = platform.processor() or platform.machine()
    try:  # Linux: the CPU's marketing name says more than "x86_64"
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu:{name} ({os.cpu_count()} cores)"
