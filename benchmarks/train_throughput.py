"""Training throughput: the plain PyTorch loop vs the fast engine, one candidate and several at once.

In ONE run: VGG-16 (CIFAR, Li et al. head), VGG-16-A and ResNet-56 at batch 64 on CIFAR-shaped data
(random uint8 images; throughput does not depend on pixel values), printing JSON with images/s and the
ratio to the plain loop.

* plain: a DataLoader with worker processes doing per-image crop + flip on the CPU, fp32, eager,
  ``torch.optim.SGD`` -- how a training script is usually written.
* engine: ``prune_nas.training.engine`` -- data on the device, epoch-level batched augmentation, bf16
  autocast, channels_last, the whole step as one CUDA graph (on CPU: fp32, no graph).
* concurrent: N engine processes on the same device at once (MPS daemon started when possible; whether it
  ran is reported), total images/s over the window in which all of them were running.

Targets on an H100/H200: engine >= 4x plain on VGG-16 and >= 6x on ResNet-56; concurrent >= 1.5x the single
engine. On CPU: engine not slower than plain.

Run: python benchmarks/train_throughput.py [--procs 4] [--steps 300] [--models vgg16-l1,vgg16-a,resnet56]
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


def synthetic_cifar(n: int, num_classes: int = 10):
    from prune_nas.training.data import CIFAR_MEAN, CIFAR_STD, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return TensorDataset("cifar-shaped", num_classes, x, y, x[:512], y[:512], CIFAR_MEAN, CIFAR_STD)


def model_for(name: str):
    from prune_nas.core.builder import build
    from prune_nas.core.library import resolve_genome

    return build(resolve_genome(name))


class _CropFlip(torch.utils.data.Dataset):
    def __init__(self, x, y, mean, std):
        self.x, self.y = x, y
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = torch.nn.functional.pad(self.x[i], (4, 4, 4, 4))
        dy, dx = torch.randint(0, 9, (2,)).tolist()
        img = img[:, dy:dy + 32, dx:dx + 32]
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


def engine_loop(name: str, data, device: torch.device, steps: int, warmup: int, barrier=None) -> float:
    from prune_nas.training.engine import EngineOptions, FastStep, device_epoch
    from prune_nas.training.protocol import Protocol

    opts = EngineOptions("fast").resolved(device)
    model = model_for(name).to(device).train()
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    step = FastStep(model, Protocol(), device, opts)
    gen = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if opts.amp else torch.float32

    def batches():
        while True:
            yield from device_epoch(data, BATCH, gen, device, crop_padding=4, flip=True, dtype=dtype,
                                    channels_last=bool(opts.channels_last))

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
    data = synthetic_cifar(8192)
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
    parser.add_argument("--models", default="vgg16-l1,vgg16-a,resnet56")
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
    data = synthetic_cifar(8192 if cuda else 1024)
    out = {"benchmark": "train_throughput", "batch_size": BATCH, "device": _device_name(device),
           "torch": torch.__version__, "steps_timed": steps, "results": {}}
    if cuda and not args.no_concurrent:
        from prune_nas.training.parallel import start_mps

        out["mps"] = start_mps()
    for name in args.models.split(","):
        t0 = time.perf_counter()
        plain = plain_loop(name, data, device, steps if cuda else steps, warmup, args.workers if cuda else 0)
        fast = engine_loop(name, data, device, steps, warmup)
        row = {"plain_img_s": round(plain), "engine_img_s": round(fast),
               "engine_vs_plain": round(fast / plain, 2)}
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
