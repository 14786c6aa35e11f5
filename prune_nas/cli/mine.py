"""`prune-nas mine | guide | transfer`: patterns of pruned architectures, and designs built from them."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from prune_nas.cli import _args
from prune_nas.cli._format import human, table

SIZE_HELP = ("comma-separated sizes: the fraction of the unpruned target model's params (or FLOPs with "
             "--by flops) that each genome KEEPS, in (0, 1]; e.g. 0.3 = 30%% of the base model's params")
DEFAULT_SIZES = "0.2,0.3,0.4,0.5,0.6"

MINE_EPILOG = """\
examples:
  prune-nas mine artifacts/genomes/discovered/vgg16-cifar10-slimming-*.json --out vgg16-cifar10.pattern.json
  prune-nas mine artifacts/genomes/discovered/vgg16-digits-magnitude-*.json   # sparse: 3x3 kernel heat maps

All files must be runs of one model on one dataset by one method. Writes the pattern JSON, a width bar chart
(<stem>.widths.png) and, for sparse genomes, one 3x3 heat map per stage (<stem>.kernels.png) beside it.
Stage ratio = mean of width/base over the stage's pruned groups and all runs; std is numpy's (ddof=0).
"""

GUIDE_EPILOG = """\
examples:
  prune-nas guide vgg16-cifar10.pattern.json --sizes 0.2,0.3,0.4,0.5,0.6
  prune-nas guide vgg16-cifar10.pattern.json --model vgg19 --dataset cifar100 --by flops
  prune-nas guide vgg16-digits-magnitude.pattern.json --sparse --seed 1

Guided Pruning: every pruned layer of a stage keeps the stage's mean ratio, all ratios scaled by one factor so
the genome hits each size within one channel per layer. Residual streams keep their width unless the source
runs pruned them. Guided Sparsifying (--sparse, the default for patterns of sparse genomes): base widths with
exact masks whose per-layer density and per-stage 3x3 keep maps follow the pattern (deterministic per --seed).
"""

TRANSFER_EPILOG = """\
examples:
  prune-nas transfer vgg16-cifar10 vgg19-cifar100                 # mine (or discover) vgg16 runs, apply to vgg19
  prune-nas transfer resnet56-digits resnet110-digits --no-discover --sizes 0.5
  prune-nas transfer vgg16-cifar10 vgg19-cifar100 --pattern vgg16-cifar10.pattern.json

