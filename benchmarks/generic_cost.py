"""How fast generic genomes are costed: the first analysis of torchvision ResNet-50 (Torch-Pruning graph on
the meta device, FlopCounterMode check) and then genomes with random widths per second from the cached
analysis.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/generic_cost.py   # prints JSON
"""

from __future__ import annotations

import json
import os
import platform
import random
import tempfile
import time


def main() -> None:
    os.environ.setdefault("PRUNE_NAS_HOME", tempfile.mkdtemp())  # a cold disk cache
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    from prune_nas.core.cost import count
    from prune_nas.core.genome import base_genome

    imports = time.perf_counter() - start
    start = time.perf_counter()
    base = base_genome("torchvision:resnet50", num_classes=1000, input_size=224)
    first = time.perf_counter() - start
    rng = random.Random(0)
    genomes = [base.replace(widths={g: rng.randint(1, w) for g, w in base.widths.items()})
               for _ in range(200)]
    start = time.perf_counter()
    for g in genomes:
        count(g)
    costed = time.perf_counter() - start
    print(json.dumps({"model": "torchvision:resnet50", "input": 224, "groups": len(base.widths),
                      "import_s": round(imports, 2), "first_analysis_s": round(first, 2),
                      "genomes": len(genomes), "genomes_per_s": round(len(genomes) / costed, 1),
                      "ms_per_genome": round(1000 * costed / len(genomes), 3), "threads": 1,
                      "cpu": platform.processor() or platform.machine()}, indent=1))


if __name__ == "__main__":
    main()
