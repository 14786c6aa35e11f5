"""The ``prune-nas`` command line: argument parsing and printing only.

Each command group lives in its own module with a ``register(subparsers)`` function; ``main`` wires them up
and turns user errors into one line on stderr and exit status 2 (internal errors keep their traceback).

May import: every other layer. Nothing imports it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from prune_nas.core.errors import UserError

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES = ["genome", "train", "discover", "mine", "evaluate", "experiments"]

DESCRIPTION = """\
prune-nas: network pruning as architecture search.

Pruning methods produce genomes (JSON architectures); every genome trains from scratch under an epoch
(Scratch-E) or FLOPs (Scratch-B) budget and is compared with fine-tuning and uniform pruning.
Start with `prune-nas genome list`, then `prune-nas discover --method slimming` (embedded digits data, CPU).
"""


def build_parser() -> argparse.ArgumentParser:
    from prune_nas.core.version import __version__

    parser = argparse.ArgumentParser(prog="prune-nas", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"prune-nas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        qualified = f"{__name__}.{name}"
        if importlib.util.find_spec(qualified) is not None:
            importlib.import_module(qualified).register(sub)
    return parser


def one_line(text: str) -> str:
    """``text`` with control characters (a newline in a key of a user's file) escaped: one line, always."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _ranks_end_together() -> None:
    """The ranks of a ``--nproc`` / torchrun launch leave together. A rank that exited while rank 0 still
    wrote (the study's table, a spec's manifest and figures) aborted now and then in gloo's teardown
    ("terminate called without an active exception", SIGABRT: 3 of 20 runs of a 3-trial `search --nproc 2`
    here, 0 of 26 once the ranks met at the end)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a launched rank (torch is loaded by then)
        from prune_nas.training import distributed

        distributed.barrier()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a distributed launch re-executes
    try:
        status = int(args.func(args) or 0)
        _ranks_end_together()
        return status
    except UserError as e:
        print(f"prune-nas: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prune-nas: interrupted; finished results are kept and will be reused", file=sys.stderr)
        return 130
    except RuntimeError as e:  # a rank of a distributed run whose peer died: one line, the launcher says why
        from prune_nas.training.distributed import peer_lost

        message = peer_lost(e)
        if message is None:
            raise
        print(f"prune-nas: error: {message}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
