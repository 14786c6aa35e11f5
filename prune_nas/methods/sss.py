"""Sparse Structure Selection (Huang & Wang, ECCV 2018): learn which residual blocks to keep.

Every residual block gets a learnable scale ``lambda`` (initialised to 1) multiplying its residual branch's
output. Training adds a sparsity penalty ``gamma * |lambda|_1``, minimised by proximal gradient steps on the
scales, ``lambda <- soft_threshold(lambda - lr * grad, lr * gamma)`` with ``soft_threshold(x, t) =
sign(x) * max(|x| - t, 0)``, while SGD trains every other weight (the paper's accelerated proximal gradient,
without the acceleration), so unneeded blocks reach zero. Blocks with ``|lambda| <= threshold`` are removed;
the result is a genome whose ``blocks`` lists the kept blocks per stage. Families: post-activation ResNets
(CIFAR and ImageNet, basic and bottleneck) and pre-activation ResNets.

Training hooks for the one training loop (``prune_nas.training.loop.train_model``):

>>> from prune_nas import base_genome, build
>>> model = build(base_genome("resnet20", width_mult=0.25))
>>> callbacks = training_callbacks(model, penalty=1e-2, lr=0.1)  # attaches the scales, before the optimizer
>>> len(block_scales(model))
9

Where the scale lives: a parameter ``block_scale`` on the branch's last layer (``bn2`` of a basic block,
``bn3`` of a bottleneck, ``conv3`` of a pre-activation bottleneck) with a forward hook multiplying that
layer's output, so the model's own code is untouched and a copy of the model keeps working.

The pruned architecture (post-activation ResNets), as the reference code: when a stage's first block is
removed, the stage keeps that block's shortcut (``stage{s}.shortcut``: the projection conv + BN, or pooling
and zero-padding), which does the stage's down-sampling, and its surviving blocks stay identity blocks at the
stage's resolution (``Genome.shortcut_entries`` lists such stages when blocks survive; a stage with no block
left always opens with its shortcut). Pre-activation ResNets instead let the first kept block do the
down-sampling.

Inherited weights (for the fine-tuning baseline): each kept block's weights are copied with its scale folded
into the branch's last layer (a BN's weight and bias, or the pre-activation block's last conv), so a kept
block computes what it computed with its scale; a kept shortcut entry is block 0's shortcut. For a
post-activation ResNet every kept layer thus reads what it read before. For a pre-activation ResNet, when the
first kept block was not block 0 it now reads the previous stage's output, so its first layer (the input
selection + bn1 + conv1) is freshly initialised, and a note says so.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from prune_nas.core.errors import UserError
from prune_nas.methods._base import Method, Param, PruneResult, register

SCALE = "block_scale"
# A scale is driven to zero when its loss gradient stays below the penalty, so gamma is on the scale of the
# per-batch cross-entropy gradients; sweep it (the paper gets ResNet-41/32/26 at several gammas).
# On the digits demo (ResNet-20 at a quarter width, 20 epochs) 0.05 removes nothing, 0.2 drives two blocks to
# ~0.001 and 0.5 removes every block. Proximal SGD leaves near-zero scales flickering around 0 once the lr is
# small, hence a small threshold rather than exactly 0.
DEFAULT_PENALTY = 0.2
DEFAULT_THRESHOLD = 0.01
_BLOCK = re.compile(r"^(stage\d+)\.block(\d+)\.(.+)$")


# ---- scales ------------------------------------------------------------------------------------------------
def _branch_end(module: nn.Module) -> nn.Module | None:
    """The last layer of a residual block's branch, or None when ``module`` is not a residual block."""
    from prune_nas.core.arch.preresnet import _PreBottleneck
    from prune_nas.core.arch.resnet import _Basic, _Bottleneck

    if isinstance(module, _Basic):
        return module.bn2
    if isinstance(module, _Bottleneck):
        return module.bn3
    if isinstance(module, _PreBottleneck):
        return module.conv3
    return None


