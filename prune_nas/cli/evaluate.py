"""`prune-nas evaluate` (one row of the paper's tables), `search` / `worker` (Optuna studies over a search
space) and `results` (a study's table at any time)."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys

from prune_nas.cli import _args
from prune_nas.cli._format import human, table
from prune_nas.cli._scale import (
    add_devices,
    add_nproc,
    devices_of,
    join,
    launch_if_asked,
    report_workers,
)
from prune_nas.cli.discover import add_method_args, method_args
from prune_nas.core.errors import UserError

EVALUATE_EXAMPLES = """\
examples:
  prune-nas evaluate                                       # embedded default: slimming, digits, CPU, minutes
  prune-nas evaluate --method slimming --model vgg19 --dataset cifar10 --ratio 0.7 --seeds 5
  prune-nas evaluate --method l1-norm --model resnet56 --config B --dataset cifar10 --download
  prune-nas evaluate --method magnitude --ratio 0.8 --seeds 3
"""
SEARCH_EXAMPLES = """\
examples:
  prune-nas search --space search_spaces/vgg11-digits.yaml --trials 20          # one machine, SQLite file
  prune-nas search --space search_spaces/vgg19-cifar100.yaml --trials 200 \\
      --storage postgresql://user:pass@dbhost/prune_nas                        # then, on each extra machine:
  prune-nas worker --study vgg19-cifar100 --storage postgresql://user:pass@dbhost/prune_nas
  prune-nas results vgg19-cifar100 --storage postgresql://user:pass@dbhost/prune_nas
  prune-nas search --space my-imagenet.yaml --nproc 8     # each candidate trained on 8 GPUs (DDP), in turn
  torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint host0:29500 \
      -m prune_nas worker --study my-imagenet --storage postgresql://...      # each on 16 GPUs of 2 machines
  optuna-dashboard sqlite:///artifacts/studies/vgg11-digits.db                  # Optuna's own tools work too
