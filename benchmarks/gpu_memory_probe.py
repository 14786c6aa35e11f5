"""Diagnose GPU memory across candidates: is anything left allocated after a candidate is trained and dropped?

Prints one JSON line per configuration: allocated bytes after each of N candidates, and whether the model
object was collected. Run on a CUDA machine: python benchmarks/gpu_memory_probe.py
"""

import gc
import json
import weakref

import torch

from prune_nas import build
from prune_nas.core.genome import base_genome
from prune_nas.training.data import load_dataset
from prune_nas.training.engine import EngineOptions
from prune_nas.training.loop import train_model
from prune_nas.training.protocol import Protocol


def probe(engine, n=3):
    ds = load_dataset("digits")
    out, alive = [], []
    for seed in range(n):
        torch.manual_seed(seed)
        model = build(base_genome("vgg11", width_mult=0.25)).cuda()
        ref = weakref.ref(model)
        train_model(model, ds, Protocol(epochs=1), seed=seed, device="cuda", progress=False, engine=engine)
        if seed == 0:
            gc.collect()
            referrers = [type(r).__name__ for r in gc.get_referrers(model) if r is not globals()]
            grads = sum(p.grad is not None for p in model.parameters())
            print(json.dumps({"engine": str(engine), "referrers": referrers, "grads_left": grads}),
                  flush=True)
        del model
        gc.collect()
        torch.cuda.synchronize()
        out.append(torch.cuda.memory_allocated())
        alive.append(ref() is not None)
    return out, alive


if __name__ == "__main__":
    for name, engine in [("eager", "eager"), ("fast-nograph", EngineOptions("fast", graph=False)),
                         ("fast-graph", "fast")]:
        allocated, alive = probe(engine)
        print(json.dumps({"engine": name, "allocated": allocated, "model_alive": alive}), flush=True)
