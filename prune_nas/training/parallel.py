"""Processes pinned to the devices of a machine (``--devices`` / ``--per-device``): one per slot.

At batch 64 one CIFAR candidate leaves most of a large GPU idle, so running several side by side raises the
total throughput. Processes time-slice a GPU unless NVIDIA's MPS daemon is running, which lets their kernels
overlap; ``start_mps`` starts it when some GPU is shared and it can (root, binary present), and says why not
otherwise. Each process gets an equal share of its GPU's memory
(``torch.cuda.set_per_process_memory_fraction``), so the processes sharing it cannot exhaust it, and its share
of the CPU cores. :func:`on_devices` runs
long-lived workers that share their work through something of their own (an Optuna study);
:func:`map_on_devices` hands independent items to whichever pinned process is free (a spec's runs).
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


def parse_devices(text: str, per_device: int = 1) -> list[str]:
    """``--devices`` as one entry per worker: ``"0,1"`` -> cuda:0, cuda:1; ``"all"`` -> every CUDA device;
    ``cpu`` entries are stand-ins (one CPU process each, for machines without GPUs and for tests). Each device
    is repeated ``per_device`` times."""
    import torch

    from prune_nas.core.errors import UserError

    if per_device < 1:
        raise UserError(f"--per-device must be >= 1, got {per_device}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = [f"cuda:{i}" for i in range(count)] if text.strip() == "all" else \
        [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UserError("--devices names no device (e.g. 0,1,2,3, all, or cpu,cpu)")
    devices = []
    for name in names:
        if name == "cpu":
            devices.append("cpu")
            continue
        index = name.removeprefix("cuda:")
        if not index.isdigit():
            raise UserError(f"--devices: {name!r} is not a GPU index, cuda:N or cpu")
        if int(index) >= count:
            raise UserError(f"--devices: GPU {index} does not exist here ({count} CUDA device"
                            f"{'s' * (count != 1)}); use cpu stand-ins on a machine without GPUs")
        devices.append(f"cuda:{int(index)}")
    return [d for d in devices for _ in range(per_device)]


def pin(device: str, sharing: int, processes: int) -> None:
    """Settle this process on ``device``, shared with ``sharing - 1`` other processes, ``processes`` in all on
    the machine: its current CUDA device and share of GPU memory, or its share of the CPU cores."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        torch.cuda.set_per_process_memory_fraction(min(1.0, GPU_MEMORY_SHARED / sharing),
                                                   torch.device(device))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes))


def _slot(fn: Callable[..., Any], device: str, sharing: int, processes: int, kwargs: dict) -> Any:
    pin(device, sharing, processes)
    return fn(device=device, **kwargs)


def on_devices(fn: Callable[..., Any], devices: Sequence[str], kwargs: dict, *, mps: bool = True
               ) -> tuple[list[int], str]:
    """Run ``fn(device=d, **kwargs)`` once per entry of ``devices``, each in its own spawned process pinned to
    its device, all at once; wait for all. Returns the processes' exit codes (in ``devices`` order) and the
    MPS status. For workers that share their work through something of their own (an Optuna study)."""
    import multiprocessing as mp

    sharing = {d: devices.count(d) for d in devices}
    status = _mps_for(sharing) if mps else "not used"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_slot, args=(fn, d, sharing[d], len(devices), kwargs), name=f"worker-{d}-{i}")
             for i, d in enumerate(devices)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:  # the children got the same Ctrl-C; wait for them to put their trials back
        for p in procs:
            p.join()
        raise
    return [p.exitcode for p in procs], status


def _mps_for(sharing: dict[str, int]) -> str:
    """Start MPS when some GPU is shared by several processes (their kernels then overlap)."""
    return start_mps() if any(n > 1 for d, n in sharing.items() if d.startswith("cuda")) else "not used"


_PINNED: dict = {}


def _init_pinned(slots: Any, sharing: dict, processes: int) -> None:
    device = slots.get()
    _PINNED["device"] = device
    pin(device, sharing[device], processes)


def _call_pinned(job: tuple) -> Any:
    fn, item = job
    return fn(item, _PINNED["device"])


def map_on_devices(fn: Callable[[Any, str], Any], items: Sequence[Any], devices: Sequence[str], *,
                   mps: bool = True) -> tuple[list[Any], str]:
    """``[fn(item, device) for item in items]`` over a pool of one process per entry of ``devices``, each
    process pinned to its device for its whole life; an item goes to whichever process is free next
    (``concurrent.futures.ProcessPoolExecutor``: independent items, order of results kept; a process that
    dies fails the map with ``BrokenProcessPool`` instead of hanging it). Returns the results and the MPS
    status."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    sharing = {d: devices.count(d) for d in devices}
    status = _mps_for(sharing) if mps else "not used"
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        slots = manager.Queue()
        for d in devices:
            slots.put(d)
        with ProcessPoolExecutor(len(devices), mp_context=ctx, initializer=_init_pinned,
                                 initargs=(slots, sharing, len(devices))) as pool:
            return list(pool.map(_call_pinned, [(fn, item) for item in items])), status