"""


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="a pruning method vs fine-tuning, Scratch-E/B, uniform and random "
                                        "pruning over seeds, with significance tests",
                       description="Reproduce one row of the paper's tables as a one-row experiment (the "
                                   "runner of `prune-nas run`): per seed, prune (or reuse) the genome, train "
                                   "every baseline (stored runs are reused), then print mean ± std, the best "
                                   "in bold, and Welch's t-tests. With no flags: the embedded default on "
                                   "digits (CPU, minutes).",
                       epilog=EVALUATE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="slimming",
                   help="pruning method (default slimming; `prune-nas methods`)")
    p.add_argument("--model", help="base model (default: the discover pipeline's for the dataset)")
    p.add_argument("--dataset", default="digits", help="digits (default, embedded), synthetic, cifar10, "
                                                       "cifar100, imagenet")
    p.add_argument("--ratio", type=_args.finite_float,
                   help="fraction pruned (the method's default otherwise)")
    p.add_argument("--seeds", type=_args.positive_int,
                   help="seeds per row (default 3 on digits, 5 otherwise)")
    p.add_argument("--width", type=_args.positive_float,
                   help="width multiplier of the large model (default 0.25 on digits)")
    p.add_argument("--epochs", type=_args.positive_int,
                   help="base epochs: the large model's and Scratch-E's (default 10 on "
                        "digits, 160 CIFAR)")
    p.add_argument("--finetune-epochs", type=_args.positive_int,
                   help="fine-tune epochs (default: 5 on digits, else a quarter of --epochs: 40 of 160 as "
                        "in the paper)")
    p.add_argument("--input-size", type=_args.positive_int,
                   help="input size (default: 16 on digits, the model's otherwise)")
    add_method_args(p)
    _where(p)
    p.add_argument("--genome-dir", help="where the pruned genomes are read and written (default "
                                        "artifacts/runs/evaluate/genomes)")
    p.add_argument("--out", help="folder for table.md / .csv / .json and the runner's manifest.json (default "
                                 "artifacts/runs/evaluate/<name>)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--latency", action="store_true",
                   help="add each row's measured batch-1 latency on the evaluating device (a column)")
    p.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("search", help="an Optuna study over a search space, seeded with pruned genomes",
                       description="Run (or resume) an Optuna study over a search space file: each trial "
                                   "trains one candidate genome x budget x seed from scratch. Seed genomes "
                                   "and uniform pruning run first.", epilog=SEARCH_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--space", required=True, help="search space file, or a name in search_spaces/")
    s.add_argument("--trials", type=_args.positive_int, default=20,
                   help="settled trials the study should have (default 20)")
    s.add_argument("--study", help="study name (default: the space's name)")
    _study_opts(s)
    s.set_defaults(func=cmd_search)

    w = sub.add_parser("worker", help="join an existing study (on this or another machine), run its trials",
                       description="Join a study created by `prune-nas search`; its search space is read "
                                   "from the study. Stops when the study has its target of settled trials.",
                       epilog=SEARCH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("--study", required=True, help="study name")
    w.add_argument("--trials", type=_args.positive_int,
                   help="settled trials the study should have (default: what `search` set)")
    w.add_argument("--sampler-seed", type=_args.nonneg_int,
                   help="seed of this worker's sampler (default: random)")
    _study_opts(w)
    w.set_defaults(func=cmd_worker)

    r = sub.add_parser("results", help="a study's table: best candidates or the Pareto front, trial counts")
    r.add_argument("study", metavar="STUDY", help="study name")
    r.add_argument("--storage",
                   help="storage URL (default: the study's SQLite file under artifacts/studies/)")
    r.add_argument("--top", type=_args.positive_int, default=10, help="candidates to show (default 10)")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.set_defaults(func=cmd_results)


def _where(p) -> None:
    r = p.add_argument_group("where and how")
    r.add_argument("--device", type=_args.device, default="auto",
                   help="cpu, cuda, ... (default: cuda if available)")
    r.add_argument("--data-dir", help="dataset folder (default $PRUNE_NAS_HOME/data or artifacts/data)")
    r.add_argument("--download", action="store_true", help="download CIFAR if missing")
    r.add_argument("--store", help="results store (default $PRUNE_NAS_HOME/store or artifacts/store)")
    r.add_argument("--threads", type=_args.positive_int,
                   help="CPU threads for torch (default 1 on the embedded datasets)")
    r.add_argument("--no-progress", action="store_true")
    add_nproc(r)


def _study_opts(p) -> None:
    p.add_argument("--storage", help="Optuna storage URL: sqlite:///file.db, postgresql://user@host/db, ... "
                                     "(default: artifacts/studies/<study>.db)")
    p.add_argument("--heartbeat", type=_args.positive_int, default=10,
                   help="seconds between a running trial's heartbeats; a trial silent for 3x this is retried "
                        "(default 10)")
    p.add_argument("--grace", type=_args.positive_int,
                   help="seconds of silence before a trial counts as dead (default 3 x "
                        "--heartbeat)")
    _where(p)
    add_devices(p.add_argument_group("every device of this machine"))


def _setup(args, dataset: str | None) -> str:
    import torch

    from prune_nas.cli.train import _device
    from prune_nas.design.discover import SHORT

    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    elif device == "cpu" and dataset in SHORT:
        torch.set_num_threads(1)  # tiny convolutions: a second thread costs more than it gains
    return device


def _log(args):
    return (lambda s: print(s, file=sys.stderr, flush=True)) if getattr(args, "json", False) else \
        (lambda s: print(s, flush=True))


def cmd_evaluate(args) -> int:
    from prune_nas.repro.evaluate import command_line, evaluate
    from prune_nas.training import distributed

    device = _setup(args, args.dataset)
    launched = launch_if_asked(args)  # --nproc N: every training run of the row on N processes
    if launched is not None:
        return launched
    device = join(args, device)
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if distributed.is_writer() else (lambda s: None)
    # Progress goes to stderr so that stdout is the table alone (`prune-nas evaluate > table.md`).
    comp = evaluate(args.method, model=args.model, dataset=args.dataset, ratio=args.ratio, seeds=args.seeds,
                    width=args.width, epochs=args.epochs, finetune_epochs=args.finetune_epochs,
                    input_size=args.input_size, params=method_args(args), device=device, store=args.store,
                    genome_dir=args.genome_dir, data_dir=args.data_dir, download=args.download,
                    progress=not args.no_progress, log=log,
                    command=command_line(), out_dir=args.out, latency=args.latency)
    if args.json:
        print(json.dumps(comp.to_dict(), indent=1))
        return 0
    bold = "ansi" if sys.stdout.isatty() else "md"
    print()
    print(f"### {comp.title}\n")
    print(comp.markdown(bold))
    print()
    for line in comp.footer():
        print(line)
    print(f"\nwritten to {comp.meta['written_to']}/table.{{md,csv,json}} ({comp.meta['wall_time_s']:.0f} s, "
          f"{comp.meta['device']})")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (a scheduler stopping the job) interrupts like Ctrl-C: the running trial goes back in the
    queue."""
    old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def cmd_search(args) -> int:
    from prune_nas.search.spaces import load_space
    from prune_nas.search.studies import search

    space = load_space(args.space)
    device = _setup(args, space.dataset)
    if devices_of(args):
        from prune_nas.search.studies import create_study

        if args.trials < 1:
            raise UserError(f"--trials must be >= 1, got {args.trials}")
        study = create_study(space, args.storage, trials=args.trials, study_name=args.study,
                             heartbeat=args.heartbeat, grace=args.grace, log=_log(args))
        args.study = study.study_name
        return _workers_on_devices(args, args.trials)
    args.study = args.study or space.name
    # The space is checked; rank 0 creates the study (and removes it if it fails before a trial).
    device, done = _ranks(args, device)
    if done is not None:
        return done
    with _sigterm_interrupts():
        summary = search(space, trials=args.trials, storage=args.storage, study_name=args.study,
                         store=args.store, device=device, progress=not args.no_progress,
                         heartbeat=args.heartbeat, grace=args.grace, data_dir=args.data_dir,
                         download=args.download, log=_log(args))
    print()
    print(results_text(summary))
    return 0


