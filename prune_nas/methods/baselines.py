"""The paper's baselines: uniform pruning and random channel pruning. Both fix the target widths without
looking at weights, so they need no trained model.

* ``uniform``: every width group keeps the same fraction of its channels, ``max(1, round(w * keep))``
  (residual streams and selections included; selections are clipped to the channels that exist), or, with
  ``sparsity``, every conv layer keeps the same fraction of its weights (density), with an exact random mask
  per layer drawn from ``seed``. ``match_params`` finds the uniform fraction whose params match another
  genome's, the paper's comparison at equal parameter count.
* ``random``: random channels at given widths (a uniform ``ratio``, or the widths of another genome with
  ``like``). Given a trained model (``Random().prune(genome, model)``) it also returns the inherited weights
  of the randomly chosen channels, the random-criterion baseline for fine-tuning; ``discover`` trains
  nothing for it and writes the genome only.

>>> from prune_nas.core.genome import base_genome
>>> uniform_genome(base_genome("vgg16"), 0.5).widths["conv13"]
256
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from prune_nas.core.errors import UserError
from prune_nas.core.genome import Sparsity, fit_selects
from prune_nas.methods._base import Method, Param, PruneResult, check_ratio, register
from prune_nas.methods.surgery import channel_ids, shrink, state_of

if TYPE_CHECKING:
    from prune_nas.core.genome import Genome


def uniform_genome(base: Genome, keep_fraction: float) -> Genome:
    """``base`` with every width group at ``max(1, round(width * keep_fraction))`` (selections clipped to the
    channels that exist). ``keep_fraction`` in (0, 1]."""
    if not 0.0 < keep_fraction <= 1.0:
        raise UserError(f"keep fraction must be in (0, 1], got {keep_fraction}")
    if base.sparsity is not None:
        raise UserError("uniform channel pruning needs a dense genome")
    widths = {g: max(1, round(w * keep_fraction)) for g, w in base.widths.items()}
    return base.replace(widths=fit_selects(base, widths), name=None)


def uniform_sparsity_genome(base: Genome, density: float, seed: int = 0) -> Genome:
    """``base`` with every conv layer at the same ``density`` (fraction of weights kept); masks sampled from
    ``seed`` (see :func:`random_masks`) make it exact."""
    if not 0.0 < density <= 1.0:
        raise UserError(f"density must be in (0, 1], got {density}")
    from prune_nas.core.geometry import conv_ops

    sp = Sparsity(density={n: float(density) for n in conv_ops(base)}, seed=int(seed))
    return base.replace(sparsity=sp, name=None)


def random_masks(genome: Genome, seed: int = 0) -> dict[str, np.ndarray]:
    """Exact masks for a genome's per-layer densities: each conv keeps ``round(density * weights)`` weights
    (at least 1) chosen uniformly at random, one ``numpy`` generator seeded with ``seed`` over the layers in
    layout order."""
    from prune_nas.core.geometry import conv_ops

    rng = np.random.default_rng(seed)
    out = {}
    for name, op in conv_ops(genome).items():
        n = op.weight_count
        d = genome.sparsity.density.get(name, 1.0) if genome.sparsity else 1.0
        k = max(1, round(d * n))
        m = np.zeros(n, dtype=bool)
        m[rng.choice(n, size=k, replace=False)] = True
        out[name] = m.reshape(op.cout, op.cin, op.k, op.k)
    return out


def match_params(base: Genome, target_params: int, iters: int = 50) -> Genome:
    """The uniform genome (:func:`uniform_genome`) whose params are closest to ``target_params``.

    Params grow with the fraction in steps: at each step every group's width moves by at most one channel.
    Bisection (:func:`~prune_nas.core.cost.match_factor`) finds the step where the count crosses the target;
    of the genomes on either side of it (which differ by at most one channel per group) the closer one is
    returned (the smaller on a tie). The fraction starts just above 0, the 1-channel-per-group floor.
    """
    from prune_nas.core.cost import count, match_factor

    def params_at(fraction: float) -> int:
        return count(uniform_genome(base, fraction)).params

    return uniform_genome(base, match_factor(params_at, target_params, 1e-9, 1.0, iters))


def match_cost(make: Callable[[float], Genome], target: int, metric: str, hi: float = 1.0,
               iters: int = 40) -> Genome:
    """The genome ``make(x)``, x in (0, hi], whose ``metric`` (params / flops) is closest to ``target``;
    ``make`` must grow with x (the search is :func:`prune_nas.core.cost.match_factor`)."""
    from prune_nas.core.cost import count, match_factor

    return make(match_factor(lambda x: getattr(count(make(x)), metric), target, 1e-9, hi, iters))


def uniform_matched(base: Genome, pruned: Genome, metric: str) -> Genome:
    """Uniform pruning of ``base`` with the pruned genome's params or FLOPs: one kept fraction for every width
    group (params: :func:`match_params`), or, for a sparse genome, one density for every conv layer (random
    mask, seed 0)."""
    from prune_nas.core.cost import count

    target = getattr(count(pruned), metric)
    if pruned.sparsity is not None:
        g = match_cost(lambda d: uniform_sparsity_genome(base, d, 0), target, metric)
    elif metric == "params":
        g = match_params(base, target)
    else:
        g = match_cost(lambda f: uniform_genome(base, f), target, metric)
    return g.replace(name=f"{base.name}-uniform-{metric}", provenance={"method": "uniform", "matched": metric,
                                                                       "target": target})


def random_matched(base: Genome, pruned: Genome, seed: int, metric: str = "params") -> Genome:
    """A random architecture with the pruned genome's params: per-group kept fractions drawn uniformly from
    [0.1, 1] (numpy generator seeded with ``seed``), all scaled by one factor found by bisection (fractions
    capped at 1). For a sparse genome, random per-layer densities, scaled the same way."""
    from prune_nas.core.cost import count
    from prune_nas.core.geometry import conv_ops

    rng = np.random.default_rng(seed)
    target = getattr(count(pruned), metric)
    if pruned.sparsity is not None:
        convs = list(conv_ops(base))
        f = dict(zip(convs, rng.uniform(0.1, 1.0, len(convs))))

        def make(c):
            return base.replace(sparsity=Sparsity(density={n: float(min(1.0, c * v)) for n, v in f.items()},
                                                  seed=int(seed)))
    else:
        names = base.groups.names
        f = dict(zip(names, rng.uniform(0.1, 1.0, len(names))))

        def make(c):
            widths = {g: max(1, round(base.widths[g] * min(1.0, c * f[g]))) for g in names}
            return base.replace(widths=fit_selects(base, widths))
    g = match_cost(make, target, metric, hi=1.0 / min(f.values()))
    return g.replace(name=f"{base.name}-random-{metric}-{seed}",
                     provenance={"method": "random", "matched": metric, "target": target, "seed": seed})


def random_keep(genome: Genome, widths: dict[str, int], seed: int = 0, model=None) -> dict[str, np.ndarray]:
    """Random kept channels per narrowed group (sorted), one generator over groups in layout order.
    Selections keep random channels among those that their (possibly narrowed) producers still keep."""
    rng = np.random.default_rng(seed)
    groups = genome.groups
    keep: dict[str, np.ndarray] = {}
    for g in groups.names:
        if groups.kind(g) == "select" or widths[g] >= genome.widths[g]:
            continue
        keep[g] = np.sort(rng.choice(genome.widths[g], size=widths[g], replace=False))
    for g in groups.names:
        if groups.kind(g) != "select":
            continue
        (slot,) = groups.members[g]
        ids = channel_ids(genome, model, g) if model is not None else np.arange(genome.widths[g])
        alive = _alive(genome, slot, keep)
        ids = ids[np.isin(ids, alive)]
        if widths[g] < len(ids):  # otherwise shrink keeps every surviving channel
            keep[g] = np.sort(rng.choice(ids, size=widths[g], replace=False))
    return keep


def _alive(genome, slot: str, keep: dict[str, np.ndarray]) -> np.ndarray:
    """Channels of the tensor a selection reads that survive its producers' pruning."""
    groups, sw = genome.groups, genome.slot_widths()
    out, off = [], 0
    for r in groups.slots[slot].reads:
        g = groups.slot_group[r]
        out.append(off + (keep[g] if g in keep else np.arange(sw[r])))
        off += sw[r]
    return np.concatenate(out)


