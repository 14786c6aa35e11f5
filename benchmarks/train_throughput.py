"""Training throughput: the plain PyTorch loop vs the engine's eager and fast steps, one candidate and several
at once.

In ONE run, at batch 64: the paper's CIFAR families -- VGG-16 (Li et al. head), VGG-16-A, VGG-19, ResNet-56,
ResNet-110, PreResNet-164, DenseNet-40 (k=12) -- on CIFAR-shaped data, and ResNet-50 at 224 px on
ImageNet-shaped data (random uint8 images; throughput does not depend on pixel values), printing JSON with
images/s and the ratios. Keys are the model names, ``name@size`` away from 32 px (``resnet50@224``): what
``prune-nas run --dry-run`` prices runs with (prune_nas/repro/bill.py).

* plain: a DataLoader with worker processes doing per-image crop + flip on the CPU, fp32, eager,
  ``torch.optim.SGD`` -- how a training script is usually written.
* eager: ``prune_nas.training.engine.EagerStep`` on the dataset's own batched augmentation
  (``--engine eager``).
* engine: the fast engine as ``train_model`` runs it -- on CUDA: data on the device, epoch-level batched
  augmentation, bf16 autocast, channels_last, the whole step as one CUDA graph; on CPU the fast engine runs
  the eager step (``EngineOptions.resolved``: nothing of it is faster on a CPU), and the row says which ran.
* concurrent: N engine processes on the same device at once (MPS daemon started when possible; whether it
  ran is reported), total images/s over the window in which all of them were running.

Targets on an H100/H200: engine >= 4x plain on VGG-16 and >= 6x on ResNet-56; concurrent >= 1.5x the single
engine. On CPU: engine not slower than eager.

Run: python benchmarks/train_throughput.py [--procs 4] [--steps 300] [--models vgg16-l1,resnet50@224]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.multiprocessing as mp

BATCH = 64
MODELS = "vgg16-l1,vgg16-a,vgg19,resnet56,resnet110,preresnet164,densenet40,resnet50@224"


def synthetic_cifar(n: int, num_classes: int = 10, size: int = 32):
    from prune_nas.training.data import CIFAR_MEAN, CIFAR_STD, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return TensorDataset(f"{size}px-shaped", num_classes, x, y, x[:512], y[:512], CIFAR_MEAN, CIFAR_STD)


def split_key(key: str) -> tuple[str, int]:
    """``resnet50@224`` -> (resnet50, 224); a bare name is at 32 px."""
    name, _, size = key.partition("@")
    return name, int(size) if size else 32


def genome_for(key: str):
    from prune_nas.core.library import resolve_genome

    name, size = split_key(key)
    g = resolve_genome(name)
    classes = 1000 if size >= 64 else 10
    return (g.replace(input_size=size, num_classes=classes)
            if (g.input_size, g.num_classes) != (size, classes) else g)


def data_for(key: str, n: int):
    g = genome_for(key)
    return synthetic_cifar(n, g.num_classes, g.input_size)


def model_for(name: str):
    from prune_nas.core.builder import build

    return build(genome_for(name))


class _CropFlip(torch.utils.data.Dataset):
    def __init__(self, x, y, mean, std):
        self.x, self.y = x, y
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        size = self.x.shape[-1]
        img = torch.nn.functional.pad(self.x[i], (4, 4, 4, 4))
        dy, dx = torch.randint(0, 9, (2,)).tolist()
        img = img[:, dy:dy + size, dx:dx + size]
        if torch.rand(()) < 0.5:
            img = img.flip(2)
        return (img.float() / 255 - self.mean) / self.std, self.y[i]


def plain_loop(name: str, data, device: torch.device, steps: int, warmup: int, workers: int) -> float:
    model = model_for(name).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(_CropFlip(data.train_x, data.train_y, data.mean, data.std),
                                         batch_size=BATCH, shuffle=True, drop_last=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    done, start = 0, None
    while done < warmup + steps:
        for x, y in loader:
            if done == warmup:
                _sync(device)
                start = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == warmup + steps:
                break
    _sync(device)
    return steps * BATCH / (time.perf_counter() - start)


def engine_loop(name: str, data, device: torch.device, steps: int, warmup: int, barrier=None,
                engine: str = "fast") -> float:
    """images/s of the step ``train_model`` runs for ``engine`` (``make_step``: on CPU the fast engine
    resolves to the eager step)."""
    from prune_nas.training.engine import make_step
    from prune_nas.training.protocol import Protocol

    model = model_for(name).to(device).train()
    protocol = Protocol(batch_size=BATCH)
    step = make_step(model, protocol, device, engine)
    gen = torch.Generator().manual_seed(0)

    def batches():
        while True:
            yield from step.batches(data, protocol, gen)

    it = batches()
    for _ in range(warmup):
        step(*next(it))
    _sync(device)
    if barrier is not None:
        barrier.wait()
    start = time.perf_counter()
    for _ in range(steps):
        step(*next(it))
    float(step.loss_sum)  # one sync, as the training loop does per epoch
    return steps * BATCH / (time.perf_counter() - start)


def _worker(name, device_str, steps, warmup, barrier, queue):
    torch.backends.cudnn.benchmark = True
    data = data_for(name, 8192 if split_key(name)[1] <= 32 else 1024)
    queue.put(engine_loop(name, data, torch.device(device_str), steps, warmup, barrier))


def concurrent(name: str, device: torch.device, procs: int, steps: int, warmup: int) -> float:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(name, str(device), steps, warmup, barrier, queue))
               for _ in range(procs)]
    for w in workers:
        w.start()
    rates = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    # Every process timed the same number of steps from a common start: the slowest bounds the window.
    return procs * steps * BATCH / max(steps * BATCH / r for r in rates)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=MODELS, help=f"comma-separated keys (default {MODELS})")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 300 CUDA, 8 CPU)")
    parser.add_argument("--procs", type=int, default=4, help="concurrent engine processes")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers for the plain loop")
    parser.add_argument("--no-concurrent", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    steps = args.steps or (300 if cuda else 8)
    warmup = 20 if cuda else 2
    torch.backends.cudnn.benchmark = True
    from prune_nas.training.engine import EngineOptions

    out = {"benchmark": "train_throughput", "batch_size": BATCH, "device": _device_name(device),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "steps_timed": steps,
           "fast_engine_runs": EngineOptions("fast").resolved(device).kind, "results": {}}
    if cuda and not args.no_concurrent:
        from prune_nas.training.parallel import start_mps

        out["mps"] = start_mps()
    for name in args.models.split(","):
        t0 = time.perf_counter()
        big = split_key(name)[1] > 32
        data = data_for(name, (1024 if big else 8192) if cuda else 2 * BATCH)
        n = max(2, steps // 4) if big and not cuda else steps  # 224 px on a CPU: seconds per step
        plain = plain_loop(name, data, device, n, warmup, args.workers if cuda else 0)
        eager = engine_loop(name, data, device, n, warmup, engine="eager")
        fast = engine_loop(name, data, device, n, warmup)
        row = {"plain_img_s": round(plain, 1), "eager_img_s": round(eager, 1), "engine_img_s": round(fast, 1),
               "engine_vs_plain": round(fast / plain, 2), "engine_vs_eager": round(fast / eager, 2),
               "steps_timed": n}
        if cuda and not args.no_concurrent:
            together = concurrent(name, device, args.procs, steps * 2, warmup)
            row.update({"concurrent_procs": args.procs, "concurrent_img_s": round(together),
                        "concurrent_vs_single_engine": round(together / fast, 2)})
        row["seconds"] = round(time.perf_counter() - t0, 1)
        out["results"][name] = row
        print(json.dumps({name: row}), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


def _device_name(device: torch.device) -> str:
    from prune_nas.training.loop import _device_name as name

    return name(device)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