def cmd_worker(args) -> int:
    from prune_nas.search.studies import worker

    device = _setup(args, None)
    if devices_of(args):
        return _workers_on_devices(args, args.trials)
    def check() -> None:  # before a launch: the study exists
        from prune_nas.search.studies import load_study

        load_study(args.study, args.storage, heartbeat=args.heartbeat, grace=args.grace)

    device, done = _ranks(args, device, check)
    if done is not None:
        return done
    with _sigterm_interrupts():
        summary = worker(args.study, storage=args.storage, trials=args.trials, store=args.store,
                         device=device, progress=not args.no_progress, heartbeat=args.heartbeat,
                         grace=args.grace, sampler_seed=args.sampler_seed, data_dir=args.data_dir,
                         download=args.download, log=_log(args))
    print()
    print(results_text(summary))
    return 0


def _ranks(args, device: str, check=None) -> tuple[str, int | None]:
    """``--nproc N`` (or a torchrun launch) of ``search`` / ``worker``: rank 0 works on the study and the
    other ranks train each of its candidates with it (``search/objective.py``). Returns this process' device
    and, when its part is over (the launch it started ended, or it was a rank other than 0), its exit
    status; ``None`` for the process that works on the study. ``check()`` runs before this process launches
    the ranks, so that a study that cannot be opened is one line, not a failed launch."""
    from prune_nas.search.objective import follow
    from prune_nas.search.studies import redact
    from prune_nas.training import distributed

    if check is not None and getattr(args, "nproc", 1) > 1 and not distributed.launched():
        check()
    resume = f"prune-nas worker --study {args.study}" + (f" --storage {redact(args.storage)}"
                                                         if args.storage else "")
    launched = launch_if_asked(args, lost="a trial being trained goes back to the study's queue; go on "
                                          f"with: {resume}")
    if launched is not None:
        return device, launched
    device = join(args, device)
    if distributed.is_writer():
        return device, None
    follow(args.store, device=device, data_dir=args.data_dir, download=args.download)
    return device, 0


