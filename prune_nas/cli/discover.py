"""`prune-nas discover` (train or reuse the large model, prune it, write the genome) and
`prune-nas methods`."""

from __future__ import annotations

import argparse
import json

from prune_nas.cli import _args
from prune_nas.cli._format import human, table
from prune_nas.core.errors import UserError

EXAMPLES = """\
examples:
  prune-nas discover --method slimming                      # embedded default: digits, VGG-11 x0.25, CPU
  prune-nas discover --method slimming --model vgg19 --dataset cifar10 --ratio 0.7 --seed 0
  prune-nas discover --method l1-norm --model resnet56 --config B
  prune-nas discover --method l1-norm --model vgg16 --ratio 0.3 --skip 1,2
  prune-nas discover --method magnitude --model vgg16 --dataset cifar10 --ratio 0.8
  prune-nas discover --method uniform --ratio 0.5 --sparsity  # same density in every conv layer
  prune-nas discover --method random --like vgg16-a --model vgg16-l1
  prune-nas discover --method thinet --param samples=2000   # any method parameter by name
  prune-nas methods                                         # what each method is and its parameters
"""


def register(sub) -> None:
    p = sub.add_parser("discover", help="prune a (trained) model with a method and write the genome it finds",
                       description="Train (or reuse) the large model the method needs, prune it, and write "
                                   "the genome JSON plus the inherited weights for the fine-tune baseline.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, help="pruning method (`prune-nas methods` lists them)")
    p.add_argument("--model", help="base model (default per dataset: vgg11 on digits, vgg16 on CIFAR, ...; "
                                   "the first family the method supports)")
    p.add_argument("--dataset", default="digits", help="digits (default, embedded), synthetic, cifar10, "
                                                       "cifar100, imagenet")
    p.add_argument("--ratio", type=_args.finite_float,
                   help="fraction pruned: channels (structured), weights (magnitude); "
                        "must be in (0, 1)")
    p.add_argument("--seed", type=_args.nonneg_int, default=0,
                   help="seed of the large model's training and of the method")
    p.add_argument("--width", type=_args.positive_float,
                   help="width multiplier of the large model (default 0.25 on digits, 1 "
                        "elsewhere)")
    p.add_argument("--epochs", type=_args.positive_int,
                   help="large model's epochs (default: 20 on digits, 160 CIFAR, 90 "
                        "ImageNet)")
    p.add_argument("--input-size", type=_args.positive_int,
                   help="input side in pixels (default: 16 on digits, else the "
                        "model's)")
    add_method_args(p)
    r = p.add_argument_group("where and how")
    r.add_argument("--out",
                   help="output folder (default $PRUNE_NAS_HOME/genomes/discovered or "
                        "artifacts/genomes/discovered in the working folder)")
    r.add_argument("--store", help="where trained large models are cached (default $PRUNE_NAS_HOME/store or "
                                   "artifacts/store)")
    r.add_argument("--device", type=_args.device, default="auto",
                   help="cpu, cuda, ... (default: cuda if available)")
    r.add_argument("--data-dir", help="dataset folder (default $PRUNE_NAS_HOME/data or artifacts/data)")
    r.add_argument("--download", action="store_true", help="download CIFAR if missing")
    r.add_argument("--threads", type=_args.positive_int, help="CPU threads for torch")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--json", action="store_true", help="print a JSON summary instead of tables")
    p.set_defaults(func=cmd_discover)

    q = sub.add_parser("methods", help="the pruning methods: target kind, families, parameters, citation")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_methods)


def add_method_args(parser) -> None:
    """The method-parameter options (``discover``, ``evaluate``); :func:`method_args` reads them back."""
    m = parser.add_argument_group("method parameters (see `prune-nas methods`)")
    m.add_argument("--config", help="l1-norm / thinet / regression: a named config (l1-norm: A, B)")
    m.add_argument("--skip", help="l1-norm: comma-separated conv ids left unpruned, e.g. 16,20,38,54")
    m.add_argument("--s", type=_args.nonneg_float,
                   help="slimming: L1 weight on BN scales (default: the paper's 1e-4 VGG / "
                        "1e-5 others for its 160 CIFAR epochs, scaled up for shorter "
                        "schedules; given: used as is)")
    m.add_argument("--sparsity", action="store_true",
                   help="uniform: same density per conv layer, not channels")
    m.add_argument("--like", help="random: the widths of this genome; uniform: match its params")
    m.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="any other method parameter, e.g. --param samples=2000 (repeatable)")


def _value(text: str):
    """A --param value: strict JSON when it parses (finite numbers, true/false, lists), else the string."""
    from prune_nas.core.userfiles import parse_json

    try:
        return parse_json(text, "--param")
    except UserError:
        return text


def method_args(args) -> dict:
    """The method parameters the options of :func:`add_method_args` give (unset ones left out)."""
    out = {}
    if args.config is not None:
        out["config"] = args.config
    if args.skip:
        try:
            out["skip"] = tuple(int(x) for x in args.skip.split(",") if x.strip())
        except ValueError:
            raise UserError(f"--skip takes comma-separated conv ids, e.g. 16,20; got {args.skip!r}") from None
    if args.s is not None:
        out["s"] = args.s
    if args.sparsity:
        out["sparsity"] = True
    if args.like is not None:
        out["like"] = args.like
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"--param takes NAME=VALUE, got {item!r}")
        out[name.strip().replace("-", "_")] = _value(value)
    return out