def _scale_hook(module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
    return output * getattr(module, SCALE)


def _ends(model: nn.Module) -> dict[str, nn.Module]:
    """Residual block path ("stage2.block0") -> its branch's last layer, in model order."""
    return {name: end for name, m in model.named_modules() if (end := _branch_end(m)) is not None}


def attach_scales(model: nn.Module, init: float = 1.0) -> dict[str, nn.Parameter]:
    """Give every residual block of ``model`` a learnable scale on its branch (idempotent). Call it before
    the optimizer is made (``train_model`` makes it from ``model.parameters()``)."""
    ends = _ends(model)
    if not ends:
        raise UserError("sparse structure selection needs residual blocks; this model has none")
    out = {}
    for name, end in ends.items():
        if not hasattr(end, SCALE):
            ref = end.weight
            end.register_parameter(SCALE, nn.Parameter(torch.full((), float(init), device=ref.device,
                                                                  dtype=ref.dtype)))
            end.register_forward_hook(_scale_hook)
        out[name] = getattr(end, SCALE)
    return out


def scale_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """The attached scales (empty when none are attached)."""
    return {name: getattr(end, SCALE) for name, end in _ends(model).items() if hasattr(end, SCALE)}


def block_scales(model: nn.Module) -> dict[str, float]:
    """Current value of every attached block scale."""
    return {name: float(p.detach()) for name, p in scale_params(model).items()}


def detach_scales(model: nn.Module, fold: bool = True) -> dict[str, float]:
    """Remove the scales and their hooks; with ``fold`` multiply each into its layer first, so the model
    computes the same function. Returns the scales removed."""
    values = {}
    for name, end in _ends(model).items():
        if not hasattr(end, SCALE):
            continue
        s = getattr(end, SCALE).detach()
        values[name] = float(s)
        if fold:
            _fold(end, s)
        del end._parameters[SCALE]
        for key, hook in list(end._forward_hooks.items()):
            if hook is _scale_hook:
                del end._forward_hooks[key]
    return values


@torch.no_grad()
def _fold(end: nn.Module, s) -> None:
    end.weight.mul_(s)
    if isinstance(end, nn.BatchNorm2d):
        end.bias.mul_(s)


def soft_threshold(values: torch.Tensor, amount: float) -> torch.Tensor:
    """The proximal step of ``amount * |x|_1``: sign(x) * max(|x| - amount, 0).

    >>> soft_threshold(torch.tensor([0.5, -0.05, 0.02]), 0.1).tolist()
    [0.4000000059604645, -0.0, 0.0]
    """
    return values.sign() * (values.abs() - amount).clamp_min(0)


class ProximalScales:
    """Training callback: proximal gradient steps on the block scales, taken by this callback, not by SGD.

    ``after_backward`` takes each scale's gradient and hides it from the optimizer (``grad = None``: SGD then
    skips the scale, so neither momentum nor weight decay touch it); ``after_step`` applies
    ``lambda <- soft_threshold(lambda - lr * grad, lr * penalty)``. Gradient and penalty thus act at the same
    scale; with SGD's momentum on the gradient and the threshold outside it, the gradient would count about
    ten times more than the penalty and scales would rarely reach zero.

    The learning rate follows ``protocol.lr_at(epoch)`` (the epoch is tracked through ``on_epoch_end``), or is
    the fixed ``lr``. ``history`` records the number of non-zero scales at the end of each epoch.
    """

    def __init__(self, penalty: float = DEFAULT_PENALTY, protocol=None, lr: float | None = None):
        if penalty < 0:
            raise UserError(f"sss penalty must be >= 0, got {penalty}")
        if protocol is None and lr is None:
            raise UserError("sss needs the training protocol (or a fixed lr) to scale its proximal step")
        self.penalty, self.protocol, self.lr = float(penalty), protocol, lr
        self.epoch = 0
        self.history: list[int] = []
        self._params: tuple[int, list[nn.Parameter]] | None = None
        self._grads: list[torch.Tensor | None] = []

    def current_lr(self) -> float:
        return float(self.lr) if self.lr is not None else float(self.protocol.lr_at(self.epoch))

    def _scales(self, model: nn.Module) -> list[nn.Parameter]:
        if self._params is None or self._params[0] != id(model):
            self._params = (id(model), list(scale_params(model).values()))
        return self._params[1]

    def after_backward(self, model: nn.Module) -> None:
        self._grads = []
        for p in self._scales(model):
            self._grads.append(p.grad)
            p.grad = None

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        lr = self.current_lr()
        scales = self._scales(model)
        grads = self._grads if len(self._grads) == len(scales) else [None] * len(scales)
        for p, g in zip(scales, grads, strict=True):
            z = p - lr * g if g is not None else p
            p.copy_(soft_threshold(z, lr * self.penalty))
        self._grads = []

    def on_epoch_end(self, model: nn.Module, epoch: int, metrics: dict) -> None:
        self.epoch = epoch + 1
        self.history.append(sum(int(p.detach() != 0) for p in self._scales(model)))


def training_callbacks(model: nn.Module, *, penalty: float = DEFAULT_PENALTY, protocol=None,
                       lr: float | None = None, **_) -> list:
    """Attach the block scales to ``model`` and return the callbacks ``train_model`` needs."""
    attach_scales(model)
    return [ProximalScales(penalty, protocol, lr)]


# ---- pruning -----------------------------------------------------------------------------------------------
def kept_blocks(genome, scales: dict[str, float],
                threshold: float = DEFAULT_THRESHOLD) -> tuple[list[list[int]], list[str]]:
    """Per stage, the original indices of the blocks whose |scale| exceeds ``threshold``. A model is never
    emptied: if no block survives, the one with the largest |scale| stays (and a note says so)."""
    expected = [f"stage{s}.block{b}" for s, n in enumerate(genome.blocks, start=1) for b in range(n)]
    missing = [b for b in expected if b not in scales]
    if missing or len(scales) != len(expected):
        raise UserError(f"sss: scales do not match {genome.model} at blocks {list(genome.blocks)} "
                        f"(missing {missing[:3]}, {len(scales)} given for {len(expected)} blocks)")
    keep = [[b for b in range(n) if abs(scales[f"stage{s}.block{b}"]) > threshold]
            for s, n in enumerate(genome.blocks, start=1)]
    notes = []
    if not any(keep):
        best = max(expected, key=lambda b: abs(scales[b]))
        s, b = (int(v) for v in re.findall(r"\d+", best))
        keep[s - 1] = [b]
        notes.append(f"every block scale is <= {threshold:g}; kept {best} (largest |scale| "
                     f"{abs(scales[best]):.3g}) so the model is not empty")
    return keep, notes


def _entry_removed(genome, s: int, keep: list[list[int]]) -> bool:
    """Whether stage ``s`` of the pruned post-activation ResNet opens with its first block's shortcut alone
    while later blocks survive (see the module doc)."""
    from prune_nas.core.arch import get_family

    k = keep[s - 1]
    return (genome.family == "resnet" and bool(k) and k[0] != 0
            and not get_family("resnet")._identity_entry(genome.spec, s))


CONFIGS = {"resnet41": "sss-resnet41", "resnet32": "sss-resnet32", "resnet26": "sss-resnet26"}


def config_blocks(genome, scales: dict[str, float], config: str) -> tuple[list[list[int]], list[str]]:
    """Per stage, the blocks to keep to reach a named architecture (``CONFIGS``: the paper's ResNet-41 / 32 /
    26 of ResNet-50): as many blocks as it keeps, its first block exactly when it keeps that, the others by
    largest |scale| (ties to the lower index)."""
    from prune_nas.core.library import get

    if config not in CONFIGS:
        raise UserError(f"sss has no config {config!r}; configs: {', '.join(CONFIGS)}")
    target = get(CONFIGS[config])
    if genome.model != target.model or tuple(genome.blocks) != tuple(target.spec.default_blocks):
        raise UserError(f"sss config {config!r} is for the unpruned {target.model}, not {genome.model} at "
                        f"blocks {list(genome.blocks)}")
    keep = []
    for s, (n, target_n) in enumerate(zip(genome.blocks, target.blocks), start=1):
        first = target_n > 0 and s not in target.shortcut_entries
        others = sorted(range(1, n), key=lambda b: (-abs(scales[f"stage{s}.block{b}"]), b))
        keep.append(sorted(([0] if first else []) + others[:target_n - first]))
    weakest = min((abs(scales[f"stage{s}.block{b}"]) for s, k in enumerate(keep, 1) for b in k), default=0.0)
    note = f"config {config}: kept the blocks of {CONFIGS[config]} (smallest kept |scale| {weakest:.3g})"
    return keep, [note]


def pruned_genome(genome, keep: list[list[int]]) -> tuple[object, list[str]]:
    """The genome with only the kept blocks (renumbered), each keeping its own inner widths."""
    from prune_nas.core.arch import get_family
    from prune_nas.core.graph import width_groups

    if genome.shortcut_entries:
        raise UserError("sss: prune the base model's blocks (this genome already has shortcut entries)")
    blocks = tuple(len(k) for k in keep)
    entries = tuple(s for s in range(1, len(keep) + 1) if _entry_removed(genome, s, keep))
    groups = width_groups(genome.model, blocks)
    widths = {}
    for g in groups.names:
        m = _BLOCK.match(g)
        if m:
            stage, new_b, rest = m.group(1), int(m.group(2)), m.group(3)
            old_b = keep[int(stage[5:]) - 1][new_b]
            widths[g] = genome.widths[f"{stage}.block{old_b}.{rest}"]
        else:
            widths[g] = genome.widths[g]
    notes = []
    limits = get_family(genome.family).select_limits(genome.spec, blocks, groups.expand(widths))
    for slot, limit in limits.items():
        g = groups.slot_group[slot]
        if widths[g] > limit:
            notes.append(f"{g}: reads {limit} channels (it read {widths[g]} as a later block)")
            widths[g] = limit
    return genome.replace(blocks=blocks, shortcut_entries=entries, widths=widths), notes


def inherited_state(genome, small, model: nn.Module, keep: list[list[int]]) -> tuple[dict, list[str]]:
    """State dict for ``build(small)`` from the trained ``model`` (scales folded in); see the module doc."""
    import copy

    from prune_nas.core.builder import build

    source = copy.deepcopy(model).cpu()
    detach_scales(source, fold=True)
    old = source.state_dict()
    target = build(small).state_dict()
    family = genome.family
    notes, fresh = [], []
    out = {}
    for key, value in target.items():
        src = _source_key(genome, key, keep, family)
        if src is None:
            fresh.append(key)
            out[key] = value
            continue
        if old[src].shape != value.shape:
            raise RuntimeError(f"sss: {src} {tuple(old[src].shape)} does not fit {key} {tuple(value.shape)}")
        out[key] = old[src].clone()
    for s, k in enumerate(keep, start=1):
        if k and k[0] != 0 and family == "preresnet":
            notes.append(f"stage{s}.block0 (was block{k[0]}) now reads the previous stage's output: "
                         "its first layer is freshly initialised")
    return out, notes


_PRE_FIRST_LAYER = ("select.", "bn1.", "conv1.")


def _source_key(genome, key: str, keep: list[list[int]], family: str) -> str | None:
    """The trained model's key a pruned model's key inherits, or None for a freshly initialised one."""
    parts = key.split(".", 2)
    if not re.fullmatch(r"stage\d+", parts[0]) or len(parts) < 3:
        return key  # stem, head, classifier
    s = int(parts[0][5:])
    old_n = genome.blocks[s - 1]
    first_shortcut = f"stage{s}.block0.shortcut" if old_n else f"stage{s}.shortcut"
    if parts[1] == "shortcut":  # a stage opening with its shortcut alone: the original block 0's shortcut
        return f"{first_shortcut}.{parts[2]}"
    new_b, rest = int(parts[1][5:]), parts[2]
    old_b = keep[s - 1][new_b]
    if rest.startswith("shortcut."):
        return f"{first_shortcut}.{rest[len('shortcut.'):]}"
    # A pre-activation block 0 reads the stem or the previous stage; its later blocks read the stage's stream.
    if new_b == 0 and old_b != 0 and family == "preresnet" and rest.startswith(_PRE_FIRST_LAYER):
        return None
    return f"stage{s}.block{old_b}.{rest}"


@register
class SparseStructureSelection(Method):
    name = "sss"
    summary = ("a learnable scale per residual block pushed to zero by a sparsity penalty; blocks whose "
               "scale collapses are removed")
    citation = "Huang & Wang, Data-Driven Sparse Structure Selection for Deep Neural Networks, ECCV 2018"
    target = "automatic"
    families = ("resnet", "preresnet")
    needs_training = True
    params = (
        Param("penalty", DEFAULT_PENALTY, "sparsity weight gamma on the block scales (during training)"),
        Param("threshold", DEFAULT_THRESHOLD, "blocks with |scale| <= threshold are removed"),
        Param("config", None, "instead of the threshold, keep the blocks of a named architecture: "
                              + ", ".join(CONFIGS) + " (ResNet-50 only)"),
    )
    regularizes_training = True
    training_params = ("penalty",)  # what the trained model depends on (the discover pipeline's cache key)

    def check(self, genome, config=None, **kwargs) -> None:
        if genome.family not in self.families:
            raise UserError(f"method 'sss' (block pruning) does not apply to {genome.family} models "
                            f"({genome.model}); it supports: {', '.join(self.families)}")
        if config is not None:
            names = [f"stage{s}.block{b}" for s, n in enumerate(genome.blocks, start=1) for b in range(n)]
            config_blocks(genome, dict.fromkeys(names, 1.0), config)

    def training_callbacks(self, model: nn.Module, **kwargs) -> list:
        return training_callbacks(model, **kwargs)

    def protocol(self, dataset: str, model: str, **overrides):
        """On ImageNet the reference's schedule: 100 epochs, lr steps every 30 (``Protocol.sss_imagenet``)."""
        from prune_nas.training.protocol import Protocol

        if dataset == "imagenet":
            return Protocol.sss_imagenet(**overrides)
        return super().protocol(dataset, model, **overrides)

    def prune(self, genome, model, *, threshold: float = DEFAULT_THRESHOLD,
              scales: dict[str, float] | None = None, penalty: float | None = None, config: str | None = None,
              **_) -> PruneResult:
        """Remove the blocks whose scale is at most ``threshold``, or, with ``config``, those a named
        architecture removes (the weakest). Scales come from ``model`` (trained with ``training_callbacks``)
        unless given as ``scales`` ({"stage1.block0": value, ...})."""
        self.check(genome, config)
        if threshold < 0:
            raise UserError(f"sss threshold must be >= 0, got {threshold}")
        if scales is None:
            scales = block_scales(model) if model is not None else {}
            if not scales:
                raise UserError("sss: the model carries no block scales; train it with the method's "
                                "callbacks (sss.training_callbacks) first")
        if config is not None:
            expected = {f"stage{s}.block{b}" for s, n in enumerate(genome.blocks, start=1) for b in range(n)}
            if set(scales) != expected:
                raise UserError(f"sss: scales do not match {genome.model} at blocks {list(genome.blocks)}")
            keep, notes = config_blocks(genome, scales, config)
        else:
            keep, notes = kept_blocks(genome, scales, threshold)
        small, more = pruned_genome(genome, keep)
        notes += more
        state = None
        if model is not None:
            state, more = inherited_state(genome, small, model, keep)
            notes += more
        removed = [f"stage{s}.block{b}" for s, n in enumerate(genome.blocks, start=1) for b in range(n)
                   if b not in keep[s - 1]]
        params = {**({"config": config} if config is not None else {"threshold": threshold}),
                  **({"penalty": penalty} if penalty is not None else {})}
        provenance = {**small.provenance, "method": self.name, "params": params, "removed_blocks": removed}
        small = small.replace(name=f"{genome.name or genome.model}-{self.name}", provenance=provenance)
        return PruneResult(small, state, notes=notes)
