"""One candidate trained by several processes (torch.distributed DistributedDataParallel).

How a run goes distributed:

* ``prune-nas train ... --nproc N`` re-executes the same command under torch's own launcher
  (``torch.distributed.launcher.elastic_launch``, the library behind ``torchrun --standalone``): it picks a
  free rendezvous port, starts N workers with ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` set, and when one of
  them dies it stops the others and reports which rank failed and why (:func:`launch`). It is used in-process
  rather than as ``python -m torch.distributed.run`` so that the failure comes back as an object (rank, exit
  code, signal) and is printed as one line, not as torchrun's banner. ``torch.multiprocessing.spawn`` was not
  used: it has no rendezvous, so the same code could not also join a launch over several machines.
* Several machines: the user starts ``torchrun --nnodes M --nproc-per-node N ... -m prune_nas train ...`` on
  each; the command sees ``WORLD_SIZE`` in its environment and joins (:func:`join_from_env`).

What stays the paper's: the global batch. Every rank draws the same shuffle, crops and flips from the same
seeded generator and keeps its own contiguous slice of each global batch (:meth:`Replicas.shard`), so an
epoch's images are split without overlap and a run's spec and store key do not depend on N. Gradients are
combined as the global batch's mean even when the slices differ in size (the last batch of an epoch): each
rank's mean-loss gradient is weighted by its share of the batch before the all-reduce (a DDP communication
hook). BatchNorm normalises with the statistics of the whole global batch (:class:`GlobalBatchNorm`, an
all-reduce of per-channel sums): torch's ``SyncBatchNorm`` does this on GPUs only, and one code path on every
backend is what the CPU tests check. With these, two ranks compute what one process computes, to float
rounding (tests/test_distributed.py).

Only rank 0 writes (the store record, weights); the other ranks learn from it whether a run was already
stored (:func:`broadcast`), so a store that only rank 0 can see still works. NCCL on CUDA, gloo on CPU.
The fast engine runs distributed without its CUDA graph (gradient all-reduce cannot be captured in the
step's graph as written); everything else about it stays.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import torch
import torch.distributed as dist
from torch import nn

# A rank that stops answering (its machine died) fails the others' collectives after this long.
TIMEOUT = datetime.timedelta(minutes=30)
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int
    world_size: int
    backend: str

    def to_dict(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend}


def current() -> World | None:
    """The process group this process belongs to, or None when it trains alone."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return World(dist.get_rank(), dist.get_world_size(), str(dist.get_backend()))


def launched() -> bool:
    """Whether a launcher (torchrun, or :func:`launch`) started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join_from_env(device: str) -> tuple[World | None, str]:
    """Join the process group a launcher described in the environment; returns it and this rank's device
    (``cuda`` becomes ``cuda:<LOCAL_RANK>``). Outside a launch: ``(None, device)``."""
    if not launched():
        return None, device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{local}" if device == "cuda" else device
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    if not cuda:  # the ranks of one machine share its cores
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
    return current(), device


def is_writer() -> bool:
    """Rank 0, or a process training alone: the one that writes results."""
    world = current()
    return world is None or world.rank == 0


def describe() -> dict:
    """How a run was trained, for its record."""
    world = current()
    return world.to_dict() if world else {"world_size": 1, "backend": None}


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself when training alone)."""
    if current() is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if current() is not None:
        dist.barrier()


def on_writer(make: Callable[[], T]) -> T:
    """``make()`` run by rank 0 alone, its result sent to every rank (``make()`` itself when training alone).

    For work that writes files (a pruned genome, a pattern, a table) or must happen once: the other ranks
    get rank 0's object, so they go on with exactly what was written. A rank 0 that raises ends the launch
    (the launcher stops the ranks waiting here)."""
    world = current()
    if world is None:
        return make()
    return broadcast(make() if world.rank == 0 else None)


def quiet_other_ranks() -> None:
    """Ranks other than 0 print nothing (rank 0 speaks for the run); their errors still reach stderr."""
    world = current()
    if world is not None and world.rank != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