def like_widths(genome: Genome, like) -> dict[str, int]:
    """The widths of genome ``like`` (a file or name), checked to fit ``genome``'s model."""
    from prune_nas.core.library import resolve_genome

    other = resolve_genome(like) if isinstance(like, str) else like
    if other.model != genome.model or tuple(other.blocks or ()) != tuple(genome.blocks or ()):
        raise UserError(f"--like {like}: that genome is a {other.model} (blocks {list(other.blocks or [])}), "
                        f"not a {genome.model} (blocks {list(genome.blocks or [])})")
    if set(other.widths) != set(genome.widths):  # a generic model built with other fixed layers or kwargs
        raise UserError(f"--like {like}: its width groups are not the model's (built with other model_args?)")
    wider = [g for g in genome.groups.names if other.widths[g] > genome.widths[g]]
    if wider:
        raise UserError(f"--like {like}: it is wider than the model in {', '.join(wider[:3])}")
    return dict(other.widths)


def _finish(method, genome, small, params, notes, state=None, masks=None) -> PruneResult:
    provenance = {**genome.provenance, "method": method.name, "params": params}
    small = small.replace(name=f"{genome.name or genome.model}-{method.name}", provenance=provenance)
    return PruneResult(small, state, masks=masks, notes=notes)


class _Baseline(Method):
    """What the baselines share: the rethinking paper's, predefined, every family, no training."""

    citation = (
        "Liu, Sun, Zhou, Huang & Darrell, Rethinking the Value of Network Pruning, ICLR 2019 (baseline)"
    )
    target = "predefined"
    families = ("vgg", "resnet", "preresnet", "densenet")
    needs_training = False


