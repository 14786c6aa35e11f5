"""Exact weight masks: files, application to a built model, and mask-aware initialisation.

A mask file is an ``.npz`` of boolean arrays named by conv layer (the module path in the built model), with
the conv weight's shape. A genome refers to it by path and SHA-256, so a changed file is caught.
Masked weights are set to zero and their gradients are masked, so with SGD (momentum, weight decay) they
stay exactly zero for the whole run.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path

import numpy as np

from prune_nas.core.errors import GenomeError, UserError
from prune_nas.core.geometry import conv_ops, ops_of
from prune_nas.core.userfiles import checked_file

_CACHE: dict[tuple[str, str], dict[str, np.ndarray]] = {}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_masks(masks: dict[str, np.ndarray], path: Path) -> str:
    """Write masks (atomically) and return the file's SHA-256."""
    from prune_nas.core.atomic import atomic_write

    arrays = {k: np.asarray(v, dtype=bool) for k, v in masks.items()}
    atomic_write(path, lambda tmp: np.savez_compressed(tmp, **arrays), ".npz")
    return file_sha256(path)


def load_masks(genome) -> dict[str, np.ndarray]:
    """The genome's masks, checked against its hash and its conv shapes."""
    path = genome.mask_path()
    if path is None:
        return {}
    key = (str(path), genome.sparsity.mask.sha256)
    if key in _CACHE:
        return _CACHE[key]
    try:
        checked_file(path, "mask file")  # a regular file of bounded size: never /dev/zero or a folder
    except UserError as e:
        raise GenomeError("sparsity.mask.file", str(e)) from None
    if file_sha256(path) != genome.sparsity.mask.sha256:
        raise GenomeError("sparsity.mask.sha256", f"{path} does not match the recorded hash")
    convs = conv_ops(genome)
    masks = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for name in data.files:
                if name not in convs:
                    raise GenomeError("sparsity.mask", f"mask for unknown conv layer {name!r}")
                op = convs[name]
                want = (op.cout, op.cin, op.k, op.k)
                mask = data[name]
                if tuple(mask.shape) != want:
                    raise GenomeError("sparsity.mask", f"mask {name!r} has shape {tuple(mask.shape)}, the "
                                                       f"layer has {want}")
                masks[name] = mask.astype(bool)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # not an .npz, or a damaged one
        raise GenomeError("sparsity.mask.file", f"{path} is not a readable .npz of arrays: {e}") from None
    _CACHE[key] = masks
    return masks


def sample_mask(shape: tuple[int, ...], kept: int, keep_map: np.ndarray | None, rng: np.random.Generator
                ) -> np.ndarray:
    """A boolean mask of ``shape`` (cout, cin, k, k) with exactly ``kept`` True entries. For 3x3 kernels the
    kept weights are spread over the nine positions as ``min(1, c * keep_map)`` (``c`` fitted to ``kept``),
    each position's kernels drawn at random; otherwise uniformly."""
    size = int(np.prod(shape))
    if keep_map is None or shape[-2:] != (3, 3):
        flat = np.zeros(size, dtype=bool)
        flat[rng.choice(size, kept, replace=False)] = True
        return flat.reshape(shape)
    n = size // 9
    p = np.maximum(np.asarray(keep_map, dtype=float).ravel(), 1e-6)
    lo, hi = 0.0, 1.0 / p.min()
    for _ in range(100):  # water-filling: sum(min(1, c p)) * n = kept
        c = (lo + hi) / 2
        lo, hi = (c, hi) if np.minimum(1.0, c * p).sum() * n < kept else (lo, c)
    want = np.minimum(1.0, hi * p) * n
    counts = np.minimum(np.floor(want).astype(int), n)
    for i in np.argsort(-(want - counts), kind="stable"):  # largest remainders, then wrap until exact
        if counts.sum() >= kept:
            break
        if counts[i] < n:
            counts[i] += 1
    while counts.sum() < kept:
        counts[np.argmax(counts < n)] += 1
    while counts.sum() > kept:
        counts[np.argmax(counts)] -= 1
    mask = np.zeros((n, 9), dtype=bool)
    for pos in range(9):
        mask[rng.choice(n, counts[pos], replace=False), pos] = True
    return mask.reshape(shape)


def sampled_masks(genome) -> dict[str, np.ndarray]:
    """Masks for a genome that gives per-layer densities (and maybe per-stage 3x3 keep maps) but no mask file.

    Deterministic for the genome: drawn from ``sparsity.seed`` (0 if unset), layer by layer in model order,
    each keeping exactly the ``round(density * weights)`` weights the cost model counts.
    """
    sp = genome.sparsity
    rng = np.random.default_rng(sp.seed or 0)  # validate() keeps the seed in [0, 2^63)
    masks = {}
    for op in ops_of(genome):
        if op.kind != "conv" or op.name not in sp.density:
            continue
        total = op.weight_count
        kept = int(round(sp.density[op.name] * total))
        if kept >= total:
            continue
        keep_map = sp.kernel_keep.get(str(op.stage))
        masks[op.name] = sample_mask((op.cout, op.cin, op.k, op.k), max(kept, 0),
                                     None if keep_map is None else np.asarray(keep_map), rng)
    return masks


def apply_masks(model, masks: dict[str, np.ndarray], reinit: bool = True) -> None:
    """Attach masks to the model's convs: zero the masked weights and mask their gradients.

    With ``reinit`` the kept weights get a fresh N(0, sqrt(2 / n)) init where n is the layer's kept weights
    per input channel (the reference code's scaled-to-kept-fan-in init for sparse scratch training).
    """
    import torch

    for name, mask in masks.items():
        conv = model.get_submodule(name)
        m = torch.as_tensor(mask, dtype=conv.weight.dtype, device=conv.weight.device)
        conv.register_buffer("weight_mask", m)
        with torch.no_grad():
            if reinit:
                n = max(float(mask.sum()) / conv.in_channels, 1.0)
                conv.weight.normal_(0, math.sqrt(2.0 / n))
            conv.weight.mul_(m)
        conv.weight.register_hook(_grad_mask(conv))


def _grad_mask(conv):
    def hook(grad):
        return grad * conv.weight_mask

    return hook
