"""``prune-nas run`` (an experiment spec at a scale, resumable) and ``prune-nas report`` (Markdown, CSV,
PNG)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prune_nas.cli import _args
from prune_nas.cli._scale import add_devices, add_nproc, devices_of, join, launch_if_asked
from prune_nas.core.errors import UserError

RUN_EPILOG = """\
examples:
  prune-nas run experiments/table4_slimming.yaml --scale smoke     # minutes on a CPU, embedded digits data
  prune-nas run experiments/table4_slimming.yaml --scale paper     # the paper's protocol: CIFAR, GPUs
  prune-nas run experiments/*.yaml --scale smoke --dry-run         # validate every spec, count its runs
  prune-nas run experiments/figure3_efficiency.yaml --report report/figure3

Scales: smoke (embedded digits, narrow models, a few epochs; what CI runs), small (CIFAR, fewer epochs and
seeds: hours on one GPU), paper (the full protocol: 160 epochs, 5 seeds; ImageNet rows need --data-dir).
Results go to <runs-dir>/<spec name>/<scale>/ (manifest.json, genomes/, patterns/); training records go to the
store and are reused, so running the same command again after an interruption resumes where it stopped.
"""

REPORT_EPILOG = """\
examples:
  prune-nas report artifacts/runs/table4_slimming --out report/            # the largest scale that ran
  prune-nas report artifacts/runs/table4_slimming/smoke --out report/smoke
  prune-nas report artifacts/runs --out report/ --scale smoke              # every experiment, one folder each
"""


def register(sub) -> None:
    p = sub.add_parser("run", help="run an experiment spec (a table or figure of the paper) at a scale",
                       description="Expand an experiment spec at a scale into pruning and training runs "
                                   "and run them with an overall progress bar; finished runs are reused.",
                       epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="+", metavar="SPEC",
                   help="experiment spec file(s) or bundled spec names, e.g. table4_slimming or "
                        "experiments/table4_slimming.yaml")
    p.add_argument("--scale", default="smoke", choices=("smoke", "small", "paper"), help="default smoke")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and print the plan and its bill (images, device-hours); train nothing")
    p.add_argument("--throughput", action="append", metavar="FILE",
                   help="dry run: a throughput table of benchmarks/train_throughput.py to price the runs "
                        "with (repeatable; default: the source tree's "
                        "benchmarks/results-*train_throughput.json)")
    p.add_argument("--report", metavar="DIR", help="render the report into DIR when the run finishes")
    r = p.add_argument_group("where and how")
    r.add_argument("--device", type=_args.device, default="auto",
                   help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    r.add_argument("--runs-dir", help="results root (default $PRUNE_NAS_HOME/runs or artifacts/runs)")
    r.add_argument("--store", help="training records (default $PRUNE_NAS_HOME/store or artifacts/store)")
    r.add_argument("--data-dir", help="dataset folder (default $PRUNE_NAS_HOME/data or artifacts/data)")
    r.add_argument("--download", action="store_true", help="download CIFAR if missing")
    r.add_argument("--engine", choices=["eager", "fast"], default="eager",
                   help="training engine of the training runs (fast: device-resident data, CUDA graphs)")
    r.add_argument("--threads", type=_args.positive_int, help="CPU threads for torch")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--retry-failed", action="store_true", help="train again runs stored as failed")
    add_devices(r)
    add_nproc(r)
    p.set_defaults(func=cmd_run)

    q = sub.add_parser("report", help="render an experiment's results: Markdown table, CSV, PNG figures",
                       description="Render the results of `prune-nas run`: the table in the paper's layout "
                                   "(mean ± std, best bold, significance marks), accuracy-vs-params curves, "
                                   "kernel heat maps and per-layer width bars.",
                       epilog=REPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("path", help="a run folder (<runs-dir>/<spec>/<scale>), a spec's folder, or the runs root")
    q.add_argument("--out", required=True, help="output folder (report.md, *.csv, *.png)")
    q.add_argument("--scale", choices=("smoke", "small", "paper"),
                   help="which scale to render (default: the largest that ran)")
    q.add_argument("--json", action="store_true", help="print a JSON summary of the results too")
    q.add_argument("--latency", nargs="?", const="cpu", metavar="DEVICE",
                   help="also measure the models' latency on DEVICE (default cpu) here: latency columns and "
                        "accuracy vs FLOPs and vs latency (comparison reports)")
    q.set_defaults(func=cmd_report)


def cmd_run(args) -> int:
    from prune_nas.repro import experiments as ex

    specs = [ex.load_spec(s) for s in args.specs]  # validate them all before training anything
    names = [s.name for s in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UserError(f"two specs share the name {min(dup)!r}; names choose the output folder")
    if args.report and len(specs) > 1:
        raise UserError("--report takes one spec; use `prune-nas report <runs-dir> --out DIR` for several")
    if args.dry_run:
        for spec in specs:
            _print_plan(spec.plan(args.scale), ex.run_dir(spec, args.scale, args.runs_dir))
        _print_bill([spec.plan(args.scale) for spec in specs], args)
        return 0
    import torch

    from prune_nas.cli.train import _device
    from prune_nas.training import distributed

    if args.threads:
        torch.set_num_threads(args.threads)
    device, devices = _device(args.device), devices_of(args)
    launched = launch_if_asked(args)  # --nproc N: every training run of the spec on N processes
    if launched is not None:
        return launched
    device = join(args, device)
    status = 0
    for spec in specs:
        options = {"runs_root": args.runs_dir, "store": args.store, "progress": not args.no_progress,
                   "data_dir": args.data_dir, "download": args.download, "retry_failed": args.retry_failed,
                   "engine": args.engine}
        if devices:
            from prune_nas.repro.spread import run_spread

            path, mps = run_spread(spec, args.scale, devices, **options)
            print(f"{spec.name}: spread over {', '.join(devices)} (MPS: {mps})")
        else:
            path = ex.run_experiment(spec, args.scale, device=device, **options)
        m = ex.load_manifest(path)
        prog = m["progress"]
        failed = [r for r in m["runs"] if r.get("status") not in ("ok", None)]
        status = status or (1 if failed else 0)
        print(f"{spec.name} [{args.scale}]: {prog['done']}/{prog['total']} runs ({prog['reused']} reused), "
              f"{len(failed)} failed, wall time {m['wall_time_s']:.0f} s -> {path}")
        if args.report and distributed.is_writer():
            from prune_nas.repro.report import render

            files = render(path.parent, args.report)
            print(f"report: {files[0]}")
        else:
            print(f"render it: prune-nas report {path.parent} --out report/{spec.name}")
    return status


def _print_bill(plans, args) -> None:
    from prune_nas.repro.bill import bill, bill_lines, load_throughput, throughput_files

    tables = [load_throughput(f) for f in (args.throughput or throughput_files())]
    print("\n".join(bill_lines(bill(plans, tables, args.engine))))


def _print_plan(plan, folder: Path) -> None:
    """Per row: what is pruned, then the schedule (seeds, epochs, lr and where it drops, batch, fine-tuning,
    the Scratch-B rule) as the row will run it."""
    spec = plan.spec
    n = len(plan.rows)
    print(f"{spec.path}: {spec.paper}, {spec.kind}, scale {plan.scale}: {n} row{'s' * (n != 1)}, "
          f"{plan.total_runs()} runs -> {folder}")
    for r in plan.rows:
        what = r.label if not r.ratios else f"{r.label}, ratios {', '.join(f'{x:g}' for x in r.ratios)}"
        pinned = {k: v for k, v in r.params.items() if k not in ("ratio", "config")}
        extra = f", series {', '.join(r.series)}" if r.series else ""
        extra += f", params {' '.join(f'{k}={v}' for k, v in pinned.items())}" if pinned else ""
        print(f"  {r.dataset} {r.model}" + (f" x{r.width:g}" if r.width != 1 else "")
              + f" @{r.base_genome().input_size}px, {r.method}: {what}{extra}")
        print(f"    {_schedule_line(r.schedule(), spec.kind, r)}")


def _schedule_line(s: dict, kind: str, row) -> str:
    seeds = s["seeds"]
    span = f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)) \
        else ", ".join(map(str, seeds))
    drops = ", ".join(map(str, s["lr_milestones"])) or "none"
    line = (f"seeds {span} ({len(seeds)}); {s['epochs']} epochs, lr {s['lr']:g} x{s['lr_gamma']:g} at epochs "
            f"{drops}, batch {s['batch_size']}")
    if kind == "comparison" and "finetune" in row.budgets:
        line += f"; fine-tune {s['finetune_epochs']} epochs at lr {s['finetune_lr']:g}"
    if kind == "comparison" and "pruned" in row.budgets:
        line += "; Pruned column: the pruned model, no fine-tuning"
    if kind == "comparison" and "scratch-b" in row.budgets or kind in ("efficiency", "guided") \
            and row.budget == "scratch-b":
        b = s["scratch_b"]
        cap = f"at most {b['max_epochs']}" if b["cap"] is not None else "no cap"
        line += f"; Scratch-B int({b['base_epochs']} x FLOPs ratio) epochs, {cap}, lr drops stretched with it"
    elif kind in ("efficiency", "guided"):
        line += f"; every curve {row.budget}"
    return line


def cmd_report(args) -> int:
    from prune_nas.repro.experiments import load_manifest
    from prune_nas.repro.report import find_runs, render, summary

    folders = find_runs(args.path, args.scale)
    out = Path(args.out)
    several = len(folders) > 1
    summaries = []
    for folder in folders:
        m = load_manifest(folder)
        target = out / m["spec"]["name"] if several else out
        files = render(folder, target, latency=args.latency)
        print(f"{m['spec']['name']} [{m['scale']}] ({m['status']}): {', '.join(str(f) for f in files)}",
              file=sys.stderr if args.json else sys.stdout)
        summaries.append(summary(m))
    if args.json:
        print(json.dumps(summaries if several else summaries[0], indent=2))
    return 0