@register
class Uniform(_Baseline):
    name = "uniform"
    summary = "every layer keeps the same fraction of its channels (or, with sparsity, of its weights); " \
              "optionally matched to another genome's params"
    params = (
        Param(
            "ratio", 0.5, "fraction removed from every group (channels), or from every conv (with sparsity)"
        ),
        Param("sparsity", False, "prune weights, not channels: every conv layer gets density 1 - ratio"),
        Param("like", None, "instead of a ratio: match the params of this genome (file or name)"),
    )

    def check(self, genome, ratio=0.5, sparsity=False, like=None, **kwargs) -> None:
        super().check(genome)
        if like is not None and sparsity:
            raise UserError("uniform: --like matches channel widths; it does not combine with --sparsity")
        if like is None:
            check_ratio(0.5 if ratio is None else ratio)

    def prune(self, genome, model=None, *, ratio=0.5, sparsity=False, like=None, seed=0, **_) -> PruneResult:
        self.check(genome, ratio=ratio, sparsity=sparsity, like=like)
        ratio = 0.5 if ratio is None else float(ratio)
        notes: list[str] = []
        if sparsity:
            small = uniform_sparsity_genome(genome, 1.0 - ratio, seed)
            masks = random_masks(small, seed)
            return _finish(
                self, genome, small, {"ratio": ratio, "sparsity": True, "seed": seed},
                [f"every conv layer keeps {1 - ratio:.4g} of its weights (random mask, seed {seed})"],
                masks=masks,
            )
        if like is not None:
            from prune_nas.core.cost import count
            from prune_nas.core.library import resolve_genome

            other = resolve_genome(like) if isinstance(like, str) else like
            target = count(other).params
            small = match_params(genome, target)
            got = count(small).params
            notes.append(f"matched {getattr(other, 'name', None) or like}: {got} params vs {target} "
                         f"({(got - target) / target:+.2%})")
            params = {"like": str(like), "target_params": target}
        else:
            small = uniform_genome(genome, 1.0 - ratio)
            params = {"ratio": ratio}
        floored = [g for g in genome.groups.names if small.widths[g] == 1 < genome.widths[g]]
        if floored:
            notes.append(
                f"{len(floored)} groups kept 1 channel (rounding would empty them): {', '.join(floored[:4])}"
            )
        return _finish(self, genome, small, params, notes)


@register
class Random(_Baseline):
    name = "random"
    summary = "random channels at given widths (a uniform ratio, or the widths of another genome)"
    params = (
        Param("ratio", 0.5, "fraction of channels removed from every group (unless like is given)"),
        Param("like", None, "take the widths of this genome (file or name) instead of a ratio"),
    )

    def check(self, genome, ratio=0.5, like=None, **kwargs) -> None:
        super().check(genome)
        if like is not None:
            like_widths(genome, like)
        else:
            check_ratio(0.5 if ratio is None else ratio)

    def prune(self, genome, model=None, *, ratio=0.5, like=None, seed=0, **_) -> PruneResult:
        self.check(genome, ratio=ratio, like=like)
        if like is not None:
            widths, params = like_widths(genome, like), {"like": str(like), "seed": seed}
        else:
            ratio = 0.5 if ratio is None else float(ratio)
            widths, params = dict(uniform_genome(genome, 1.0 - ratio).widths), {"ratio": ratio, "seed": seed}
        keep = random_keep(genome, widths, seed, model)
        if model is not None:
            small, state = shrink(genome, state_of(model), keep)
        else:
            small, state = genome.replace(widths=fit_selects(genome, widths), name=None), None
        return _finish(self, genome, small, params, [f"random channels (seed {seed})"], state)
