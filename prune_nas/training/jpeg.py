"""ImageNet batches decoded and augmented on the GPU, so that training is not input-bound.

DataLoader workers only read the files' bytes; ``torchvision.io.decode_jpeg(list, device="cuda")`` decodes a
whole batch with nvJPEG (batched decoding, the hardware JPEG engine where the GPU has one), and the random
resized crop, flip and normalisation run on the device. Why this and not NVIDIA DALI: torchvision is already a
dependency and its CUDA decoder needs nothing else installed, while DALI is a separate CUDA-version-specific
package from NVIDIA's index with its own pipeline and iterator; DALI can be faster still (fused crop-decode,
ROI decoding), which matters only if this path turns out to be input-bound on a GPU, and that could not be
measured here (no GPU). torchvision 0.29 marks its decoders deprecated in favour of TorchCodec; the call is
one line to swap when TorchCodec is a dependency.

The augmentation is the reference's: RandomResizedCrop (scale 0.08-1, aspect 3/4-4/3, ten tries then a centre
crop) to ``input_size`` and a horizontal flip; test images are resized to 256/224 of the input size on the
shorter side and centre-cropped. Every random number comes from the caller's CPU generator, as for the
in-memory datasets. The same code runs on a CPU device (tests use it so); on a CPU the folder dataset uses its
DataLoader workers instead, which decode in parallel processes (``data.FolderDataset``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.nn import functional as F

Batch = tuple[torch.Tensor, torch.Tensor]
# Said once in the module docstring instead of once per batch.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def gpu_decode(device: str | torch.device) -> bool:
    """Whether ImageNet batches on ``device`` are decoded there (CUDA devices)."""
    return torch.device(device).type == "cuda"


class _Bytes(torch.utils.data.Dataset):
    """(file bytes as a uint8 tensor, label) for each sample of an ImageFolder."""

    def __init__(self, samples: Sequence[tuple[str, int]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from torchvision.io import read_file

        path, label = self.samples[i]
        return read_file(path), label


def _collate(items: list) -> tuple[list[torch.Tensor], torch.Tensor]:
    return [b for b, _ in items], torch.tensor([y for _, y in items], dtype=torch.long)


def _batches_of_bytes(samples, order: list[list[int]], workers: int) -> Iterator[tuple[list, torch.Tensor]]:
    from torch.utils.data import DataLoader

    loader = DataLoader(_Bytes(samples), batch_sampler=order, num_workers=workers, collate_fn=_collate,
                        persistent_workers=False)
    yield from loader


CROP_TRIES = 10
# Random numbers per image, drawn for every image of a global batch whatever its size, so that every rank of a
# distributed run consumes the generator alike while decoding only its own slice: two per try, two for the
# crop's position, one for the flip.
DRAWS = 2 * CROP_TRIES + 3


def crop_box(h: int, w: int, u: Sequence[float], scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
             ) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (top, left, height, width) from uniform draws ``u`` (at least ``DRAWS - 1``):
    up to ten tries of an area fraction in ``scale`` and a log-uniform aspect in ``ratio``, then the largest
    centre crop within the aspect range."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for k in range(CROP_TRIES):
        target = area * (scale[0] + (scale[1] - scale[0]) * u[2 * k])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[2 * k + 1])
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = min(int(u[2 * CROP_TRIES] * (h - ch + 1)), h - ch)
            left = min(int(u[2 * CROP_TRIES + 1] * (w - cw + 1)), w - cw)
            return top, left, ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, round(w / ratio[0])
    elif in_ratio > ratio[1]:
        ch, cw = h, round(h * ratio[1])
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(img[None].float(), size=size, mode="bilinear", align_corners=False,
                         antialias=True)[0]


def _normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - m) / s


def _decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def train_batches(samples: Sequence[tuple[str, int]], batch_size: int, generator: torch.Generator,
                  device: str | torch.device, *, mean: Sequence[float], std: Sequence[float],
                  input_size: int = 224, flip: bool = True, workers: int = 4,
                  shard: tuple[int, int] | None = None) -> Iterator[Any]:
    """Shuffled, augmented float batches of an ImageFolder's ``samples`` on ``device``, normalised with
    ``mean`` / ``std`` (of 0..1 pixel values). A last batch of one image is dropped (BatchNorm cannot train on
    it), as the folder's DataLoader does.

    ``shard=(rank, world)``: read and decode only this rank's contiguous slice of each global batch and yield
    it as a ``distributed.Slice`` (the slice and the global batch's size); the images are those the full batch
    would hold there, bit for bit."""
    from prune_nas.training.distributed import Slice

    device = torch.device(device)
    n = len(samples)
    perm = torch.randperm(n, generator=generator).tolist()
    order = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    if order and len(order[-1]) == 1 and n > 1:
        order.pop()
    draws = [torch.rand(len(b), DRAWS, generator=generator, dtype=torch.float64) for b in order]
    sizes = [len(b) for b in order]
    if shard is not None:  # a batch smaller than the world is skipped by every rank (see Replicas.shard)
        rank, world = shard
        keep = [i for i, m in enumerate(sizes) if m >= world]
        order, draws, sizes = [order[i] for i in keep], [draws[i] for i in keep], [sizes[i] for i in keep]
        bounds = [(rank * m // world, (rank + 1) * m // world) for m in sizes]
        order = [b[lo:hi] for b, (lo, hi) in zip(order, bounds)]
        draws = [d[lo:hi] for d, (lo, hi) in zip(draws, bounds)]
    for (data, y), u, size in zip(_batches_of_bytes(samples, order, workers), draws, sizes):
        out = torch.empty(len(data), 3, input_size, input_size, device=device)
        for i, img in enumerate(_decode(data, device)):
            top, left, h, w = crop_box(img.shape[1], img.shape[2], u[i].tolist())
            crop = _resize(img[:, top:top + h, left:left + w], (input_size, input_size))
            out[i] = crop.flip(2) if flip and u[i, -1] < 0.5 else crop
        x, y = _normalize(out, mean, std), y.to(device, non_blocking=True)
        yield (x, y) if shard is None else Slice(x, y, size)


def test_batches(samples: Sequence[tuple[str, int]], batch_size: int, device: str | torch.device, *,
                 mean: Sequence[float], std: Sequence[float], input_size: int = 224,
                 workers: int = 4) -> Iterator[Batch]:
    """Resize the shorter side to 256/224 of ``input_size``, centre-crop ``input_size``, normalise."""
    device = torch.device(device)
    resize = round(input_size * 256 / 224)
    order = [list(range(i, min(i + batch_size, len(samples)))) for i in range(0, len(samples), batch_size)]
    for data, y in _batches_of_bytes(samples, order, workers):
        out = torch.empty(len(data), 3, input_size, input_size, device=device)
        for i, img in enumerate(_decode(data, device)):
            h, w = img.shape[1:]
            size = (resize, max(resize, round(w * resize / h))) if h <= w else \
                (max(resize, round(h * resize / w)), resize)
            img = _resize(img, size)
            top, left = (size[0] - input_size) // 2, (size[1] - input_size) // 2
            out[i] = img[:, top:top + input_size, left:left + input_size]
        yield _normalize(out, mean, std), y.to(device, non_blocking=True)
