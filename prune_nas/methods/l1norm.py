"""L1-norm filter pruning (Li, Kadav, Durdanovic, Samet & Graf, ICLR 2017).

Each pruned layer keeps its filters with the largest sum of absolute weights, ranked on the trained model's
weights of that layer alone (Li et al.'s "independent" strategy). Kept widths are predefined:

* ``config`` ``A`` / ``B``: the paper's named configs. VGG-16-A keeps the widths of
  ``prune_nas.core.library.L1_VGG16_A`` (as fractions of the base widths, so a narrowed ``--width`` model is
  pruned in proportion); ResNet configs are ``prune_nas.core.library.L1_RESNET_CONFIGS`` (skip list +
  per-stage ratios).
* ``ratio`` (fraction removed) for every prunable layer, except the conv ids in ``skip``: a kept width is
  ``int(w * (1 - ratio))``, at least 1 (reported in ``notes`` when the floor applies).

Conv ids count the main-path convs in order starting at 1 with the first conv (VGG: conv1 = 1; ResNet: the
stem is 1, then each block's convs in order, shortcut projections not counted, so a basic block's first conv
has an even id as in Li et al.). Only the inner convs of residual blocks are pruned (the residual width
stays): ``conv1`` of a basic block, ``conv1`` and ``conv2`` of a bottleneck.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prune_nas.core.errors import UserError
from prune_nas.methods._base import Method, Param, PruneResult, check_ratio, kept_width, register
from prune_nas.methods.surgery import keep_largest, producers, shrink, state_of


def conv_ids(genome) -> dict[str, int]:
    """Conv layer id (Li et al.'s numbering, see the module doc) -> module path, for the main-path convs."""
    from prune_nas.core.geometry import ops_of

    ids, i = {}, 0
    for op in ops_of(genome):
        if op.kind == "conv" and "shortcut" not in op.name:
            i += 1
            ids[i] = op.name
    return ids


def prunable_groups(genome) -> list[str]:
    """Groups L1-norm may narrow: every VGG conv; the inner convs of residual blocks."""
    groups = genome.groups
    if genome.family == "vgg":
        return list(groups.names)
    return [g for g in groups.names if groups.kind(g) == "conv" and ".block" in g]


def config_names(genome) -> list[str]:
    from prune_nas.core.library import L1_RESNET_CONFIGS

    if genome.family == "vgg":
        return ["A"] if genome.spec.config.get("depth") == 16 and genome.spec.input_size == 32 else []
    return sorted(c for (m, c) in L1_RESNET_CONFIGS if m == genome.model)


def target_widths(genome, ratio: float | None = None, config: str | None = None,
                  skip: Sequence[int] = ()) -> tuple[dict[str, int], list[str]]:
    """Kept width per pruned group, and notes (layers floored at one channel)."""
    from prune_nas.core.library import L1_RESNET_CONFIGS, L1_VGG16_A, vgg_widths

    notes: list[str] = []
    prunable = prunable_groups(genome)
    base = genome.groups.base_widths()
    if config is not None:
        if ratio is not None or skip:
            raise UserError("l1-norm: give a config, or a ratio (with an optional skip list), not both")
        config = config.upper()
        if config not in config_names(genome):
            have = ", ".join(config_names(genome)) or "none"
            raise UserError(f"l1-norm has no config {config!r} for {genome.model} (configs there: {have})")
        if genome.family == "vgg":
            named = vgg_widths(L1_VGG16_A)
            return {g: max(1, round(genome.widths[g] * named[g] / base[g])) for g in prunable
                    if named[g] < base[g]}, notes
        skip, ratios = L1_RESNET_CONFIGS[(genome.model, config)]
    else:
        ratio = 0.5 if ratio is None else ratio
        check_ratio(ratio)
        ratios = None
    ids = conv_ids(genome)
    bad = sorted(set(skip) - set(ids))
    if bad:
        raise UserError(f"l1-norm: skip ids {bad} are not conv ids of {genome.model} (1..{len(ids)})")
    skipped = {ids[i] for i in skip}
    out = {}
    for g in prunable:
        (op,) = [p for p in producers(genome, g)]
        if op.name in skipped:
            continue
        r = ratios[genome.groups.stage(g) - 1] if ratios is not None else ratio
        if r <= 0:
            continue
        out[g] = kept_width(g, genome.widths[g], r, notes)
    return out, notes


def filter_l1(genome, model, group: str) -> np.ndarray:
    """Sum of absolute weights of each output filter of the group's conv."""
    state = state_of(model)
    total = None
    for op in producers(genome, group):
        w = state[f"{op.name}.weight"].abs().double()
        s = w.reshape(w.shape[0], -1).sum(1).numpy()
        total = s if total is None else total + s
    return total


@register
class L1Norm(Method):
    name = "l1-norm"
    summary = ("per layer, keep the filters with the largest sum of absolute weights; widths fixed by the "
               "user (ratio + skip list, or the paper's configs A/B); residual blocks prune only their "
               "inner convs")
    citation = "Li, Kadav, Durdanovic, Samet & Graf, Pruning Filters for Efficient ConvNets, ICLR 2017"
    target = "predefined"
    families = ("vgg", "resnet")
    params = (
        Param("ratio", None, "fraction of filters removed from every pruned layer (0.5 when no config)"),
        Param("config", None,
              "the paper's named config instead of a ratio: A (VGG-16, ResNets) or B (ResNets)"),
        Param("skip", (), "conv ids left unpruned with --ratio (ids count convs from 1; ResNet stem = 1)"),
    )

    def check(self, genome, ratio=None, config=None, skip=(), **kwargs) -> None:
        super().check(genome)
        target_widths(genome, ratio, config, tuple(skip or ()))

    def prune(self, genome, model, *, ratio=None, config=None, skip=(), **_) -> PruneResult:
        super().check(genome)
        if model is None:
            raise ValueError("l1-norm ranks the filters of a trained model")
        widths, notes = target_widths(genome, ratio, config, tuple(skip or ()))
        state = state_of(model)
        keep = {g: keep_largest(filter_l1(genome, state, g), k) for g, k in widths.items()}
        small, new_state = shrink(genome, state, keep)
        params = {k: v for k, v in (("ratio", ratio), ("config", config.upper() if config else None),
                                    ("skip", sorted(skip) if skip else None)) if v is not None}
        provenance = {**small.provenance, "method": self.name, "params": params}
        name = f"{genome.name or genome.model}-{self.name}" + (f"-{config.upper()}" if config else "")
        small = small.replace(name=name, provenance=provenance)
        return PruneResult(small, new_state, notes=notes)
