"""Options shared by the commands that train: ``--nproc`` (one run on several processes) and ``--devices``
(one worker per device)."""

from __future__ import annotations

import sys

from prune_nas.core.errors import UserError


def add_nproc(group) -> None:
    group.add_argument("--nproc", type=int, default=1, metavar="N",
                       help="train each run (each trial, for search / worker) with N processes on this "
                            "machine (torch.distributed DDP: NCCL on GPUs, one per process; gloo on CPU); "
                            "the global batch stays the protocol's. On several machines start the command "
                            "under torchrun instead")


def launch_if_asked(args, lost: str = "nothing of the failed run was stored") -> int | None:
    """Re-execute the command as ``--nproc`` ranks and return its exit status, or None when this process is
    to train itself (alone, or as a rank a launcher started). ``lost``: what a failed launch leaves, said
    after the failure."""
    from prune_nas.training import distributed

    nproc = getattr(args, "nproc", 1)
    if nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {nproc}")
    if nproc == 1 or distributed.launched():
        return None
    try:
        distributed.launch(_without_nproc(args.argv), nproc)
    except distributed.DistributedFailure as e:
        print(f"prune-nas: error: {e}; {lost}", file=sys.stderr)
        return 1
    return 0


def join(args, device: str) -> str:
    """Join the launch this process is a rank of (if any); returns this rank's device. Ranks other than 0
    show no progress and print nothing."""
    from prune_nas.training import distributed

    _, device = distributed.join_from_env(device)
    if not distributed.is_writer():
        args.no_progress = True
    distributed.quiet_other_ranks()
    return device


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def add_devices(group) -> None:
    group.add_argument("--devices", metavar="LIST",
                       help="one worker per device, each pinned to it: GPU indices (0,1,2,3), 'all', or cpu "
                            "stand-ins (cpu,cpu); overrides --device")
    group.add_argument("--per-device", type=int, default=1, metavar="K",
                       help="workers per device with --devices (several share a GPU under MPS when it can be "
                            "started; default 1)")


def devices_of(args) -> list[str] | None:
    """The worker slots ``--devices`` / ``--per-device`` ask for, or None for one process."""
    from prune_nas.training.parallel import parse_devices

    if not getattr(args, "devices", None):
        if getattr(args, "per_device", 1) != 1:
            raise UserError("--per-device needs --devices")
        return None
    if getattr(args, "nproc", 1) > 1:
        raise UserError("--devices and --nproc do not combine: one spreads runs over devices, the other "
                        "trains one run on several processes")
    return parse_devices(args.devices, args.per_device)


def report_workers(codes: list[int], devices: list[str], status: str) -> int:
    """One line on how the device workers ended; exit status 1 when one of them failed."""
    failed = [f"{d} (exit {c})" for d, c in zip(devices, codes) if c != 0]
    print(f"{len(devices)} workers on {', '.join(sorted(set(devices)))} (MPS: {status}); "
          + (f"failed: {', '.join(failed)}" if failed else "all finished"), file=sys.stderr)
    return 1 if failed else 0