Names are <model>-<dataset>: the dataset follows the last '-' (digits, synthetic, cifar10, cifar100, imagenet)
and the rest is a registered model (vgg16-l1-cifar10 is model vgg16-l1 on cifar10). The source pattern is mined
from artifacts/genomes/discovered/<model>-<dataset>-<method>-*.json. Stages map one to one when the models have
as many (VGG-16 -> VGG-19: 5 pooling stages; ResNet-56 -> ResNet-110: 3 residual stages); otherwise target stage
t of T takes source stage floor((t - 0.5) * S / T) + 1 of S (same relative depth).
"""  # noqa: E501  (argparse prints the epilog verbatim: its lines are the help text's lines)


def _dirs():
    from prune_nas.core.paths import output_dir

    return {"discovered": output_dir("genomes", "discovered"), "guided": output_dir("genomes", "guided"),
            "transferred": output_dir("genomes", "transferred"), "patterns": output_dir("patterns")}


def _sizes(text: str) -> list[float]:
    try:
        sizes = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(x) for x in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be finite numbers, got {text!r}")
    return sizes


def _design_args(q) -> None:
    q.add_argument("--sizes", type=_sizes, default=_sizes(DEFAULT_SIZES), help=SIZE_HELP +
                   f" (default {DEFAULT_SIZES})")
    q.add_argument("--by", choices=("params", "flops"), default="params",
                   help="what --sizes measures (default params; flops are MACs per image)")
    mode = q.add_mutually_exclusive_group()
    mode.add_argument("--sparse", dest="sparse", action="store_true", default=None,
                      help="Guided Sparsifying (masks); default for patterns of sparse genomes")
    mode.add_argument("--pruning", dest="sparse", action="store_false",
                      help="Guided Pruning (widths); default for patterns of dense genomes")
    q.add_argument("--seed", type=_args.nonneg_int, default=0,
                   help="seed of the sampled masks (--sparse only; default 0)")
    q.add_argument("--width", type=_args.positive_float, default=None,
                   help="width multiplier of the unpruned target that sizes are measured against (default: "
                        "the source runs' own, e.g. 0.25 for discover's digits runs, on their dataset; "
                        "else 1)")
    q.add_argument("--out-dir", type=Path, default=None,
                   help="where genomes go (default artifacts/genomes/guided, or .../transferred)")
    q.add_argument("--json", action="store_true", help="print JSON instead of tables")


def register(sub) -> None:
    p = sub.add_parser("mine", help="mine width and 3x3 kernel patterns from pruned genomes",
                       description="Per-layer kept widths (mean ± std over runs), per-stage mean kept "
                                   "ratios, and for sparse genomes per-stage 3x3 kernel keep maps and "
                                   "per-layer densities.",
                       epilog=MINE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="genome .json files or globs (runs of one model/dataset/method)")
    p.add_argument("--out", type=Path, default=None,
                   help="pattern file (default artifacts/patterns/<model>-<dataset>-<method>.pattern.json)")
    p.add_argument("--no-plots", action="store_true", help="do not draw the PNG figures")
    p.add_argument("--json", action="store_true", help="print the pattern JSON instead of tables")
    p.set_defaults(func=cmd_mine)

    p = sub.add_parser("guide", help="genomes guided by a mined pattern (Guided Pruning / Sparsifying)",
                       epilog=GUIDE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pattern", type=Path, help="a pattern file written by `prune-nas mine`")
    p.add_argument("--model", default=None, help="target model (default: the pattern's model)")
    p.add_argument("--dataset", default=None, help="target dataset (default: the pattern's)")
    _design_args(p)
    p.set_defaults(func=cmd_guide)

    p = sub.add_parser("transfer",
                       help="apply the pattern of one model/dataset to another (transferred genomes)",
                       epilog=TRANSFER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="<model>-<dataset> whose pruned runs give the pattern, e.g. vgg16-cifar10")
    p.add_argument("target", help="<model>-<dataset> to design for, e.g. vgg19-cifar100")
    p.add_argument("--method", default="slimming",
                   help="pruning method of the source runs (default slimming)")
    p.add_argument("--pattern", type=Path, default=None, help="use this pattern file instead of mining")
    p.add_argument("--no-discover", action="store_true",
                   help="refuse (exit 2) instead of running discovery when no source runs exist")
    p.add_argument("--runs", type=_args.positive_int, default=3,
                   help="discovery runs (seeds 0..N-1) if needed (default 3)")
    p.add_argument("--ratio", type=_args.finite_float, default=None,
                   help="use only source runs at this prune ratio, and discover at it if there are none "
                        "(default: all runs; discovery at 0.4)")
    p.add_argument("--discovered-dir", type=Path, default=None,
                   help="folder of discovered genomes (default artifacts/genomes/discovered)")
    _design_args(p)
    p.set_defaults(func=cmd_transfer)


# ---- mine --------------------------------------------------------------------------------------------------
def cmd_mine(args) -> int:
    from prune_nas.design.mining import (
        expand_paths,
        figure_paths,
        mine,
        plot_kernels,
        plot_widths,
        save_pattern,
    )

    pattern = mine(expand_paths(args.files))
    out = args.out or _dirs()["patterns"] / f"{pattern.label()}.pattern.json"
    save_pattern(pattern, out)
    written = [out]
    if not args.no_plots:
        figs = figure_paths(out)
        if pattern.pruned_kinds:  # a weight-pruned model keeps every channel: nothing to draw
            written.append(plot_widths(pattern, figs["widths"]))
        if pattern.sparse and any(s["kernel_keep"] is not None for s in pattern.sparse["stages"]):
            written.append(plot_kernels(pattern, figs["kernels"]))
    if args.json:
        print(json.dumps(pattern.to_dict(), indent=1))
        return 0
    print_pattern(pattern)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def print_pattern(pattern) -> None:
    n = pattern.runs
    print(f"Pattern of {pattern.model} on {pattern.dataset} by {pattern.method}: {n} "
          f"run{'s' if n != 1 else ''} (seeds {', '.join(str(s['seed']) for s in pattern.sources)}), pruned "
          f"from {pattern.reference['name']}")
    if pattern.size:
        print("  the runs keep " + " and ".join(f"{m:.1%} ± {sd:.1%} of its {by}"
                                               for by, (m, sd) in pattern.size.items()))
    if not pattern.pruned_kinds:
        print("  no run pruned a channel: every layer keeps its base width")
    else:
        rows = [[x["group"], x["kind"], x["stage"], x["base"], f"{x['mean']:.1f} ± {x['std']:.1f}",
                 f"{x['mean'] / x['base']:.0%}"] for x in pattern.layers]
        print(table(rows, ["layer", "kind", "stage", "base", "kept (mean ± std)", "kept"], align="llrrrr"))
        print(f"\nPer stage: mean kept ratio over pruned groups ({', '.join(pattern.pruned_kinds)})")
        print(table([[s["stage"], s["groups"],
                      f"{s['ratio']:.3f} ± {s['ratio_std']:.3f}"] for s in pattern.stages],
                    ["stage", "groups", "ratio (mean ± std over runs)"], align="rrr"))
    if not pattern.sparse:
        return
    print("\n3x3 kernel keep probability per stage (rows top to bottom), and stage density")
    for s in pattern.sparse["stages"]:
        km = s["kernel_keep"]
        rows = [" ".join(f"{v:.2f}" for v in r) for r in km] if km else ["(no 3x3 layers)"]
        print(f"  stage {s['stage']} (density {s['density']:.1%}):  " + "  |  ".join(rows))
    print(table([[x["name"], x["stage"], human(x["weights"]), f"{x['mean']:.1%} ± {x['std']:.1%}"]
                 for x in pattern.sparse["layers"]], ["conv layer", "stage", "weights", "density"],
                align="lrrr"))


# ---- guide / transfer --------------------------------------------------------------------------------------
def cmd_guide(args) -> int:
    from prune_nas.design.mining import load_pattern
    from prune_nas.design.transfer import generate, target_base

    pattern = load_pattern(args.pattern)
    model = args.model or pattern.model
    dataset = args.dataset or pattern.dataset
    sparse = bool(pattern.sparse) if args.sparse is None else args.sparse
    from prune_nas.core.paths import slug

    stem = "-".join(slug(v, what) for v, what in ((model.replace(":", "-"), "model"), (dataset, "dataset"),
                                                  (pattern.method, "pattern method"))) + "-guided"
    stem += "-sparse" if sparse else ""
    results = generate(pattern, target_base(pattern, model, dataset, args.width), args.sizes,
                       args.out_dir or _dirs()["guided"], stem, sparse=sparse, by=args.by, seed=args.seed,
                       pattern_file=args.pattern.as_posix())
    _report(results, args)
    return 0


def cmd_transfer(args) -> int:
    from prune_nas.core.paths import slug
    from prune_nas.design.mining import load_pattern
    from prune_nas.design.transfer import parse_name, transfer

    parse_name(args.source)
    parse_name(args.target)
    dirs = _dirs()
    out_dir = args.out_dir or dirs["transferred"]
    pattern = load_pattern(args.pattern) if args.pattern else None
    # The mined source pattern is kept beside the genomes it produced.
    source = slug(args.source.replace(":", "-"), "source")  # a generic reference, as discover names files
    pattern_out = None if pattern else out_dir / f"{source}-{slug(args.method, '--method')}.pattern.json"
    results = transfer(args.source, args.target, args.sizes, method=args.method, pattern=pattern,
                       discovered_dir=args.discovered_dir or dirs["discovered"],
                       out_dir=out_dir, sparse=args.sparse, by=args.by,
                       seed=args.seed, discover=not args.no_discover, runs=args.runs, ratio=args.ratio,
                       pattern_out=pattern_out, width=args.width,
                       say=lambda msg: print(msg, file=sys.stderr, flush=True))
    if pattern_out is not None and not args.json:
        print(f"mined {pattern_out}")
    _report(results, args)
    return 0


def _report(results, args) -> None:
    from prune_nas.core.cost import count

    rows = []
    for path, genome, _info in results:
        c = count(genome)
        prov = genome.provenance
        rows.append({"file": str(path), "key": genome.key, "size": prov["size"]["target"],
                     "achieved": prov["size"]["achieved"], "by": prov["size"]["by"], "params": c.params,
                     "flops": c.flops, "stage_map": prov["stage_map"], "sparse": genome.sparsity is not None})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    first = results[0][1].provenance
    src = first["pattern"]
    print(f"{first['method']}: pattern of {src['model']}/{src['dataset']}/{src['method']} ({src['runs']} "
          f"runs), stage map target<-source {first['stage_map']}; size = fraction of base {rows[0]['by']} "
          "kept")
    print(table([[r["file"], f"{r['size']:g}", f"{r['achieved']:.4f}", human(r["params"]), human(r["flops"])]
                 for r in rows], ["genome", "size", "achieved", "params", "FLOPs"], align="lrrrr"))
