"""Datasets by name, held as uint8 tensors and augmented with batched tensor ops.

>>> ds = load_dataset("synthetic", input_size=16)
>>> ds.num_classes, ds.train_size, ds.test_size
(10, 512, 256)

Names:

* ``digits`` (the embedded default, offline): scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10
  classes). Pixel values 0..16 are scaled to 0..255, bilinearly resized once to the genome's input size and
  replicated to its channel count. Fixed stratified split (``random_state=0``): 1,437 train / 360 test images.
  Normalised with the train split's own mean and std. Horizontal flips are off for digits (a mirrored digit
  is not the same digit); pad-4 crops stay on.
* ``cifar10`` / ``cifar100``: torchvision's files under ``--data-dir`` (default ``$PRUNE_NAS_HOME/data`` or
  ``artifacts/data``), fetched with ``--download``. 50,000 train / 10,000 test.
* ``imagenet``: an ImageFolder tree ``<data-dir>/train`` and ``<data-dir>/val`` read through a DataLoader
  (random-resized crop 224 + flip; resize 256 + centre crop 224 for test); on a CUDA device the workers only
  read the files and the JPEGs are decoded and augmented on the GPU (``prune_nas.training.jpeg``).
* ``synthetic``: class templates plus noise, generated from a seed; learnable in a few steps, for tests.

In-memory datasets keep uint8 NCHW tensors (one copy per device, made on first use); a batch is cropped,
flipped and normalised on its device as whole-batch tensor ops. All randomness (shuffle, crop offsets, flips)
comes from one ``torch.Generator`` on the CPU, so an epoch sees the same images, crops and flips on any device
(normalised values may differ in the last bit between CPU and GPU arithmetic).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from torch.nn import functional as F

from prune_nas.core.errors import UserError
from prune_nas.core.paths import output_dir

Batch = tuple[torch.Tensor, torch.Tensor]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
# The reference code's std, kept as the paper used it (the per-pixel std would be 0.247, 0.243, 0.261).
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIGITS_TEST_SIZE = 360
NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "imagenet": 1000, "synthetic": 10}
NAMES = tuple(NUM_CLASSES)


def default_data_dir() -> Path:
    return output_dir("data")


class Dataset:
    """What the trainer needs from a dataset. ``flip`` says whether horizontal flips make sense for it."""

    name: str
    num_classes: int
    flip: bool = True

    @property
    def train_size(self) -> int:
        raise NotImplementedError

    @property
    def test_size(self) -> int:
        raise NotImplementedError

    def steps_per_epoch(self, batch_size: int) -> int:
        full, rest = divmod(self.train_size, batch_size)
        return full + (rest > 1)

    def train_batches(self, batch_size: int, generator: torch.Generator,
                      device: str | torch.device = "cpu", *, crop_padding: int = 4,
                      flip: bool = True) -> Iterator[Batch]:
        raise NotImplementedError

    def test_batches(self, batch_size: int, device: str | torch.device = "cpu") -> Iterator[Batch]:
        raise NotImplementedError

    def info(self) -> dict:
        return {"name": self.name, "num_classes": self.num_classes, "train_size": self.train_size,
                "test_size": self.test_size}


@dataclass(eq=False)
class TensorDataset(Dataset):
    """A dataset held in memory as uint8 NCHW images and int64 labels."""

    name: str
    num_classes: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = True
    _copies: dict = field(default_factory=dict, repr=False)

    @property
    def train_size(self) -> int:
        return len(self.train_y)

    @property
    def test_size(self) -> int:
        return len(self.test_y)

    def on(self, device: str | torch.device) -> dict[str, torch.Tensor]:
        """The tensors on ``device`` (copied once, then cached), with mean/std shaped for broadcasting."""
        key = str(torch.device(device))
        if key not in self._copies:
            c = len(self.mean)
            self._copies[key] = {
                "train_x": self.train_x.to(device), "train_y": self.train_y.to(device),
                "test_x": self.test_x.to(device), "test_y": self.test_y.to(device),
                "mean": torch.tensor(self.mean, device=device).view(1, c, 1, 1),
                "std": torch.tensor(self.std, device=device).view(1, c, 1, 1)}
        return self._copies[key]

    def normalize(self, x: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
        return (x.float().div_(255.0) - t["mean"]) / t["std"]

    def train_batches(self, batch_size, generator, device="cpu", *, crop_padding=4, flip=True):
        t = self.on(device)
        n = self.train_size
        order = torch.randperm(n, generator=generator)
        flip = flip and self.flip
        for i in range(self.steps_per_epoch(batch_size)):
            idx = order[i * batch_size:(i + 1) * batch_size]
            b = len(idx)
            # Every random number comes from the CPU generator, whatever the device, so batches match across
            # devices.
            offs = (torch.randint(0, 2 * crop_padding + 1, (2, b), generator=generator) if crop_padding
                    else None)
            flips = torch.rand(b, generator=generator) < 0.5 if flip else None
            idx = idx.to(device)
            x = augment(t["train_x"].index_select(0, idx), crop_padding, offs, flips)
            yield self.normalize(x, t), t["train_y"].index_select(0, idx)

    def test_batches(self, batch_size, device="cpu"):
        t = self.on(device)
        for i in range(0, self.test_size, batch_size):
            yield self.normalize(t["test_x"][i:i + batch_size], t), t["test_y"][i:i + batch_size]


def augment(x: torch.Tensor, crop_padding: int, offsets: torch.Tensor | None,
            flips: torch.Tensor | None) -> torch.Tensor:
    """Crop (``offsets``: (2, B) in [0, 2 * crop_padding]) and flip (``flips``: (B,) bool) a uint8 batch on
    its own device; either may be None to skip it. The random numbers come in, so callers own the RNG."""
    if offsets is not None:
        x = random_crop(x, crop_padding, offsets.to(x.device))
    if flips is not None:
        x = torch.where(flips.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
    return x


def random_crop(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Zero-pad a batch by ``padding`` and crop each image back to its size at its own (dy, dx) offset.

    ``offsets`` is a (2, B) integer tensor in [0, 2 * padding]. Zero padding on the raw uint8 image matches
    torchvision's ``RandomCrop(32, padding=4)`` on PIL images (black border before normalisation).
    """
    b, c, h, w = x.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    rows = (offsets[0].view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (offsets[1].view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return xp[bi, ci, rows, cols]


def _fit(x: torch.Tensor, input_size: int, in_channels: int) -> torch.Tensor:
    """Resize uint8 NCHW images to ``input_size`` and repeat / average them to ``in_channels``."""
    if x.shape[-1] != input_size:
        y = F.interpolate(x.float(), size=(input_size, input_size), mode="bilinear", align_corners=False)
        x = y.round_().clamp_(0, 255).to(torch.uint8)
    c = x.shape[1]
    if c == in_channels:
        return x.contiguous()
    if c == 1:
        return x.expand(-1, in_channels, -1, -1).contiguous()
    if in_channels == 1:
        return x.float().mean(1, keepdim=True).round_().to(torch.uint8)
    raise UserError(f"cannot adapt {c}-channel images to a {in_channels}-channel model")


def _stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    xf = x.double() / 255.0
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def digits(input_size: int = 32, in_channels: int = 3) -> TensorDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images).mul(255.0 / 16.0).round().to(torch.uint8).unsqueeze(1)
    y = torch.from_numpy(d.target).long()
    tr, te = train_test_split(range(len(y)), test_size=DIGITS_TEST_SIZE, stratify=d.target, random_state=0)
    tr, te = torch.tensor(tr), torch.tensor(te)
    x = _fit(x, input_size, in_channels)
    mean, std = _stats(x[tr])
    return TensorDataset("digits", 10, x[tr], y[tr], x[te], y[te], mean, std, flip=False)


def synthetic(num_classes: int = 10, train_size: int = 512, test_size: int = 256, input_size: int = 32,
              in_channels: int = 3, noise: float = 40.0, seed: int = 0) -> TensorDataset:
    """Each class is a smooth random template; samples add Gaussian pixel noise. Separable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, in_channels, 4, 4, generator=g) * 255
    templates = F.interpolate(coarse, size=(input_size, input_size), mode="bilinear", align_corners=False)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes
        x = templates[y] + noise * torch.randn(n, in_channels, input_size, input_size, generator=g)
        return x.round().clamp(0, 255).to(torch.uint8), y

    (xtr, ytr), (xte, yte) = draw(train_size), draw(test_size)
    mean, std = _stats(xtr)
    return TensorDataset("synthetic", num_classes, xtr, ytr, xte, yte, mean, std)


def cifar(name: str, root: Path, download: bool, input_size: int = 32, in_channels: int = 3) -> TensorDataset:
    from torchvision import datasets

    cls, folder, classes = ((datasets.CIFAR10, "cifar-10-batches-py", 10) if name == "cifar10"
                            else (datasets.CIFAR100, "cifar-100-python", 100))
    if not download and not (root / folder).is_dir():
        raise UserError(f"{name} not found: looked for {(root / folder).resolve()}; pass --download to fetch "
                        f"it there, or --data-dir to point at a folder holding {folder}/")
    try:
        parts = [cls(str(root), train=train, download=download) for train in (True, False)]
    except RuntimeError as e:  # torchvision's "Dataset not found or corrupted"
        raise UserError(f"{name} in {root.resolve()} is unreadable ({e}); pass --download to fetch it "
                        "again") from None
    except OSError as e:  # a failed download (no network)
        raise UserError(f"could not download {name} to {root.resolve()}: {e}; fetch it elsewhere and pass "
                        f"--data-dir") from None
    xs = [_fit(torch.from_numpy(p.data).permute(0, 3, 1, 2), input_size, in_channels) for p in parts]
    ys = [torch.tensor(p.targets, dtype=torch.long) for p in parts]
    mean, std = (CIFAR_MEAN, CIFAR_STD) if in_channels == 3 else _stats(xs[0])
    return TensorDataset(name, classes, xs[0], ys[0], xs[1], ys[1], mean, std)


class FolderDataset(Dataset):
    """ImageNet-style ImageFolder tree, decoded and augmented by a DataLoader (too big to hold in memory)."""

    def __init__(self, name: str, root: Path, input_size: int = 224, workers: int = 8):
        from torchvision import datasets, transforms

        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise UserError(f"{name} not found: looked for {(root / split).resolve()}; pass --data-dir "
                                f"pointing at a folder with train/ and val/ ImageFolder trees")
        norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        resize = int(round(input_size * 256 / 224))
        self.train_set = datasets.ImageFolder(str(root / "train"), transforms.Compose([
            transforms.RandomResizedCrop(input_size), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), norm]))
        self.test_set = datasets.ImageFolder(str(root / "val"), transforms.Compose([
            transforms.Resize(resize), transforms.CenterCrop(input_size), transforms.ToTensor(), norm]))
        self.name, self.num_classes, self.workers = name, len(self.train_set.classes), workers
        self.input_size = input_size

    @property
    def train_size(self) -> int:
        return len(self.train_set)

    @property
    def test_size(self) -> int:
        return len(self.test_set)

    def _loader(self, data, batch_size: int, generator: torch.Generator | None):
        from torch.utils.data import DataLoader

        return DataLoader(data, batch_size=batch_size, shuffle=generator is not None, generator=generator,
                          num_workers=self.workers, pin_memory=torch.cuda.is_available(),
                          drop_last=generator is not None and len(data) % batch_size == 1,
                          persistent_workers=False)

    def train_batches(self, batch_size, generator, device="cpu", *, crop_padding=4, flip=True):
        # The transforms do their own crop and flip; crop_padding does not apply to ImageNet.
        from prune_nas.training import distributed, jpeg

        if jpeg.gpu_decode(device):  # decode and augment on the GPU; the workers only read bytes
            world = distributed.current()  # a rank reads and decodes only its part of each batch
            yield from jpeg.train_batches(self.train_set.samples, batch_size, generator, device,
                                          mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=self.input_size,
                                          flip=flip, workers=self.workers,
                                          shard=(world.rank, world.world_size) if world else None)
            return
        for x, y in self._loader(self.train_set, batch_size, generator):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def test_batches(self, batch_size, device="cpu"):
        from prune_nas.training import jpeg

        if jpeg.gpu_decode(device):
            yield from jpeg.test_batches(self.test_set.samples, batch_size, device, mean=IMAGENET_MEAN,
                                         std=IMAGENET_STD, input_size=self.input_size, workers=self.workers)
            return
        for x, y in self._loader(self.test_set, batch_size, None):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None, download: bool = False,
                 input_size: int = 32, in_channels: int = 3) -> Dataset:
    """A dataset by name, adapted to a model's input size and channels.

    >>> load_dataset("digits", input_size=16, in_channels=1).train_x.shape
    torch.Size([1437, 1, 16, 16])
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if name == "digits":
        return digits(input_size, in_channels)
    if name == "synthetic":
        return synthetic(input_size=input_size, in_channels=in_channels)
    if name in ("cifar10", "cifar100"):
        return cifar(name, root, download, input_size, in_channels)
    if name == "imagenet":
        if in_channels != 3:
            raise UserError("imagenet needs a 3-channel model")
        return FolderDataset(name, root if data_dir is not None else root / "imagenet", input_size)
    raise UserError(f"unknown dataset {name!r}; known: {', '.join(NAMES)}")


class Datasets:
    """Datasets loaded once per process: ``datasets(name, genome)`` is ``name`` at the input size and channels
    ``genome`` asks for, read on first use (for the commands that train many runs)."""

    def __init__(self, data_dir: str | os.PathLike | None = None, download: bool = False):
        self.data_dir, self.download = data_dir, download
        self._loaded: dict[tuple[str, int, int], Dataset] = {}

    def __call__(self, name: str, genome) -> Dataset:
        key = (name, genome.input_size, genome.in_channels)
        if key not in self._loaded:
            self._loaded[key] = load_dataset(name, data_dir=self.data_dir, download=self.download,
                                             input_size=genome.input_size, in_channels=genome.in_channels)
        return self._loaded[key]
