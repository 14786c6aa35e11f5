"""Several candidates trained at once on one device, one process each.

At batch 64 one CIFAR candidate leaves most of a large GPU idle, so running several side by side raises the
total throughput. Processes time-slice a GPU unless NVIDIA's MPS daemon is running, which lets their kernels
overlap; ``start_mps`` starts it when it can (root, binary present) and says why not otherwise. Each process
gets an equal share of GPU memory (``torch.cuda.set_per_process_memory_fraction``) so N processes cannot
exhaust the device, and the number of processes is bounded by the caller.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

# The workers share this fraction of the GPU's memory equally; the rest is headroom for what the caching
# allocator does not count: each process's CUDA context (a few hundred MB) and the libraries' workspaces.
GPU_MEMORY_SHARED = 0.95
# A worker process is replaced after this many tasks, returning what long-lived processes accumulate (cached
# allocator blocks, fragmentation, per-task data); a fresh one costs a torch import, small beside a training.
TASKS_PER_WORKER = 8


def start_mps() -> str:
    """Start the MPS control daemon if possible. Returns 'started', 'running' or why it was not started."""
    if shutil.which("nvidia-cuda-mps-control") is None:
        return "unavailable: nvidia-cuda-mps-control is not installed"
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    if os.path.exists(os.path.join(pipe, "control")):
        return "running"
    r = subprocess.run(["nvidia-cuda-mps-control", "-d"], capture_output=True, text=True)
    if r.returncode == 0:
        return "started"
    return f"not started: {(r.stderr or r.stdout).strip()[:200] or f'exit {r.returncode}'}"


def _init_worker(device: str, procs: int) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(min(1.0, GPU_MEMORY_SHARED / procs), torch.device(device))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // procs))


def map_concurrently(fn: Callable[[Any], Any], items: Sequence[Any], *, procs: int, device: str = "cpu",
                     mps: bool = True) -> tuple[list[Any], str]:
    """``[fn(item) for item in items]`` in ``procs`` spawned processes (order kept), and the MPS status.

    ``fn`` must be importable (a module-level function): each process imports it fresh, so CUDA state is never
    shared through fork.
    """
    import multiprocessing as mp

    if procs < 1:
        from prune_nas.core.errors import UserError

        raise UserError(f"--procs must be >= 1, got {procs}")
    status = start_mps() if (mps and device.startswith("cuda")) else "not used"
    if procs == 1:
        return [fn(item) for item in items], status
    ctx = mp.get_context("spawn")
    with ctx.Pool(procs, initializer=_init_worker, initargs=(device, procs),
                 maxtasksperchild=TASKS_PER_WORKER) as pool:
        return pool.map(fn, items, chunksize=1), status


def _run_one(job: tuple) -> dict:
    from prune_nas.training.runs import run
    from prune_nas.training.store import Store

    spec, root, device, engine = job
    return run(spec, Store(root), device=device, progress=False, engine=engine)


def train_concurrently(specs: Sequence[Any], store, *, procs: int, device: str = "cpu",
                       engine: str = "fast") -> tuple[list[dict], str]:
    """Train (or reuse) every ``RunSpec`` with ``procs`` processes on ``device``; records in spec order."""
    jobs = [(spec, str(store.root), device, engine) for spec in specs]
    return map_concurrently(_run_one, jobs, procs=procs, device=device)
