"""Time of one training epoch on the embedded digits data (1,437 images), per model and engine.

Prints JSON. Run: python benchmarks/digits_epoch.py [--models vgg11:0.25:32,vgg16:1:32] [--threads N]
Each model is name:width:input_size. The first epoch pays one-time costs (allocations, lazy imports); the
figure is the second epoch's training time (evaluation excluded).
"""

from __future__ import annotations

import argparse
import json

import torch

from prune_nas.core.builder import build
from prune_nas.core.genome import base_genome
from prune_nas.training.data import load_dataset
from prune_nas.training.loop import _device_name, train_model
from prune_nas.training.protocol import Protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vgg11:0.25:16,vgg11:0.25:32,resnet20:1:32,vgg16:1:32")
    parser.add_argument("--engines", default="eager,fast")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = {"benchmark": "digits_epoch", "device": _device_name("cpu"), "threads": args.threads,
           "torch": torch.__version__, "results": []}
    for item in args.models.split(","):
        name, width, size = item.split(":")
        genome = base_genome(name, width_mult=float(width), input_size=int(size))
        data = load_dataset("digits", input_size=genome.input_size, in_channels=genome.in_channels)
        for engine in args.engines.split(","):
            torch.manual_seed(0)
            h = train_model(build(genome), data, Protocol(epochs=2), seed=0, progress=False, evaluate=False,
                            engine=engine)
            out["results"].append({"model": name, "width": float(width), "input": int(size), "engine": engine,
                                   "epoch_seconds": h.curve[1]["train_time_s"],
                                   "first_epoch_seconds": h.curve[0]["train_time_s"]})
            print(json.dumps(out["results"][-1]), flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
