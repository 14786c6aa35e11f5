"""``prune-nas train`` (genomes x seeds, results reused from the store) and ``prune-nas budget``."""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import replace

from prune_nas.cli import _args
from prune_nas.cli._format import human, table
from prune_nas.cli._scale import add_nproc, join, launch_if_asked
from prune_nas.core.errors import UserError

EXAMPLES = """\
examples:
  prune-nas train vgg16-a --dataset cifar10 --budget flops --seeds 5        # Scratch-B, 5 seeds
  prune-nas train my.json --dataset cifar100 --budget epochs --epochs 160   # Scratch-E
  prune-nas train vgg16-a --dataset cifar10 --finetune                      # fine-tune inherited weights
  prune-nas train resnet20 --epochs 2 --no-progress                         # digits, offline, CPU
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train genomes from scratch (Scratch-E / Scratch-B) or fine-tune them",
                       description="Train genomes under the paper's protocol. Each run is stored under its "
                                   "spec's hash and reused when asked for again.", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("genomes", nargs="+", metavar="GENOME", help="genome .json, library name or base model")
    p.add_argument("--dataset", default="digits", help="digits (default, offline), cifar10, cifar100, "
                                                       "imagenet, synthetic")
    p.add_argument("--budget", choices=["epochs", "flops"], default="epochs",
                   help="epochs: Scratch-E; flops: Scratch-B, same training FLOPs as the reference")
    p.add_argument("--epochs", type=_args.positive_int,
                   help="base epochs (default: 160 CIFAR-style, 90 ImageNet, 40 fine-tune)")
    p.add_argument("--reference", help="Scratch-B reference genome (default: the genome's recorded "
                                       "reference, else its unpruned base model)")
    p.add_argument("--cap", help="Scratch-B: cap on the FLOPs ratio, a number, 'imagenet' (2, the default on "
                                 "ImageNet) or 'none'")
    p.add_argument("--seeds", type=_args.positive_int, default=1, help="number of seeds (default 1)")
    p.add_argument("--seed", type=_args.nonneg_int, default=0, help="first seed (default 0)")
    p.add_argument("--finetune", action="store_true",
                   help="start from the genome's inherited weights; 40 epochs at lr 0.001")
    g = p.add_argument_group("protocol overrides (defaults: the paper's)")
    g.add_argument("--lr", type=_args.positive_float)
    g.add_argument("--batch-size", type=_args.positive_int)
    g.add_argument("--momentum", type=_args.nonneg_float)
    g.add_argument("--weight-decay", type=_args.nonneg_float)
    g.add_argument("--nesterov", action="store_true", default=None)
    g.add_argument("--lr-steps", help="fractions of the epochs where lr drops, e.g. 0.5,0.75, or 'none'")
    g.add_argument("--lr-gamma", type=_args.positive_float)
    g.add_argument("--crop-padding", type=_args.nonneg_int)
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None)
    r = p.add_argument_group("where and how")
    r.add_argument("--device", type=_args.device, default="auto",
                   help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    r.add_argument("--engine", choices=["eager", "fast"], default="eager",
                   help="eager: plain PyTorch; fast: data on the device, and on CUDA bf16 + channels_last + "
                        "the whole step as one CUDA graph (several times faster at batch 64)")
    r.add_argument("--data-dir", help="dataset folder (default $PRUNE_NAS_HOME/data or artifacts/data)")
    r.add_argument("--download", action="store_true", help="download CIFAR if missing")
    r.add_argument("--store", help="results folder (default $PRUNE_NAS_HOME/store or artifacts/store)")
    r.add_argument("--threads", type=_args.positive_int, help="CPU threads for torch")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--retry-failed", action="store_true", help="train again runs stored as failed")
    r.add_argument("--save-weights", action="store_true", help="also store final weights (weights/<key>.pt)")
    add_nproc(r)
    p.set_defaults(func=cmd_train)

    b = sub.add_parser("budget", help="FLOPs ratio and Scratch-B epochs of a genome against a reference")
    b.add_argument("genome", metavar="GENOME")
    b.add_argument("--reference", help="default: the genome's recorded reference, else its base model")
    b.add_argument("--epochs", type=_args.positive_int, default=160, help="base epochs (default 160)")
    b.add_argument("--cap", help="cap on the FLOPs ratio: a number, 'imagenet' (2) or 'none' (default)")
    b.set_defaults(func=cmd_budget)


def _cap(value: str | None, dataset: str) -> float | None:
    from prune_nas.training.protocol import IMAGENET_RATIO_CAP

    if value is None:
        return IMAGENET_RATIO_CAP if dataset == "imagenet" else None
    if value.lower() == "none":
        return None
    if value.lower() == "imagenet":
        return IMAGENET_RATIO_CAP
    try:
        cap = float(value)
    except ValueError:
        raise UserError(f"--cap takes a number, 'imagenet' or 'none', got {value!r}") from None
    if not (math.isfinite(cap) and cap > 0):
        raise UserError(f"--cap must be a positive finite number, got {value}")
    return cap


def _reference(genome, name: str | None):
    from prune_nas.core.library import reference_of, resolve_genome

    ref = resolve_genome(name) if name else reference_of(genome)
    return ref.replace(num_classes=genome.num_classes) if ref.num_classes != genome.num_classes else ref


def _protocol(args):
    from prune_nas.training.protocol import Protocol

    overrides = {k: getattr(args, k) for k in ("lr", "batch_size", "momentum", "weight_decay", "nesterov",
                                                "lr_gamma", "crop_padding", "flip")
                 if getattr(args, k) is not None}
    if args.lr_steps is not None:
        try:
            text = args.lr_steps.lower()
            steps = () if text == "none" else tuple(float(s) for s in text.split(","))
        except ValueError:
            raise UserError(f"--lr-steps takes fractions like 0.5,0.75 or 'none', got "
                            f"{args.lr_steps!r}") from None
        if any(not 0 < s < 1 for s in steps):
            raise UserError("--lr-steps fractions must be in (0, 1)")
        overrides["lr_steps"] = steps
    base = Protocol.for_dataset(args.dataset)
    protocol = Protocol.finetune(base) if args.finetune else base
    protocol = replace(protocol, **overrides)
    if protocol.batch_size < 1 or protocol.lr <= 0:
        raise UserError("--batch-size must be >= 1 and --lr > 0")
    return protocol


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return name


def cmd_train(args) -> int:
    import torch

    from prune_nas.core.library import resolve_genome
    from prune_nas.training.data import NUM_CLASSES, Datasets
    from prune_nas.training.protocol import Budget
    from prune_nas.training.runs import RunSpec, run
    from prune_nas.training.store import Store

    if args.dataset not in NUM_CLASSES:
        raise UserError(f"unknown dataset {args.dataset!r}; known: {', '.join(NUM_CLASSES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.finetune and args.budget == "flops":
        raise UserError("--finetune uses the fine-tuning schedule; drop --budget flops")
    protocol = _protocol(args)
    launched = launch_if_asked(args)
    if launched is not None:
        return launched
    device, store = join(args, _device(args.device)), Store(args.store)
    seeds = range(args.seed, args.seed + args.seeds)
    datasets = Datasets(args.data_dir, args.download)
    rows, failed = [], 0
    for name in args.genomes:
        genome = resolve_genome(name)
        classes = NUM_CLASSES[args.dataset]
        if genome.num_classes != classes:  # the head follows the dataset; the architecture does not change
            genome = genome.replace(num_classes=classes)
        budget = Budget(args.budget, args.epochs, _reference(genome, args.reference) if args.budget == "flops"
                        else None, _cap(args.cap, args.dataset))
        records = []
        for seed in seeds:
            spec = RunSpec(genome, args.dataset, protocol, budget, seed,
                           "finetune" if args.finetune else "scratch")
            found = store.get(spec.key)
            reused = found is not None and (found.get("status") == "ok" or not args.retry_failed)
            rec = run(spec, store, device=device, progress=not args.no_progress,
                      dataset=None if reused else datasets(args.dataset, genome),
                      desc=f"{genome.name or name} s{seed}", engine=args.engine,
                      save_weights=args.save_weights)
            records.append(rec)
            failed += rec["status"] != "ok"
            print(_run_line(name, seed, rec, reused, store.path_for(rec["key"])), flush=True)
        rows.append(_summary_row(name, args.dataset, records))
    print()
    print(table(rows, ["genome", "dataset", "budget", "epochs", "params", "FLOPs", "runs", "top-1 %",
                       "best top-1 %"], align="lllrrrrrr"))
    return 1 if failed else 0


def _run_line(name: str, seed: int, rec: dict, reused: bool, path) -> str:
    how = "reused" if reused else f"trained in {rec['wall_time_s']:.0f}s"
    if rec["status"] != "ok":
        return f"{name} seed {seed}: FAILED ({rec['reason']}; {how}) -> {path}"
    top5 = f", top-5 {100 * rec['final_top5']:.2f}%" if rec.get("final_top5") is not None else ""
    return (f"{name} seed {seed}: top-1 {100 * rec['final_top1']:.2f}% (best {100 * rec['best_top1']:.2f}%)"
            f"{top5}, {rec['epochs']} epochs, {how} -> {path}")


def mean_std(values: list[float]) -> str:
    """'93.51 ± 0.12' in percent; the sample standard deviation (n - 1), 0 for one run."""
    if not values:
        return "-"
    pct = [100 * v for v in values]
    sd = statistics.stdev(pct) if len(pct) > 1 else 0.0
    return f"{statistics.fmean(pct):.2f} ± {sd:.2f}"


def _summary_row(name: str, dataset: str, records: list[dict]) -> list:
    ok = [r for r in records if r["status"] == "ok"]
    first = records[0]
    budget = first["spec"]["budget"]
    kind = "fine-tune" if first["spec"]["init"]["kind"] == "finetune" else \
        ("Scratch-B" if budget["kind"] == "flops" else "Scratch-E")
    return [name, dataset, kind, first["epochs"], human(first["params"]), human(first["flops"]),
            f"{len(ok)}/{len(records)}", mean_std([r["final_top1"] for r in ok]),
            mean_std([r["best_top1"] for r in ok])]


def cmd_budget(args) -> int:
    from prune_nas.core.cost import count
    from prune_nas.core.library import resolve_genome
    from prune_nas.training.protocol import Protocol, scratch_b_epochs

    genome = resolve_genome(args.genome)
    ref = _reference(genome, args.reference)
    cap = _cap(args.cap, "")
    if ref.model != genome.model:
        print(f"note: the reference {ref.name or ref.model} is built on {ref.model}, the genome on "
              f"{genome.model}; leave out --reference to compare against the genome's own reference",
              file=sys.stderr)
    c, r = count(genome), count(ref)
    epochs = scratch_b_epochs(r.flops, c.flops, args.epochs, cap)
    steps = Protocol(epochs=epochs).lr_milestones()
    print(f"genome     {genome.name or args.genome}: {human(c.flops)} FLOPs (MACs), {human(c.params)} params")
    print(f"reference  {ref.name or args.reference}: {human(r.flops)} FLOPs (MACs), {human(r.params)} params")
    capped = f", capped at {cap:g}" if cap else ""
    print(f"FLOPs ratio {r.flops / c.flops:.4f} (reference / genome){capped}")
    print(f"Scratch-E  {args.epochs} epochs")
    print(f"Scratch-B  {epochs} epochs = int({args.epochs} x {r.flops} / {c.flops})"
          + (f" capped at int({args.epochs} x {cap:g})" if cap else "")
          + f"; lr steps at epochs {', '.join(map(str, steps))}")
    return 0