def cmd_discover(args) -> int:
    import sys

    import torch

    from prune_nas.cli.train import _device
    from prune_nas.design import discover as d

    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    elif device == "cpu" and args.dataset in d.SHORT:
        # The embedded default's convolutions are tiny: a second thread gains little and, on shared cores,
        # costs several times over in synchronisation.
        torch.set_num_threads(1)
    result = d.discover(args.method, model=args.model, dataset=args.dataset, ratio=args.ratio, seed=args.seed,
                        width=args.width, epochs=args.epochs, input_size=args.input_size,
                        params=method_args(args),
                        device=device, data_dir=args.data_dir, download=args.download,
                        out_dir=args.out, store_root=args.store, progress=not args.no_progress,
                        log=(lambda s: print(s, file=sys.stderr)) if args.json else print)
    summary = summarize(result)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print()
    for note in result.notes:
        print(f"note: {note}")
    print(layer_table(result))
    red = summary["reduction"]
    print(f"\nparams {human(summary['base']['params'])} -> {human(summary['params'])} "
          f"(-{red['params']:.1%}), FLOPs {human(summary['base']['flops'])} -> {human(summary['flops'])} "
          f"MACs (-{red['flops']:.1%})")
    if result.large:
        how = "reused" if result.large["reused"] else "trained"
        print(f"large model ({how}): test top-1 {100 * (result.large['test_top1'] or 0):.2f}%, "
              f"{result.large['epochs']} epochs")
    print(f"genome: {result.path}")
    if result.weights:
        print(f"inherited weights: {result.weights}")
    if result.masks:
        print(f"masks: {result.masks}")
    print(f"done in {result.wall_time_s:.1f}s")
    return 0


def summarize(result) -> dict:
    from prune_nas.core.cost import count

    c, b = count(result.genome), count(result.base)
    return {"genome": str(result.path), "name": result.genome.name, "key": result.genome.key,
            "weights": str(result.weights) if result.weights else None,
            "masks": str(result.masks) if result.masks else None,
            "params": c.params, "flops": c.flops, "base": {"name": result.base.name, "params": b.params,
                                                          "flops": b.flops},
            "reduction": {"params": 1 - c.params / b.params, "flops": 1 - c.flops / b.flops},
            "widths": dict(result.genome.widths), "notes": result.notes, "large_model": result.large,
            "wall_time_s": result.wall_time_s}


def layer_table(result) -> str:
    """Per width group: base and kept width (structured); per conv layer: density (sparse)."""
    g, base = result.genome, result.base
    if g.sparsity is not None:
        from prune_nas.core.cost import kept_weights
        from prune_nas.core.geometry import ops_of

        ops = {op.name: op for op in ops_of(g) if op.kind == "conv"}
        kept = kept_weights(g)
        rows = [[n, op.stage, op.weight_count, kept[n], f"{kept[n] / op.weight_count:.1%}"]
                for n, op in ops.items()]
        return table(rows, ["conv layer", "stage", "weights", "kept", "density"])
    groups = g.groups
    rows = [[n, groups.kind(n), groups.stage(n), base.widths[n], g.widths[n],
             f"{g.widths[n] / base.widths[n]:.0%}"]
            for n in groups.names]
    return table(rows, ["width group", "kind", "stage", "base", "width", "kept"], align="llrrrr")


def cmd_methods(args) -> int:
    from prune_nas.methods import list_methods

    methods = sorted(list_methods(),
                     key=lambda m: (ORDER.index(m.name) if m.name in ORDER else len(ORDER), m.name))
    if args.json:
        print(json.dumps([{"name": m.name, "target": m.target,
                           "families": list(m.families) + (["generic"] if m.generic else []),
                           "needs_training": m.needs_training, "summary": m.summary, "citation": m.citation,
                           "params": [{"name": p.name, "default": _jsonable(p.default), "help": p.help}
                                      for p in m.params]} for m in methods], indent=2))
        return 0
    rows = [[m.name, m.target, ", ".join(m.families + (("generic",) if m.generic else ())),
             "yes" if m.needs_training else "no",
             ", ".join(f"{p.name}={_show(p.default)}" for p in m.params) or "-"] for m in methods]
    print(table(rows, ["method", "target", "families", "trains", "parameters (defaults)"], align="lllll"))
    print()
    for m in methods:
        print(f"{m.name}: {m.summary}")
        print(f"  cite: {m.citation}")
        for p in m.params:
            print(f"  {_flag(p.name)}  {p.help} (default {_show(p.default)})")
    return 0


# The paper's methods in its order, then the baselines; methods added later follow by name.
ORDER = ["l1-norm", "thinet", "regression", "slimming", "sss", "magnitude", "uniform", "random"]
FLAGS = ("ratio", "config", "skip", "s", "sparsity", "like")  # parameters with their own option


def _flag(name: str) -> str:
    return f"--{name}" if name in FLAGS else f"--param {name}=..."


def _show(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (tuple, list)):
        return ",".join(map(str, v)) or "-"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v
