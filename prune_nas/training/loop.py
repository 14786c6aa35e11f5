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
from pathlib import Path
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


@dataclass
class Checkpoint:
    """Where :func:`train_model` keeps a run's full state so a killed run resumes where it stopped.

    Written atomically at the end of an epoch when ``every_s`` seconds have passed since the last one (0:
    every epoch): model, optimizer (momentum), epoch, curve so far, and every RNG the loop draws from (the
    CPU generator that shuffles and augments, the global torch RNG, CUDA's). ``tag`` (the run key) must
    match for a checkpoint to be used, so a file never resumes a different run. The caller deletes the file
    once the run's record is written."""

    path: Path
    tag: str
    every_s: float = 120.0

    def load(self) -> dict | None:
        """The saved state, or None when there is none (or it is unreadable or another run's)."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged checkpoint is only a lost head start: train from the beginning
            return None
        return state if isinstance(state, dict) and state.get("tag") == self.tag else None

    def save(self, state: dict) -> None:
        from prune_nas.core.atomic import atomic_write

        atomic_write(self.path, lambda tmp: torch.save({**state, "tag": self.tag}, tmp), ".pt")

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


def _rng_state(gen: torch.Generator, device: torch.device) -> dict:
    out = {"generator": gen.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _set_rng_state(state: dict, gen: torch.Generator, device: torch.device) -> None:
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _callback_states(callbacks: Sequence[Any]) -> list:
    return [cb.state_dict() if callable(getattr(cb, "state_dict", None)) else None for cb in callbacks]

def train_model(model: nn.Module, dataset: Dataset, protocol: Protocol, *, seed: int,
                device: str | torch.device = "cpu", callbacks: Iterable[Any] = (), progress: bool = True,
                desc: str = "", evaluate: bool = True, engine: Any = "eager",
                checkpoint: Checkpoint | None = None) -> TrainHistory:
    """Train ``model`` in place with SGD under ``protocol`` and return its per-epoch history.

    ``seed`` drives shuffling, crop offsets and flips (one CPU generator) and the global torch RNG (dropout);
    model initialisation is the caller's. A non-finite training loss ends the run with ``status="failed"``
    and the reason; the model is left as it was at that point. ``engine`` is ``"eager"`` (plain PyTorch) or
    ``"fast"`` (device-resident epochs, bf16 + channels_last + one CUDA graph per step on CUDA): see
    ``prune_nas.training.engine``; both run this same loop. With a ``checkpoint``, the run starts from the
    state saved there (if any) and saves its state as it goes: on CPU a resumed run ends exactly where an
    uninterrupted one does. ``protocol.epochs == 0`` trains nothing and measures the model once (epoch 0 of
    the curve): a pruned model's accuracy as it comes out of pruning.

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
    first_epoch, earlier_s = 0, 0.0
    # Rank 0's checkpoint for every rank: under torchrun on several machines the others may not see its file.
    saved = distributed.on_writer(checkpoint.load) if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        step.load_state_dict(saved["step"])
        for cb, cb_state in zip(callbacks, saved.get("callbacks", [])):
            if cb_state is not None and callable(getattr(cb, "load_state_dict", None)):
                cb.load_state_dict(cb_state)
        _set_rng_state(saved["rng"], gen, device)
        first_epoch, earlier_s = int(saved["epoch"]), float(saved.get("wall_time_s", 0.0))
        history.curve = list(saved["curve"])
    steps = step.steps_per_epoch(dataset, protocol.batch_size)
    bar = tqdm(total=protocol.epochs * steps, initial=first_epoch * steps, desc=desc or "train", unit="step",
               leave=False, disable=None if progress else True, dynamic_ncols=True)
    start = time.perf_counter()
    last_save = start
    try:
        for epoch in range(first_epoch, protocol.epochs):
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
            now = time.perf_counter()
            last_epoch = epoch + 1 == protocol.epochs  # the record follows at once: no checkpoint needed
            # Every rank of a distributed run holds the same state; rank 0 alone writes it.
            if checkpoint is not None and not last_epoch and now - last_save >= checkpoint.every_s \
                    and distributed.is_writer():
                checkpoint.save({"model": model.state_dict(), "step": step.state_dict(), "epoch": epoch + 1,
                                 "curve": history.curve, "rng": _rng_state(gen, device),
                                 "callbacks": _callback_states(callbacks),
                                 "wall_time_s": earlier_s + now - start})
                last_save = time.perf_counter()
        if protocol.epochs == 0 and evaluate:  # no training asked for: the model as it is, measured once
            m = evaluate_model(model, dataset, device, batch_size=protocol.eval_batch_size)
            history.curve.append({"epoch": 0, **{f"test_{k}": v for k, v in m.items()}})
    finally:
        bar.close()
        if replicas:
            replicas.close()
        step.release()  # a CUDA graph holds a private memory pool: free it before the next candidate
        history.wall_time_s = round(earlier_s + time.perf_counter() - start, 3)
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
    """How run records name the hardware: ``cuda:<GPU name>``, else ``cpu:<CPU model> (<n> cores)``."""
    import os

    from prune_nas.core.latency import device_name  # the one place that reads the CPU / GPU name

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{device_name(str(device))}"
    return f"cpu:{device_name('cpu')} ({os.cpu_count()} cores)"