# ---- launching ---------------------------------------------------------------------------------------------
def launch(argv: list[str], nproc: int) -> None:
    """Run ``python -m prune_nas <argv>`` as ``nproc`` ranks on this machine and wait for them.

    Raises :class:`DistributedFailure` naming the first rank that failed and why (exit code or signal, and the
    Python error when the rank raised one); the launcher has then stopped the other ranks.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.1, start_method="spawn")
    quiet = logging.getLogger("torch.distributed.elastic")  # our one line replaces its failure report
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, sys.executable)("-m", "prune_nas", *argv)
    except ChildFailedError as e:
        raise DistributedFailure(failure_reason(e)) from None
    finally:
        quiet.setLevel(level)


def peer_lost(error: BaseException) -> str | None:
    """What to print when this rank's collective failed because another rank went away; None when ``error``
    is something else (or this process is not a launched rank), which then keeps its traceback."""
    if not launched():
        return None
    text = str(error)
    comm = isinstance(error, getattr(dist, "DistError", ())) or any(
        s in text
        for s in ("Connection closed by peer", "Connection reset by peer", "NCCL error", "Broken pipe"))
    if not comm:
        return None
    detail = re.sub(r"^\[[^\]]*\]\s*", "", text.strip().splitlines()[0]).split(". ")[0]  # drop "[file:line]"
    return f"rank {os.environ.get('RANK', '?')} stopped: another rank went away ({detail[:120]})"


class DistributedFailure(RuntimeError):
    """A rank of a distributed run failed; the message says which and why."""


def failure_reason(error: Any) -> str:
    """One line from a launcher's ChildFailedError: the first failed rank, its exit status or signal, and
    the last line of its Python error when it wrote one."""
    rank, failure = error.get_first_failure()
    if failure.exitcode < 0:
        how = f"was killed by {failure.signal_name()}"
    else:
        how = f"exited with status {failure.exitcode}"
    message = failure.message if isinstance(failure.message, str) else ""
    if failure.exitcode >= 0 and message and not message.startswith("To enable traceback"):
        how += f": {message.strip().splitlines()[-1]}"
    others = sorted(r for r in error.failures if r != rank)
    tail = (f"; the launcher stopped rank{'s' * (len(others) > 1)} {', '.join(map(str, others))}"
            if others else "")
    return f"distributed run failed: rank {rank} {how}{tail}"


# ---- training ----------------------------------------------------------------------------------------------
class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum over ranks of the incoming gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (all ranks' slices together).

    One all-reduce of per-channel count, sum and sum of squares per layer and step; running statistics are
    updated as ``nn.BatchNorm2d`` does (unbiased variance). Same parameters and buffers as ``BatchNorm2d``, so
    a model's state dict is unchanged. Instances are BatchNorm2d turned into this class for the length of a
    run (:meth:`Replicas.close` turns them back).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or current() is None:
            return super().forward(x)
        xf = x.float()
        count = torch.full((1,), float(x.numel() // x.shape[1]), device=x.device)
        stats = _AllReduceSum.apply(torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count]))
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_((var * n / (n - 1).clamp_min(1)).detach(), m)
        shape = (1, c, 1, 1)
        out = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def _weighted_allreduce(state, bucket):  # no annotations: DDP checks them against its own classes
    """DDP communication hook: each rank's gradient (of its slice's mean loss) times its share of the global
    batch, summed over ranks = the gradient of the global batch's mean loss."""
    tensor = bucket.buffer()
    tensor.mul_(state.share)
    return dist.all_reduce(tensor, async_op=True).get_future().then(lambda fut: fut.value()[0])


class Slice(NamedTuple):
    """A rank's part of a global batch, from a dataset that reads only that part (the ImageNet folder on a
    GPU): the loop takes it as it is, weighting the rank by ``len(y) / size``."""

    x: torch.Tensor
    y: torch.Tensor
    size: int


class Replicas:
    """The distributed side of one ``train_model`` call: created by :func:`attach`, used by the loop to shard
    batches and total each epoch's sums, closed when training ends."""

    def __init__(self, world: World, model: nn.Module, step: Any, device: torch.device):
        from torch.nn.parallel import DistributedDataParallel

        self.world, self.model = world, model
        self.share = 1.0 / world.world_size
        self.norms = [m for m in model.modules() if type(m) is nn.BatchNorm2d]
        for m in self.norms:
            m.__class__ = GlobalBatchNorm
        ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        # Buffers are the same on every rank (global statistics), so DDP need not broadcast them each step.
        self.ddp = DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)
        self.ddp.register_comm_hook(self, _weighted_allreduce)
        step.forward = self.ddp
        if getattr(step, "use_graph", False):
            step.use_graph = False  # see the module docstring

    def shard(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[tuple[torch.Tensor,
                                                                                           torch.Tensor]]:
        """This rank's contiguous slice of every global batch (slices differ by at most one image). A batch
        smaller than the world is skipped by every rank alike, since a rank with nothing cannot step."""
        r, w = self.world.rank, self.world.world_size
        for batch in batches:
            if isinstance(batch, Slice):  # the dataset read only this rank's part
                if batch.size >= w:
                    self.share = len(batch.y) / batch.size
                    yield batch.x, batch.y
                continue
            x, y = batch
            n = len(y)
            if n < w:
                continue
            lo, hi = r * n // w, (r + 1) * n // w
            self.share = (hi - lo) / n
            yield x[lo:hi], y[lo:hi]

    def totals(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> tuple[float, float, int]:
        """An epoch's loss sum, correct count and images over all ranks."""
        t = torch.stack([loss_sum.detach().double().reshape(()), correct.double().reshape(()),
                         torch.tensor(float(seen), dtype=torch.float64, device=loss_sum.device)])
        dist.all_reduce(t)
        return float(t[0]), float(t[1]), int(t[2])

    def close(self) -> None:
        for m in self.norms:
            m.__class__ = nn.BatchNorm2d


def attach(step: Any, model: nn.Module, device: torch.device) -> Replicas | None:
    """Make ``step`` train ``model`` as one replica of the current process group; None when alone."""
    world = current()
    return Replicas(world, model, step, device) if world is not None else None
