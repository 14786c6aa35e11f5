"""Ways of running the one training step: ``eager`` (plain PyTorch) and ``fast``.

``fast`` keeps the whole epoch on the device (augmented with a handful of batched tensor ops per epoch, not
per batch), uses bf16 autocast and channels_last on CUDA, and on CUDA captures the whole step -- forward,
backward, callbacks, optimizer -- as one CUDA graph replayed at a fixed batch size. At the paper's batch of 64
a CIFAR model is launch-bound, so replaying one graph instead of hundreds of kernel launches is where the
speed comes from. The optimizer is SGD written with foreach ops and a device-resident learning rate, so an lr
step is a tensor write, not a re-capture; it computes exactly what ``torch.optim.SGD`` computes (momentum,
dampening 0, weight decay added to the gradient, no Nesterov) to float rounding, which a test checks.

What the fast engine changes, and only this: fixed-size batches (the last partial batch of an epoch is
dropped, as airbench does), augmentation random numbers drawn per epoch instead of per batch (same
distributions), and bf16 arithmetic on CUDA. fp32 stays available (``amp=False``) and is the CPU default.
Callbacks run inside the graph when they only do tensor work; one that sets ``graph_safe = False`` makes the
engine run that training eagerly (still with device-resident data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

ENGINES = ("eager", "fast")


@dataclass(frozen=True)
class EngineOptions:
    """How to run training. ``amp`` / ``channels_last`` / ``graph`` default to on for CUDA, off for CPU.

    Away from CUDA the fast engine runs the eager step (``cpu_fallback``): without bf16, channels_last and the
    CUDA graph nothing of it is faster on a CPU, and measured on 2 EPYC cores it was 0.3-0.96x the eager step
    (benchmarks/train_throughput.py). The record then says ``kind: eager, requested: fast``.
    """

    kind: str = "eager"
    amp: bool | None = None
    channels_last: bool | None = None
    graph: bool | None = None
    cpu_fallback: bool = True
    requested: str | None = None

    def resolved(self, device: torch.device) -> "EngineOptions":
        cuda = device.type == "cuda"
        fast = self.kind == "fast"

        def pick(v: bool | None) -> bool:
            return fast and cuda if v is None else bool(v)

        kind = "eager" if fast and not cuda and self.cpu_fallback else self.kind
        return EngineOptions(kind, pick(self.amp), pick(self.channels_last), pick(self.graph),
                             self.cpu_fallback, self.kind if kind != self.kind else None)

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "amp_bf16": self.amp, "channels_last": self.channels_last,
             "cuda_graph": self.graph}
        return {**d, "requested": self.requested} if self.requested else d


class ForeachSGD:
    """SGD with momentum and weight decay as foreach ops, lr held in a device tensor (graph-capturable)."""

    def __init__(self, params: Sequence[nn.Parameter], lr: float, momentum: float, weight_decay: float,
                 device: torch.device):
        self.params = [p for p in params if p.requires_grad]
        self.momentum, self.weight_decay = momentum, weight_decay
        self.bufs = [torch.zeros_like(p) for p in self.params]
        self.lr = torch.tensor(float(lr), device=device)

    def set_lr(self, lr: float) -> None:
        self.lr.fill_(lr)

    def state_dict(self) -> dict:
        """Momentum buffers (on the CPU), for a checkpoint."""
        return {"bufs": [b.detach().cpu() for b in self.bufs]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Momentum buffers from :meth:`state_dict`, copied in place (a captured CUDA graph keeps its
        addresses)."""
        bufs = state["bufs"]
        if len(bufs) != len(self.bufs) or any(a.shape != b.shape for a, b in zip(bufs, self.bufs)):
            raise ValueError("momentum buffers do not fit the model")
        for dst, src in zip(self.bufs, bufs):
            dst.copy_(src)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        params = [p for p in self.params if p.grad is not None]
        grads = [p.grad for p in params]
        bufs = [b for p, b in zip(self.params, self.bufs) if p.grad is not None]
        if self.weight_decay:
            torch._foreach_add_(grads, params, alpha=self.weight_decay)
        if self.momentum:
            torch._foreach_mul_(bufs, self.momentum)
            torch._foreach_add_(bufs, grads)
            update = torch._foreach_mul(bufs, self.lr)
        else:
            update = torch._foreach_mul(grads, self.lr)
        torch._foreach_sub_(params, update)


