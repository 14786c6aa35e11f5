"""Sampled layer activations for the reconstruction-based channel pruners (ThiNet, He et al.'s regression).

Both methods prune the output channels of a layer by looking at the *single* layer that reads them (the
consumer): a channel can go when the consumer's output barely needs it. ``links(genome)`` finds, from the
layer geometry (``Op.in_slots``) and the coupling graph, the width groups read by exactly one conv or linear
layer and nothing else. Residual streams, a ResNet-50 stem (read by a block and its projection shortcut) and
channels read through a selection are never listed, so these methods cannot emit a genome that breaks a
residual add.

On sampled output positions the consumer's output is a sum of per-input-channel *contributions*
(``x_c = sum over the kernel window of W[o, c] * input[c]``). A ``LayerSample`` holds:

* ``samples`` rows (image, output position, output channel) drawn at random as in ThiNet, with the
  contribution of every input channel (``Z``: rows x channels) and the target output at that row (``y``);
* up to ``positions`` (image, position) pairs with all output channels, for a full least-squares refit of the
  consumer's weights (``patches``: positions x channels x window, ``Y``: positions x outputs).

Layers are pruned one after another (``prune_sequential``): a layer's input comes from the model pruned so
far, while its target is the *original* model's output, so later layers also correct the error left by
earlier ones (He et al.'s choice; ThiNet fine-tunes between layers instead, which a pruning pass without
training cannot). Removed channels are zeroed in the consumer (equal to removing them), so the channel
surgery that follows only has to cut them out.

Conventions: everything runs on the CPU in eval mode (BN uses running statistics) on copies of the model;
the consumer's bias (only Linear heads have one) is subtracted from the target, never refitted.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from prune_nas.core.errors import UserError
from prune_nas.methods._base import Method, Param, PruneResult, check_ratio, kept_width


@dataclass(frozen=True)
class Link:
    group: str  # width group whose channels are selected (the producer's output channels)
    consumer: str  # module path of the one layer that reads them
    window: int  # inputs of the consumer per channel: k*k for a conv, 1 or 49 for a Linear


def links(genome) -> list[Link]:
    """Width groups a reconstruction method may prune, each with its single consumer, in layout order.

    >>> from prune_nas.core.genome import base_genome
    >>> [(l.group, l.consumer) for l in links(base_genome("resnet20"))][:2]
    [('stage1.block0.conv1', 'stage1.block0.conv2'), ('stage1.block1.conv1', 'stage1.block1.conv2')]
    """
    from prune_nas.methods.surgery import consumers

    groups, out = genome.groups, []
    for g in groups.names:
        if groups.kind(g) != "conv" or len(groups.members[g]) != 1:
            continue
        readers = consumers(genome, g)
        if len(readers) == 1 and readers[0].in_slots == (g,):
            op = readers[0]
            window = op.k * op.k if op.kind == "conv" else op.cin // genome.widths[g]
            out.append(Link(g, op.name, window))
    return out


# ---- targets -----------------------------------------------------------------------------------------------
def target_widths(method: str, genome, ratio: float | None, config: str | None,
                  aliases: dict[str, str]) -> tuple[dict[str, int], list[str]]:
    """Kept width per prunable group: a uniform ``ratio`` (fraction of channels removed, kept width
    ``int(w * (1 - ratio))``, never below 1) or a named ``config`` from the genome library (its widths as
    fractions of the base model's, so a narrowed model, e.g. ``--width 0.25``, is pruned in proportion)."""
    notes: list[str] = []
    prunable = [link.group for link in links(genome)]
    if not prunable:
        raise UserError(f"{method} finds no layer to prune in {genome.model}: no channel group there is read "
                        "by a single layer")
    if config is not None:
        if ratio is not None:
            raise UserError(f"{method}: give either a ratio or a config, not both")
        return _config_widths(method, genome, config, aliases, prunable, notes), notes
    ratio = 0.5 if ratio is None else float(ratio)
    check_ratio(ratio)
    return {g: kept_width(g, genome.widths[g], ratio, notes) for g in prunable}, notes


def _config_widths(method, genome, config, aliases, prunable, notes: list[str]) -> dict[str, int]:
    from prune_nas.core.library import NAMED, named_genome

    name = aliases.get(config.lower(), config)
    found = [n for n in NAMED if n.name == name]
    if not found:
        known = ", ".join(sorted(set(aliases) | set(aliases.values())))
        raise UserError(f"{method}: unknown config {config!r}; known: {known}")
    named = named_genome(found[0])
    if named.model != genome.model or tuple(named.blocks or ()) != tuple(genome.blocks or ()):
        raise UserError(f"{method}: config {name!r} is for {named.model}, not {genome.model}")
    base = genome.groups.base_widths()
    keep = {}
    for g, w in named.widths.items():
        if w >= base[g]:
            continue
        if g not in prunable:
            raise UserError(f"{method}: config {name!r} narrows {g}, which {method} cannot prune")
        have = genome.widths[g]
        k = int(round(have * w / base[g]))
        if k < 1:
            k = 1
            notes.append(f"{g}: kept 1 of {have} channels (config {name!r} at this width would empty it)")
        keep[g] = min(have, k)
    return keep


# ---- activations -------------------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has run."""


@torch.no_grad()
def layer_io(model: nn.Module, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and output of module ``name`` on batch ``x``; the layers after it are not run."""
    store: dict[str, torch.Tensor] = {}

    def hook(_module, inputs, output):
        store["in"], store["out"] = inputs[0].detach().clone(), output.detach().clone()
        raise _Stop

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "in" not in store:
        raise RuntimeError(f"layer {name} did not run in the forward pass")
    return store["in"], store["out"]


def weight_view(layer: nn.Module, window: int) -> torch.Tensor:
    """The consumer's weight as (outputs, input channels, window)."""
    w = layer.weight.detach()
    if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or layer.dilation != (1, 1)):
        raise NotImplementedError("grouped or dilated consumers")
    return w.reshape(w.shape[0], -1, window)


def _windows(layer: nn.Module, x: torch.Tensor, n: np.ndarray, pos: np.ndarray, wo: int) -> torch.Tensor:
    """Input windows (len(n), channels, window) of ``layer``, images ``n``, flat output positions ``pos``.
    ``x`` is (N, C, H, W) for a conv and (N, C, window) for a Linear."""
    n = torch.from_numpy(n)
    if isinstance(layer, nn.Linear):
        return x[n]
    k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
    xp = F.pad(x, (p, p, p, p))
    i, j = torch.from_numpy(pos // wo) * s, torch.from_numpy(pos % wo) * s
    off = torch.arange(k)
    rows = (i[:, None] + off[None, :])[:, None, :, None]  # (m, 1, k, 1)
    cols = (j[:, None] + off[None, :])[:, None, None, :]  # (m, 1, 1, k)
    chans = torch.arange(x.shape[1])[None, :, None, None]
    return xp[n[:, None, None, None], chans, rows, cols].flatten(2)


@dataclass
class LayerSample:
    """Sampled contributions and targets of one consumer layer (float64)."""

    Z: np.ndarray  # (rows, C): contribution of each input channel at a sampled (image, position, output)
    y: np.ndarray  # (rows,): target output at that row (bias removed)
    patches: np.ndarray  # (positions, C, window): input windows at sampled (image, position)
    Y: np.ndarray  # (positions, outputs): target outputs there (bias removed)
    W: np.ndarray  # (outputs, C, window): the consumer's current weight

    @property
    def channels(self) -> int:
        return self.Z.shape[1]

    def error(self, W: np.ndarray) -> float:
        """Relative squared error of the consumer's output with weights ``W`` on the sampled positions."""
        pred = self.patches.reshape(len(self.patches), -1) @ W.reshape(len(W), -1).T
        return float(((self.Y - pred) ** 2).sum() / max((self.Y ** 2).sum(), 1e-30))


def sample_layer(layer: nn.Module, x: torch.Tensor, target: torch.Tensor, window: int, *, samples: int,
                 positions: int, rng: np.random.Generator) -> LayerSample:
    """Sample ``layer`` given its input ``x`` and the output it should produce (``target``, shaped like its
    output): ``samples`` random (image, position, output) rows and up to ``positions`` (image, position) pairs
    (all of them when fewer exist)."""
    if isinstance(layer, nn.Linear):  # a flattened c x h x w map is channel-major
        x = x.reshape(x.shape[0], -1, window)
    W = weight_view(layer, window)
    if layer.bias is not None:
        target = target - layer.bias.detach().view(1, -1, *([1] * (target.dim() - 2)))
    n_img, n_out = target.shape[:2]
    wo = target.shape[-1] if target.dim() == 4 else 1
    flat = target.reshape(n_img, n_out, -1)
    total = n_img * flat.shape[2]

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.sort(rng.choice(total, size=m, replace=m > total))
        return idx // flat.shape[2], idx % flat.shape[2]

    n, pos = draw(samples)
    o = torch.from_numpy(rng.integers(0, n_out, size=samples))
    Z = torch.einsum("mcr,mcr->mc", _windows(layer, x, n, pos, wo), W[o])
    y = flat[torch.from_numpy(n), o, torch.from_numpy(pos)]
    n2, pos2 = draw(min(positions, total))
    P = _windows(layer, x, n2, pos2, wo)
    Y = flat[torch.from_numpy(n2), :, torch.from_numpy(pos2)]
    return LayerSample(*(t.double().numpy() for t in (Z, y, P, Y, W)))


def input_batch(data: Any, images: int, seed: int) -> torch.Tensor:
    """A float batch of up to ``images`` inputs from a tensor or a ``prune_nas.training.data.Dataset`` (its
    training split, without augmentation)."""
    if data is None:
        raise UserError("this method needs data to sample activations from (a dataset or a batch of inputs)")
    if isinstance(data, torch.Tensor):
        return data[:images].detach().float().cpu()
    gen = torch.Generator().manual_seed(seed)
    x, _ = next(iter(data.train_batches(images, gen, "cpu", crop_padding=0, flip=False)))
    return x.float()


# ---- least squares -----------------------------------------------------------------------------------------
def ridge_lstsq(A: np.ndarray, B: np.ndarray, x0: np.ndarray, ridge: float) -> np.ndarray:
    """argmin_x ||A x - B||^2 + mu ||x - x0||^2 with mu = ridge * mean squared column norm of A, by
    ``np.linalg.lstsq`` on the stacked system. The pull towards ``x0`` (the weights before the refit) only
    matters when there are fewer samples than unknowns."""
    mu = ridge * float((A ** 2).sum(0).mean()) if A.size else 0.0
    R = B - A @ x0
    if mu > 0:
        A = np.vstack([A, np.sqrt(mu) * np.eye(A.shape[1])])
        R = np.concatenate([R, np.zeros((A.shape[1],) + R.shape[1:])])
    return x0 + np.linalg.lstsq(A, R, rcond=None)[0]


# ---- the pass ----------------------------------------------------------------------------------------------
Selector = Callable[[LayerSample, int], tuple[np.ndarray, np.ndarray]]
"""(sample, channels to keep) -> (kept channel indices, new consumer weight (outputs, C, window), zero on the
removed channels)."""


def prune_sequential(genome, model: nn.Module, x: torch.Tensor, keep: dict[str, int], select: Selector, *,
                     samples: int, positions: Callable[[int, int], int], seed: int
                     ) -> tuple[dict[str, list[int]], nn.Module, dict[str, float]]:
    """Select channels layer by layer. Returns kept indices per pruned group, a CPU copy of the model whose
    consumers carry the refitted weights (removed channels zeroed), and each consumer's relative
    reconstruction error on its sampled positions after the refit. ``positions(kept, window)`` sizes the
    refit sample. ``model`` itself is not changed."""
    rng = np.random.default_rng(seed)
    original = copy.deepcopy(model).cpu().eval()
    work = copy.deepcopy(original)
    kept_map: dict[str, list[int]] = {}
    errors: dict[str, float] = {}
    for link in links(genome):
        k = keep.get(link.group)
        if k is None or k >= genome.widths[link.group]:
            continue
        x_in, _ = layer_io(work, link.consumer, x)
        _, y_target = layer_io(original, link.consumer, x)
        layer = work.get_submodule(link.consumer)
        sample = sample_layer(layer, x_in, y_target, link.window, samples=samples,
                              positions=positions(k, link.window), rng=rng)
        kept, W = select(sample, k)
        kept_map[link.group] = sorted(int(c) for c in kept)
        errors[link.group] = sample.error(W)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(W).reshape(layer.weight.shape).to(layer.weight.dtype))
    return kept_map, work, errors


# ---- the methods' shared frame -----------------------------------------------------------------------------
COMMON_PARAMS = (
    Param("ratio", None, "fraction of channels removed from every prunable layer (0.5 when no config)"),
    Param("samples", 1000, "sampled (image, position, output channel) rows per layer for the selection"),
    Param("images", 64, "input images (training split, no augmentation) the activations are sampled from"),
    Param("ridge", 1e-3, "pull of the least-squares refit towards the weights before it (relative)"),
    Param("seed", 0, "sampling seed"),
)


class ReconstructionMethod(Method):
    """ThiNet and regression: predefined widths, one layer at a time, selection + refit per layer."""

    target = "predefined"
    families = ("vgg", "resnet", "preresnet")
    needs_training = True
    configs: dict[str, str] = {}  # alias -> library name

    def check(self, genome, ratio=None, config=None, **kwargs) -> None:
        super().check(genome)
        self.targets(genome, ratio, config)

    def targets(self, genome, ratio: float | None, config: str | None) -> tuple[dict[str, int], list[str]]:
        """Kept width per group this method prunes (``target_widths``), and notes."""
        return target_widths(self.name, genome, ratio, config, self.configs)

    def selector(self, **params) -> Selector:
        raise NotImplementedError

    def protocol(self, dataset: str, model: str, **overrides):
        """The reference code trains its BatchNorm-free ImageNet VGG-16s at lr 0.01 (``--lr 0.01`` in its
        ThiNet and regression-pruning READMEs); everything else as the paper's protocol."""
        from prune_nas.core.arch import get_spec

        spec = get_spec(model)
        if dataset == "imagenet" and spec.family == "vgg" and not spec.config.get("bn", True):
            overrides = {"lr": 0.01, **overrides}
        return super().protocol(dataset, model, **overrides)

    def refit_positions(self, samples: int, **params) -> Callable[[int, int], int]:
        """(kept channels, window) -> how many (image, position) pairs the refit of a layer samples."""
        return lambda k, window: samples

    def prune(self, genome, model, *, data=None, ratio=None, config=None, samples=1000, images=64, seed=0,
              **params) -> PruneResult:
        super().check(genome)
        keep, notes = self.targets(genome, ratio, config)
        if model is None:
            raise ValueError(f"{self.name} prunes a trained model")
        x = input_batch(data, images, seed)
        own = {p.name for p in self.params}
        params = {k: v for k, v in params.items() if k in own}
        positions = self.refit_positions(samples, **params)
        kept, work, errors = prune_sequential(genome, model, x, keep, self.selector(**params),
                                              samples=samples, positions=positions, seed=seed)
        return finish(self, genome, work, kept, errors, notes, ratio=ratio, config=config, samples=samples,
                      images=images, seed=seed, **params)


def finish(method, genome, work: nn.Module, kept: dict[str, list[int]], errors: dict[str, float],
           notes: list[str], **params) -> PruneResult:
    """Cut the removed channels out (channel surgery) and record how the genome was found."""
    from prune_nas.methods.surgery import shrink

    small, state = shrink(genome, work, kept)
    if errors:
        worst = max(errors, key=errors.get)
        notes = notes + [f"{len(errors)} layers pruned; relative reconstruction error of their consumers on "
                         f"the sampled positions: mean {np.mean(list(errors.values())):.3g}, worst "
                         f"{errors[worst]:.3g} ({worst})"]
    provenance = {**small.provenance, "method": method.name,
                  "params": {k: v for k, v in params.items() if v is not None}}
    name = f"{genome.name or genome.model}-{method.name}"
    if params.get("config"):
        name += f"-{params['config']}"
    small = small.replace(name=name, provenance=provenance)
    return PruneResult(small, state, notes=notes)
