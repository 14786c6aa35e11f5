"""FLOPs removed vs latency removed for the paper's named pruned architectures, measured on this machine.

For each named genome (VGG-16-A, ResNet-56-A/B, ResNet-110-A/B, the ThiNet and SSS ResNet-50s) and its
reference (the unpruned model), the median forward latency in eval mode at batch 1 and at a large batch, with
its interquartile range; "latency removed" is 1 - pruned / reference, and it is flagged unresolved when the
difference is within the larger IQR. CIFAR models run at 32 px with a large batch of 64; ImageNet ResNet-50s
at 224 px with a large batch of 8 (64 would take minutes per figure on a shared 2-core CPU): the JSON says so.

Prints JSON. Run: python benchmarks/latency_named.py [--threads 1] [--repeats 10] [--device cpu]
Figures are not read from the latency cache (each run measures afresh). The reference is measured right
before and right after each genome (reference, genome, reference), so a change of the machine's load between
measurements shows as ``reference_drift``; a difference is resolved only when it exceeds both the larger IQR
and that drift.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

from prune_nas.core.cost import count
from prune_nas.core.latency import compare, device_name, measure
from prune_nas.core.library import get, reference_of

CIFAR = ["vgg16-a", "resnet56-a", "resnet56-b", "resnet110-a", "resnet110-b"]
IMAGENET = ["thinet-resnet50-30", "thinet-resnet50-50", "thinet-resnet50-70", "sss-resnet41", "sss-resnet32",
            "sss-resnet26"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10, help="timed blocks per figure (CIFAR models)")
    parser.add_argument("--imagenet-repeats", type=int, default=5, help="timed blocks per ResNet-50 figure")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    parser.add_argument("--cifar-batch", type=int, default=64)
    parser.add_argument("--imagenet-batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="*", help="a subset of the genome names")
    args = parser.parse_args()

    start, load_start = time.time(), os.getloadavg()
    rows = []
    for name in [n for n in CIFAR + IMAGENET if not args.only or n in args.only]:
        genome = get(name)
        ref = reference_of(genome)
        imagenet = name in IMAGENET
        repeats = args.imagenet_repeats if imagenet else args.repeats
        fc, rc = count(genome), count(ref)
        row = {"genome": name, "reference": ref.name or ref.model, "input": genome.input_size,
               "flops": fc.flops, "reference_flops": rc.flops, "flops_removed": 1 - fc.flops / rc.flops,
               "params_removed": 1 - fc.params / rc.params, "batches": {}}
        for batch in (1, args.imagenet_batch if imagenet else args.cifar_batch):
            kw = {"device": args.device, "batch": batch, "threads": args.threads, "repeats": repeats,
                  "warmup": args.warmup, "cache": False}
            before, mine, after = measure(ref, **kw), measure(genome, **kw), measure(ref, **kw)
            theirs = before if before.median_ms <= after.median_ms else after  # the quieter moment
            drift_ms = abs(before.median_ms - after.median_ms)
            c = compare(mine, theirs)
            row["batches"][str(batch)] = {
                "ms": mine.median_ms, "iqr_ms": mine.iqr_ms, "reference_ms": theirs.median_ms,
                "reference_iqr_ms": theirs.iqr_ms, "reference_drift_ms": drift_ms,
                "latency_removed": c.removed,
                "resolved": c.resolved and abs(c.difference_ms) > drift_ms,
                "throughput": mine.throughput, "reference_throughput": theirs.throughput}
        rows.append(row)
        print(json.dumps({"progress": name, "s": round(time.time() - start)}), flush=True, file=sys.stderr)
    out = {"benchmark": "latency_named", "device": args.device, "device_name": device_name(args.device),
           "machine": platform.machine(), "torch": torch.__version__, "threads": args.threads,
           "dtype": "float32", "note": f"CIFAR models at 32 px, large batch {args.cifar_batch}; ImageNet "
                                       f"ResNet-50s at 224 px, large batch {args.imagenet_batch}",
           "cifar_repeats": args.repeats, "imagenet_repeats": args.imagenet_repeats, "warmup": args.warmup,
           "loadavg_start": load_start, "wall_s": None, "rows": rows}
    out["wall_s"] = round(time.time() - start, 1)
    out["loadavg_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
