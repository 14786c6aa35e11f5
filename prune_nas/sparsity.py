"""Exact weight masks: files, application to a built model, and mask-aware initialisation.

A mask file is an ``.npz`` of boolean arrays named by conv layer (the module path in the built model), with
the conv weight's shape. A genome refers to it by path and SHA-256, so a changed file is caught.
Masked weights are set to zero and their gradients are masked, so with SGD (momentum, weight decay) they
stay exactly zero for the whole run.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from .errors import GenomeError

_CACHE: dict[tuple[str, str], dict[str, np.ndarray]] = {}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_masks(masks: dict[str, np.ndarray], path: Path) -> str:
    """Write masks (atomically) and return the file's SHA-256."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    np.savez_compressed(tmp, **{k: np.asarray(v, dtype=bool) for k, v in masks.items()})
    os.replace(tmp, path)
    return file_sha256(path)


def load_masks(genome) -> dict[str, np.ndarray]:
    """The genome's masks, checked against its hash and its conv shapes."""
    from .genome import conv_ops

    path = genome.mask_path()
    if path is None:
        return {}
    key = (str(path), genome.sparsity.mask.sha256)
    if key in _CACHE:
        return _CACHE[key]
    if not path.exists():
        raise GenomeError("sparsity.mask.file", f"mask file not found: {path}")
    if file_sha256(path) != genome.sparsity.mask.sha256:
        raise GenomeError("sparsity.mask.sha256", f"{path} does not match the recorded hash")
    with np.load(path) as data:
        masks = {k: data[k].astype(bool) for k in data.files}
    convs = conv_ops(genome)
    for name, mask in masks.items():
        if name not in convs:
            raise GenomeError("sparsity.mask", f"mask for unknown conv layer {name!r}")
        op = convs[name]
        want = (op.cout, op.cin, op.k, op.k)
        if tuple(mask.shape) != want:
            raise GenomeError("sparsity.mask", f"mask {name!r} has shape {tuple(mask.shape)}, the layer has "
                                               f"{want}")
    _CACHE[key] = masks
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