def _workers_on_devices(args, trials: int | None) -> int:
    """One study worker per ``--devices`` slot (Optuna hands out the trials), then the study's table."""
    from prune_nas.search.studies import load_study, summarize, worker
    from prune_nas.training.parallel import on_devices

    if getattr(args, "sampler_seed", None) is not None:
        raise UserError("--sampler-seed seeds one worker; leave it out with --devices (each draws its own)")
    devices = devices_of(args)
    with _sigterm_interrupts():
        codes, status = on_devices(worker, devices, {
            "study_name": args.study, "storage": args.storage, "trials": trials, "store": args.store,
            "progress": False, "heartbeat": args.heartbeat, "grace": args.grace, "data_dir": args.data_dir,
            "download": args.download})
    failed = report_workers(codes, devices, status)
    study, _ = load_study(args.study, args.storage)
    print()
    print(results_text(summarize(study)))
    return failed


def cmd_results(args) -> int:
    from prune_nas.search.studies import load_study, summarize

    study, _ = load_study(args.study, args.storage)
    summary = summarize(study)
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(results_text(summary, args.top))
    return 0


def results_text(summary: dict, top: int = 10) -> str:
    """The study's table: counts, then the best candidates (single objective) or the Pareto front."""
    c = summary["counts"]
    obj = summary["objective"]
    space = summary["space"]
    lines = [f"study {summary['study']}: {space['model']} (x{space['width']:g}) on {space['dataset']}, "
             f"objective {json.dumps(obj)}, budget {space['budget']['kind']}"]
    lines.append(f"trials: {c['complete']} complete, {c['early_stopped']} stopped early, {c['failed']} "
                 f"failed, {c['infeasible']} infeasible (not trained), {c['interrupted']} interrupted and "
                 f"retried, {c['running']} running, {c['waiting']} waiting; target "
                 f"{summary.get('target_trials')} settled")
    cands = summary["candidates"]
    if not cands:
        lines.append("no finished candidates yet")
        return "\n".join(lines)

    timed = any(x.get("latency_ms") is not None for x in cands)

    def rows(items):
        ms = [[f"{x['latency_ms']:.3f}" if x.get("latency_ms") else "-"] if timed else [] for x in items]
        return [[i + 1, x["origin"], x["genome_name"] or x["genome_key"], human(x["params"]),
                 human(x["flops"])] + ms[i] + [x["epochs"] if x["epochs"] is not None else "-", x["seeds"],
                   f"{100 * x['mean']:.2f} ± {100 * x['std']:.2f}", ",".join(map(str, x["trials"]))]
                for i, x in enumerate(items)]

    heads = ["#", "origin", "genome", "params", "FLOPs"] + (["ms (b1)"] if timed else []) + \
        ["epochs", "seeds", "top-1 %", "trials"]
    if "pareto" in summary:
        lines += ["", f"Pareto front (accuracy up, {obj['multi'][1]} down) over candidates "
                      f"(Optuna's per-trial front: trials {summary.get('optuna_best_trials', [])}):",
                  table(rows(summary["pareto"]), heads, align="rll" + "r" * (len(heads) - 4) + "l")]
    lines += ["", f"top {min(top, len(cands))} of {len(cands)} candidates by mean accuracy:",
              table(rows(cands[:top]), heads, align="rll" + "r" * (len(heads) - 4) + "l")]
    if summary.get("failed"):
        lines += ["", "failed trials:"]
        lines += [f"  trial {f['trial']}: {f['reason']}" for f in summary["failed"][:10]]
    return "\n".join(lines)
