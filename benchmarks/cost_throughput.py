"""How fast the cost model is: params + FLOPs of 1,000 random VGG-19 genomes (target: under 1 s on one core).

Prints JSON. Run: python benchmarks/cost_throughput.py [--n 1000] [--model vgg19]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time

from prune_nas.core.cost import count
from prune_nas.core.genome import random_genome


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--model", default="vgg19")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(0)
    t0 = time.perf_counter()
    genomes = [random_genome(args.model, rng) for _ in range(args.n)]
    gen_s = time.perf_counter() - t0
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        costs = [count(g) for g in genomes]
        best = min(best, time.perf_counter() - t0)
    print(json.dumps({
        "benchmark": "cost_throughput", "model": args.model, "genomes": args.n,
        "cost_seconds_best_of": args.repeats, "cost_seconds": round(best, 4),
        "genomes_per_second": round(args.n / best), "target_seconds": 1.0, "meets_target": best < 1.0,
        "generate_seconds": round(gen_s, 4), "mean_params": sum(c.params for c in costs) / args.n,
        "cpu": cpu_name(), "cpus_visible": os.cpu_count(),
        "python": platform.python_version(), "single_thread": True,
    }, indent=2))


if __name__ == "__main__":
    main()
