"""`prune-nas genome list | info | validate | export`."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from prune_nas.cli._format import human, table
from prune_nas.core.errors import UserError

EPILOG = """\
examples:
  prune-nas genome list                       # the paper's named architectures and the base models
  prune-nas genome info vgg16-a               # widths per layer, params, FLOPs, reduction vs its reference
  prune-nas genome info my.json --json        # machine-readable
  prune-nas genome validate my.json           # exit 0, or exit 2 with one line naming the bad field
  prune-nas genome export vgg16-a --out vgg16-a.json
  prune-nas genome info resnet56-b --latency --batch 1,64 --threads 1   # measured, vs its reference
  prune-nas genome export vgg16-a --onnx vgg16-a.onnx [--weights vgg16-a.pt]
"""


def register(sub) -> None:
    p = sub.add_parser("genome", help="list, inspect, validate and export genomes",
                       description="Genomes are JSON descriptions of architectures: a base model, one width "
                                   "per channel-coupling group, kept blocks per stage, optional sparsity.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    gsub = p.add_subparsers(dest="genome_command", required=True, metavar="ACTION")

    q = gsub.add_parser("list", help="library genomes and registered base models")
    q.add_argument("--json", action="store_true", help="print JSON instead of tables")
    q.add_argument("--models", choices=["torchvision", "timm"],
                   help="list the models of a library usable as torchvision:<name> / timm:<name>")
    q.set_defaults(func=cmd_list)

    q = gsub.add_parser("info", help="widths, params, FLOPs and reductions of a genome")
    q.add_argument("genome", help="a .json file, a library name (vgg16-a) or a model name (resnet56)")
    q.add_argument("--json", action="store_true", help="print JSON: params, flops, reduction, widths, ...")
    lat = q.add_argument_group("measured latency (--latency)")
    lat.add_argument("--latency", action="store_true",
                     help="measure inference latency of the genome and its reference here (cached)")
    lat.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    lat.add_argument("--batch", default="1,64",
                     help="batch sizes, comma-separated (default 1,64; the largest gives the throughput)")
    lat.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    lat.add_argument("--threads", type=int, help="torch CPU threads while timing (default: torch's)")
    lat.add_argument("--repeats", type=int, default=20, help="timed blocks per figure (default 20)")
    lat.add_argument("--no-cache", action="store_true", help="measure again even if a cached figure exists")
    q.set_defaults(func=cmd_info)

    q = gsub.add_parser("validate", help="check a genome file (exit 0 if valid, 2 with the bad field if not)")
    q.add_argument("files", nargs="+", help="genome .json files")
    q.set_defaults(func=cmd_validate)

    q = gsub.add_parser("export", help="write a genome (and its mask file) as a standalone file, or its "
                                       "model as ONNX")
    q.add_argument("genome", help="library name, discovered genome name, model name or file")
    q.add_argument("--out", help="output .json path")
    q.add_argument("--onnx", help="output .onnx path: the built model, batch size dynamic (needs the `onnx` "
                                  "extra)")
    q.add_argument("--weights", help="a .pt state dict for the ONNX model (default: fresh initialisation)")
    q.add_argument("--dynamo", action="store_true",
                   help="use torch's torch.export-based ONNX exporter instead of the TorchScript one")
    q.set_defaults(func=cmd_export)

    from prune_nas.cli._generic import add_from_model

    add_from_model(gsub)


def describe(genome) -> dict:
    """Everything `genome info` shows, as plain data."""
    from prune_nas.core.cost import count
    from prune_nas.core.library import reference_of

    cost, ref = count(genome), reference_of(genome)
    rcost = count(ref)
    groups = genome.groups
    # Widths are compared with the reference where it is the same model (a narrow model a method pruned),
    # else with the base model's.
    same = ref.model == genome.model and ref.blocks == genome.blocks
    base = dict(ref.widths) if same else groups.base_widths()
    return {
        "name": genome.name, "key": genome.key, "model": genome.model, "family": genome.family,
        "num_classes": genome.num_classes,
        "input": {"channels": genome.in_channels, "size": genome.input_size},
        "blocks": list(genome.blocks) if genome.blocks else None,
        "params": cost.params, "flops": cost.flops, "flops_unit": "multiply-accumulates per image",
        "reference": {"model": ref.model, "name": ref.name, "params": rcost.params, "flops": rcost.flops},
        "reduction": {"params": 1 - cost.params / rcost.params, "flops": 1 - cost.flops / rcost.flops},
        "sparse": genome.sparsity is not None,
        "provenance": dict(genome.provenance),
        "widths": [{"group": g, "kind": groups.kind(g), "stage": groups.stage(g), "base": base[g],
                    "width": genome.widths[g]} for g in groups.names],
    }


def cmd_info(args) -> int:
    from prune_nas.core.library import resolve_genome

    genome = resolve_genome(args.genome)
    info = describe(genome)
    if args.latency:
        info["latency"] = _latency(genome, args)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    red = info["reduction"]
    print(f"{info['name'] or args.genome}  (key {info['key']})")
    print(f"  model {info['model']} ({info['family']}), {info['num_classes']} classes, "
          f"input {info['input']['channels']}x{info['input']['size']}x{info['input']['size']}"
          + (f", blocks per stage {info['blocks']}" if info["blocks"] else ""))
    print(f"  params {human(info['params'])} ({info['params']:,}), FLOPs {human(info['flops'])} MACs; "
          f"vs {info['reference']['name'] or info['reference']['model']}: params "
          f"{_reduction(red['params'])}, FLOPs {_reduction(red['flops'])}")
    if info["provenance"].get("method"):
        print(f"  method {info['provenance']['method']}"
              + (f" ({info['provenance']['source']})" if info["provenance"].get("source") else ""))
    if args.latency:
        _print_latency(info)
    if genome.sparsity is not None:
        from prune_nas.core.cost import kept_weights
        from prune_nas.core.geometry import ops_of

        ops = {op.name: op for op in ops_of(genome) if op.kind == "conv"}
        kept = kept_weights(genome)
        rows = [[name, ops[name].stage, ops[name].weight_count, kept[name],
                 f"{kept[name] / ops[name].weight_count:.1%}"] for name in ops]
        print(table(rows, ["conv layer", "stage", "weights", "kept", "density"]))
        return 0
    rows = [[w["group"], w["kind"], w["stage"], w["base"], w["width"], f"{w['width'] / w['base']:.0%}"]
            for w in info["widths"]]
    print(table(rows, ["width group", "kind", "stage", "base", "width", "kept"], align="llrrrr"))
    return 0


def _latency(genome, args) -> dict:
    from prune_nas.core.latency import profile
    from prune_nas.core.library import reference_of

    try:
        batches = tuple(int(b) for b in str(args.batch).split(","))
    except ValueError:
        raise UserError(f"--batch: give batch sizes like 1,64, got {args.batch!r}") from None
    ref = reference_of(genome)
    return profile(genome, None if ref.key == genome.key else ref, batches, device=args.device,
                   dtype=args.dtype, threads=args.threads, repeats=args.repeats, cache=not args.no_cache)


def _print_latency(info: dict) -> None:
    lat = info["latency"]
    ref = info["reference"]["name"] or info["reference"]["model"]
    blocks = lat["batches"][0]["latency"]["repeats"]
    print(f"  latency on {lat['device_name']} (median per call; IQR = spread of {blocks} timed blocks):")
    for row in lat["batches"]:
        m = row["latency"]
        cached = ", cached" if m["cached"] else ""
        print(f"    batch {row['batch']:>4}: {m['median_ms']:.3f} ms (IQR {m['iqr_ms']:.3f} ms = "
              f"{m['spread']:.1%}), {m['throughput']:,.0f} img/s; {m['threads']} thread(s), "
              f"{m['dtype']}{cached}")
        if "vs_reference" in row:
            print(f"                vs {ref} ({row['reference']['median_ms']:.3f} ms): "
                  f"{row['vs_reference']['text']}")
    if info["sparse"]:
        print("    (sparse genome: timed as its dense model; zero weights save no time in dense kernels)")


def cmd_validate(args) -> int:
    from prune_nas.core.genome import load_genome

    for f in args.files:
        g = load_genome(f)  # raises GenomeError -> one line, exit 2
        print(f"{f}: valid ({g.model}, key {g.key})")
    return 0


def cmd_list(args) -> int:
    if getattr(args, "models", None):
        from prune_nas.cli._generic import list_models

        return list_models(args.models, args.json)
    from prune_nas.core.arch import MODELS
    from prune_nas.core.cost import count
    from prune_nas.core.library import names, reference_of, resolve_genome

    lib = []
    for name in names():
        g = resolve_genome(name)
        c, r = count(g), count(reference_of(g))
        lib.append({"name": name, "model": g.model, "method": g.provenance.get("method", ""),
                    "params": c.params, "flops": c.flops,
                    "params_reduction": 1 - c.params / r.params, "flops_reduction": 1 - c.flops / r.flops})
    models = [{"name": s.name, "family": s.family, "classes": s.num_classes, "input": s.input_size,
               "summary": s.summary} for s in MODELS.values()]
    if args.json:
        print(json.dumps({"library": lib, "models": models}, indent=2))
        return 0
    print("Library genomes (artifacts/genomes/):")
    print(table([[x["name"], x["model"], x["method"], human(x["params"]), human(x["flops"]),
                  _reduction(x["params_reduction"]), _reduction(x["flops_reduction"])] for x in lib],
                ["name", "model", "method", "params", "FLOPs", "params vs ref", "FLOPs vs ref"],
                align="lllrrrr"))
    print("\nBase models (any of these names works where a genome is expected):")
    print(table([[m["name"], m["family"], m["classes"], m["input"], m["summary"]] for m in models],
                ["model", "family", "classes", "input", "description"], align="llrrl"))
    return 0


def cmd_export(args) -> int:
    from prune_nas.core.library import resolve_genome

    if not args.out and not args.onnx:
        raise UserError("genome export: give --out FILE.json, --onnx FILE.onnx, or both")
    if args.weights and not args.onnx:
        raise UserError("--weights goes with --onnx (the .json names inherited weights in its provenance)")
    if args.out:
        out = Path(args.out)
        if out.is_dir() or args.out.endswith(("/", os.sep)):
            raise UserError(f"--out {args.out} is a folder; give the file to write, e.g. "
                            f"{out / 'genome.json'}")
    genome = resolve_genome(args.genome)
    if args.onnx:
        from prune_nas.core.export import export_onnx

        report = export_onnx(genome, args.onnx, weights=args.weights, dynamo=args.dynamo)
        print(f"wrote {report['path']} ({report['exporter']} exporter, opset {report['opset']}; "
              f"onnxruntime matches torch within {report['max_rel_error']:.1e} relative)")
    if args.out:
        _export_json(genome, Path(args.out))
    return 0


def _export_json(genome, out: Path) -> None:
    from prune_nas.core.genome import save_genome

    mask = genome.mask_path()
    if mask is not None:
        dest = out.with_suffix(".masks.npz")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mask, dest)
        from dataclasses import replace

        from prune_nas.core.genome import MaskRef

        genome = replace(genome, sparsity=replace(genome.sparsity,
                                                  mask=MaskRef(dest.name, genome.sparsity.mask.sha256)))
    save_genome(genome, out)
    print(f"wrote {out}" + (f" and {out.with_suffix('.masks.npz')}" if mask is not None else ""))


def _reduction(fraction_removed: float) -> str:
    """0.342 -> '-34.2%'; growth shows as '+'."""
    if abs(fraction_removed) < 5e-4:
        return "0%"
    return f"{-fraction_removed:+.1%}"
