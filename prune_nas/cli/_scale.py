"""Options shared by the commands that train: ``--nproc`` (one run on several processes) and ``--devices``
(one worker per device)."""

from __future__ import annotations

import sys

from prune_nas.core.errors import UserError


def add_nproc(group) -> None:
    group.add_argument("--nproc", type=int, default=1, metavar="N",
                       help="train each run with N processes on this machine (torch.distributed DDP: NCCL on "
                            "GPUs, one per process; gloo on CPU); the global batch stays the protocol's. On "
                            "several machines start the command under torchrun instead")


def launch_if_asked(args) -> int | None:
    """Re-execute the command as ``--nproc`` ranks and return its exit status, or None when this process is
    to train itself (alone, or as a rank a launcher started)."""
    from prune_nas.training import distributed

    nproc = getattr(args, "nproc", 1)
    if nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {nproc}")
    if nproc == 1 or distributed.launched():
        return None
    try:
        distributed.launch(_without_nproc(args.argv), nproc)
    except distributed.DistributedFailure as e:
        print(f"prune-nas: error: {e}; nothing of the failed run was stored", file=sys.stderr)
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
