"""ImageNet input pipeline: images/s it delivers against the images/s the engine trains ResNet-50 at.

Writes a folder of synthetic JPEGs of ImageNet's sizes (ImageNet's train images average about 400 x 350 px and
110 KB; here sides are drawn from 300..500 px, content smooth noise so the files compress like photographs,
quality 90) as an ImageFolder with train/ and val/, then times, on one machine:

* ``cpu_loader``: ``FolderDataset``'s DataLoader path (PIL decode, RandomResizedCrop, flip, to tensor,
  normalise in ``--workers`` processes) -- what a CPU device or a machine without GPU decode uses;
* ``gpu_decode`` (CUDA only): ``prune_nas.training.jpeg`` -- workers read bytes, nvJPEG decodes the batch,
  crop/flip/normalise on the GPU;
* ``resnet50_train``: the engine's training images/s for ResNet-50 at 224 px on the same device (fast engine
  on CUDA, the eager step on a CPU), from benchmarks/train_throughput.py's loop.

``input_bound`` says whether the pipeline the device would use delivers fewer images/s than training consumes.
Prints JSON.

Run: python benchmarks/input_pipeline.py [--images 512] [--workers 8] [--batch 256] [--train-steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_jpegs(root: Path, n: int, classes: int = 10, seed: int = 0) -> float:
    """``n`` train and ``n // 4`` val JPEGs under ``root``; returns their mean size in KB."""
    from torch.nn import functional as F
    from torchvision.io import encode_jpeg

    g = torch.Generator().manual_seed(seed)
    total, count = 0, 0
    for split, m in (("train", n), ("val", max(1, n // 4))):
        for i in range(m):
            h, w = (int(v) for v in torch.randint(300, 501, (2,), generator=g))
            coarse = torch.rand(1, 3, h // 8, w // 8, generator=g) * 255
            img = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
            img = (img + 12 * torch.randn(3, h, w, generator=g)).clamp(0, 255).to(torch.uint8)
            data = bytes(encode_jpeg(img, quality=90).numpy())
            d = root / split / f"n{i % classes:08d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i}.JPEG").write_bytes(data)
            total, count = total + len(data), count + 1
    return total / count / 1024


def time_batches(batches, images: int) -> float:
    """images/s over one pass of ``batches`` (the first batch, which starts workers, not timed)."""
    it = iter(batches)
    first = next(it)
    _sync(first[0].device)
    start, seen = time.perf_counter(), 0
    for batch in it:
        seen += len(batch[1])
    _sync(batch[0].device)
    return seen / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="train JPEGs to write (default 512)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers")
    parser.add_argument("--batch", type=int, default=256, help="batch size (the paper's ImageNet batch)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="ResNet-50 steps timed (20 CUDA, 2 CPU)")
    parser.add_argument("--folder", help="use (or fill) this folder instead of a temporary one")
    args = parser.parse_args()

    from prune_nas.training import jpeg
    from prune_nas.training.data import IMAGENET_MEAN, IMAGENET_STD, FolderDataset
    from prune_nas.training.loop import _device_name

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    tmp = None if args.folder else tempfile.TemporaryDirectory()
    root = Path(args.folder or tmp.name)
    t0 = time.perf_counter()
    kb = write_jpegs(root, args.images) if not (root / "train").is_dir() else None
    out = {"benchmark": "input_pipeline", "device": _device_name(device), "torch": torch.__version__,
           "images": args.images, "mean_jpeg_kb": round(kb, 1) if kb else None, "batch_size": args.batch,
           "cpu_count": os.cpu_count(), "write_s": round(time.perf_counter() - t0, 1)}
    ds = FolderDataset("imagenet", root, input_size=224, workers=args.workers)
    gen = torch.Generator().manual_seed(0)
    loader = ds.train_batches(args.batch, gen, "cpu")
    out["cpu_loader"] = {"workers": args.workers, "img_s": round(time_batches(loader, args.images), 1)}
    if cuda:
        batches = jpeg.train_batches(ds.train_set.samples, args.batch, gen, device, mean=IMAGENET_MEAN,
                                     std=IMAGENET_STD, workers=args.workers)
        out["gpu_decode"] = {"workers_reading_bytes": args.workers,
                             "img_s": round(time_batches(batches, args.images), 1)}
    else:
        out["gpu_decode"] = "not measured: no CUDA device"

    from train_throughput import data_for, engine_loop

    steps = args.train_steps or (20 if cuda else 2)
    rate = engine_loop("resnet50@224", data_for("resnet50@224", 256 if cuda else 128), device, steps,
                       5 if cuda else 1)
    out["resnet50_train"] = {"engine": "fast" if cuda else "eager (the fast engine's CPU fallback)",
                             "batch_size": 64, "steps_timed": steps, "img_s": round(rate, 1)}
    feed = out["gpu_decode"]["img_s"] if cuda else out["cpu_loader"]["img_s"]
    out["input_bound"] = feed < rate
    out["pipeline_vs_training"] = round(feed / rate, 2)
    print(json.dumps(out, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