def device_epoch(dataset, batch_size: int, generator: torch.Generator, device: torch.device, *,
                 crop_padding: int, flip: bool, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of full-size, shuffled, augmented batches, built on the device in one pass.

    The shuffle order, crop offsets and flips come from the CPU ``generator`` (three draws per epoch), so an
    epoch is the same on any device. The last partial batch is dropped (fixed shapes for graph replay).
    """
    from prune_nas.training.data import augment

    t = dataset.on(device)
    n = dataset.train_size
    steps = n // batch_size
    if steps == 0:
        raise ValueError(f"the fast engine needs at least one full batch of {batch_size} images; "
                         f"{dataset.name} has {n}")
    order = torch.randperm(n, generator=generator)[: steps * batch_size]
    m = len(order)
    offs = torch.randint(0, 2 * crop_padding + 1, (2, m), generator=generator) if crop_padding else None
    flips = torch.rand(m, generator=generator) < 0.5 if (flip and dataset.flip) else None
    order = order.to(device)
    x = augment(t["train_x"].index_select(0, order), crop_padding, offs, flips)
    x = dataset.normalize(x, t).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = t["train_y"].index_select(0, order)
    for i in range(steps):
        yield x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size]


_SIDE_STREAMS: dict[torch.device, "torch.cuda.Stream"] = {}


def _side_stream(device: torch.device) -> "torch.cuda.Stream":
    """One warm-up stream per device for the whole process: cuBLAS keeps a workspace (tens of MiB) for every
    stream it has run on, so a new stream per candidate would leak that much per candidate."""
    if device not in _SIDE_STREAMS:
        _SIDE_STREAMS[device] = torch.cuda.Stream(device)
    return _SIDE_STREAMS[device]


class _Step:
    """One training step. Loss and correct-prediction sums accumulate in device tensors (``loss_sum``,
    ``correct``) so an epoch needs one host sync, at its end."""

    def __init__(self, model: nn.Module, device: torch.device, callbacks: Sequence[Any]):
        self.model, self.device = model, device
        self.callbacks = list(callbacks)
        self.forward: Callable = model  # what runs the forward pass: the model, or its DDP wrapper
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)

    def _hooks(self, name: str) -> list[Callable]:
        return [getattr(cb, name) for cb in self.callbacks if callable(getattr(cb, name, None))]

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()

    def release(self) -> None:
        """Free what the step holds beyond the model (the fast engine's CUDA graph)."""

    def state_dict(self) -> dict:
        """The optimizer's state (momentum), for a checkpoint; the lr is set per epoch from the protocol."""
        return {"optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["optimizer"])


class EagerStep(_Step):
    """The plain PyTorch step: ``torch.optim.SGD``, batches from the dataset's own iterator."""

    def __init__(self, model: nn.Module, protocol, device: torch.device, callbacks: Sequence[Any] = ()):
        from prune_nas.training.protocol import make_optimizer

        super().__init__(model, device, callbacks)
        self.opt = make_optimizer(model, protocol)
        self.hooks = {n: self._hooks(n) for n in ("extra_loss", "after_backward", "after_step")}

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def steps_per_epoch(self, dataset, batch_size: int) -> int:
        return dataset.steps_per_epoch(batch_size)

    def batches(self, dataset, protocol, generator):
        return dataset.train_batches(protocol.batch_size, generator, self.device,
                                     crop_padding=protocol.crop_padding, flip=protocol.flip)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        out = self.forward(x)
        loss = F.cross_entropy(out, y)
        for fn in self.hooks["extra_loss"]:
            loss = loss + fn(self.model)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        for fn in self.hooks["after_backward"]:
            fn(self.model)
        self.opt.step()
        for fn in self.hooks["after_step"]:
            fn(self.model)
        self.loss_sum += loss.detach() * len(y)
        self.correct += (out.detach().argmax(1) == y).sum()


def make_step(model: nn.Module, protocol, device: torch.device, engine: "EngineOptions | str",
              callbacks: Sequence[Any] = ()) -> "_Step":
    """The step object ``train_model`` runs: eager, or the fast engine's."""
    options = EngineOptions(engine) if isinstance(engine, str) else engine
    if options.kind not in ENGINES:
        from prune_nas.core.errors import UserError

        raise UserError(f"unknown engine {options.kind!r}; use one of {', '.join(ENGINES)}")
    options = options.resolved(device)
    if options.kind == "eager":
        return EagerStep(model, protocol, device, callbacks)
    return FastStep(model, protocol, device, options, callbacks)


class FastStep(_Step):
    """One training step for the fast engine: eager, or replayed from a CUDA graph captured on first use."""

    def __init__(self, model: nn.Module, protocol, device: torch.device, options: EngineOptions,
                 callbacks: Sequence[Any] = ()):
        super().__init__(model, device, callbacks)
        if protocol.nesterov:
            from prune_nas.core.errors import UserError

            raise UserError("the fast engine implements plain momentum SGD; use --engine eager for Nesterov")
        self.options = options
        if options.channels_last:
            model.to(memory_format=torch.channels_last)
        self.opt = ForeachSGD(model.parameters(), protocol.lr, protocol.momentum, protocol.weight_decay,
                              device)
        self.graph_safe = all(getattr(cb, "graph_safe", True) for cb in self.callbacks)
        self.use_graph = bool(options.graph) and device.type == "cuda" and self.graph_safe
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static: tuple[torch.Tensor, torch.Tensor] | None = None

    def set_lr(self, lr: float) -> None:
        self.opt.set_lr(lr)

    def steps_per_epoch(self, dataset, batch_size: int) -> int:
        return dataset.train_size // batch_size

    def batches(self, dataset, protocol, generator):
        dtype = torch.bfloat16 if self.options.amp else torch.float32
        return device_epoch(dataset, protocol.batch_size, generator, self.device,
                            crop_padding=protocol.crop_padding, flip=protocol.flip, dtype=dtype,
                            channels_last=bool(self.options.channels_last))

    def _body(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bool(self.options.amp),
                            cache_enabled=False):
            out = self.forward(x)
            loss = F.cross_entropy(out, y)
            for fn in self._hooks("extra_loss"):
                loss = loss + fn(self.model)
        loss.backward()
        for fn in self._hooks("after_backward"):
            fn(self.model)
        self.opt.step()
        for fn in self._hooks("after_step"):
            fn(self.model)
        self.loss_sum.add_(loss.detach().float() * len(y))
        self.correct.add_((out.detach().argmax(1) == y).sum())

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if not self.use_graph:
            self.opt.zero_grad()
            self._body(x, y)
            return
        if self._graph is None:
            self._capture(x, y)
        sx, sy = self._static
        sx.copy_(x)
        sy.copy_(y)
        self._graph.replay()

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Warm up on a side stream (cuDNN picks its kernels, lazy state is created), restore the exact
        pre-warm-up state, then capture one step. Capturing records kernels without running them."""
        saved = {k: v.clone() for k, v in self.model.state_dict().items()}
        acc = (self.loss_sum.clone(), self.correct.clone())
        self._static = (x.clone(), y.clone())
        stream = _side_stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.opt.zero_grad()
                self._body(*self._static)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        with torch.no_grad():
            self.model.load_state_dict(saved)
            for b in self.opt.bufs:
                b.zero_()
            self.loss_sum.copy_(acc[0])
            self.correct.copy_(acc[1])
        self.opt.zero_grad()
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._body(*self._static)

    def release(self) -> None:
        """Drop the graph and its memory pool (a long-lived worker trains many candidates). Gradients were
        allocated from the graph's private pool during capture: they go too, or the pool would stay alive
        as long as the model."""
        self.opt.zero_grad()
        if self._graph is not None:
            self._graph.reset()  # frees the graph and its pool now, whatever else still refers to it
        self._graph = None
        self._static = None
        if self.device.type == "cuda":
            import gc

            gc.collect()
            torch.cuda.empty_cache()
