"""Guided and transferred designs: genomes built from a mined pattern (paper Section 5, Figure 5).

**Size.** A size is the fraction of the *unpruned target model's* params (``by="params"``, the default) or
FLOPs (``by="flops"``, MACs as in ``cost.py``) that the genome *keeps*: ``size=0.3`` means 30% of the base
model's parameters. Sizes are in (0, 1].

**Guided Pruning** (``guided_widths``): every pruned group of a stage keeps the stage's mean kept ratio; all
ratios are multiplied by one common factor, found by bisection, so the genome's cost matches the size within
one channel per layer (lowering every scaled width by one gives at most the target; raising each by one gives
at least the target). Kinds of groups the source runs never pruned keep their base width: residual streams
under slimming or L1-norm pruning stay as they are unless the pattern says the runs pruned them too.

**Guided Sparsifying** (``guided_sparse``): dense base widths with exact masks. Each conv layer's density is
the pattern's (per layer for the same model, else its stage's pooled density), times a common factor found the
same way so the kept weights hit the size (by params: exactly; by FLOPs: within one weight per layer). In a
3x3 layer the nine kernel positions keep ``min(1, c * p_pos)`` of their weights, ``p`` being the stage's keep
map and ``c`` the layer's scale to its density; the kept kernels at each position are drawn with a seeded
numpy Generator, so the masks are deterministic for a seed and their per-stage keep maps reproduce the
pattern.

**Transfer** (``stage_map``): target stage ``t`` of ``T`` takes the pattern of source stage ``s`` of ``S``:
the identity when ``S == T`` (VGG-16 -> VGG-19: five pooling stages each; ResNet-56 -> ResNet-110: three
residual stages each); otherwise the source stage at the same relative depth,
``s = floor((t - 0.5) * S / T) + 1`` (the source stage containing the middle of the target stage).

**Names.** ``<model>-<dataset>`` (``vgg16-cifar10``, ``resnet56-digits``, ``vgg16-l1-cifar100``): the dataset
is what follows the last ``-`` and must be one of digits, synthetic, cifar10, cifar100, imagenet; the rest
must be a registered model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from prune_nas.core.cost import count, match_factor
from prune_nas.core.errors import UserError
from prune_nas.core.genome import Genome, MaskRef, Sparsity, base_genome, fit_selects, save_genome, validate
from prune_nas.core.geometry import conv_ops
from prune_nas.core.masks import sample_mask
from prune_nas.core.paths import slug
from prune_nas.design.mining import NUM_CLASSES, Pattern, mine, save_pattern

BY = ("params", "flops")
DISCOVER_RATIO = 0.4  # prune ratio of the runs ``transfer`` discovers when none exist and none is named


# ---- names and stages --------------------------------------------------------------------------------------
def parse_name(name: str) -> tuple[str, str]:
    """``"vgg16-cifar10"`` -> ``("vgg16", "cifar10")``; a UserError names what is wrong."""
    from prune_nas.core.arch import MODELS
    from prune_nas.core.genome import model_spec

    model, sep, dataset = name.rpartition("-")
    if not sep or dataset not in NUM_CLASSES:
        raise UserError(f"{name!r} is not <model>-<dataset>: the part after the last '-' must be one of "
                        f"{', '.join(NUM_CLASSES)} (e.g. vgg16-cifar10)")
    if model not in MODELS:
        model_spec(model)  # a generic reference (torchvision:resnet18), or raises with suggestions
    return model, dataset


def n_stages(model: str | Genome, blocks: Sequence[int] | None = None) -> int:
    """The resolution stages of a model (its base genome) or of a genome (a generic model's depend on its
    input size, so transfer counts the target genome's own)."""
    genome = model if isinstance(model, Genome) else \
        base_genome(model, blocks=tuple(blocks) if blocks else None)
    return genome.groups.n_stages


def stage_map(source_stages: int, target_stages: int) -> dict[int, int]:
    """Target stage -> source stage (both 1-based); identity for equal counts, else by relative depth.

    >>> stage_map(5, 5)[3], stage_map(3, 5), stage_map(5, 3)
    (3, {1: 1, 2: 1, 3: 2, 4: 3, 5: 3}, {1: 1, 2: 3, 3: 5})
    """
    if source_stages < 1 or target_stages < 1:
        raise UserError("stage counts must be >= 1")
    if source_stages == target_stages:
        return {t: t for t in range(1, target_stages + 1)}
    return {t: min(source_stages, int((t - 0.5) * source_stages / target_stages) + 1)
            for t in range(1, target_stages + 1)}


def target_base(pattern: Pattern, model: str, dataset: str | None = None,
                width: float | None = None) -> Genome:
    """The unpruned target genome that sizes are measured against. On the source runs' dataset: their input,
    classes and width multiplier (``discover`` prunes narrow models on digits); on another dataset: its
    classes at the model's default input, full width. ``width`` overrides the multiplier."""
    dataset = dataset or pattern.dataset
    if dataset == pattern.dataset:
        kw = {"num_classes": pattern.input["num_classes"], "input_size": pattern.input["size"],
              "in_channels": pattern.input["channels"]}
        width = float(pattern.reference.get("width", 1.0)) if width is None else width
    elif dataset not in NUM_CLASSES:
        raise UserError(f"unknown dataset {dataset!r}; known: {', '.join(NUM_CLASSES)}")
    else:
        kw = {"num_classes": NUM_CLASSES[dataset]}
    width = 1.0 if width is None else float(width)
    if not width > 0:
        raise UserError(f"--width must be > 0, got {width:g}")
    g = base_genome(model, width_mult=width, **kw)
    if width != 1.0:  # named after the dataset too, as discover names its narrow reference models
        g = replace(g, name=f"{model}-x{width:g}-{dataset}")
    return g


def check_sizes(sizes: Sequence[float]) -> list[float]:
    out = []
    for s in sizes:
        if not 0 < s <= 1:
            raise UserError(f"size {s:g} is impossible: sizes are fractions of the base model kept, "
                            "in (0, 1]")
        out.append(float(s))
    if not out:
        raise UserError("no sizes given")
    return out


def _cost(genome: Genome, by: str) -> int:
    if by not in BY:
        raise UserError(f"--by must be one of {', '.join(BY)}, got {by!r}")
    return getattr(count(genome), by)


# ---- guided pruning ----------------------------------------------------------------------------------------
def group_ratios(pattern: Pattern, target: Genome) -> dict[str, float | None]:
    """Per target width group: the kept ratio it takes from the pattern, or None where it keeps its width."""
    groups = target.groups
    smap = stage_map(pattern.n_stages, n_stages(target))
    source_kinds = {x["kind"] for x in pattern.layers}
    out: dict[str, float | None] = {}
    for n in groups.names:
        kind, st = groups.kind(n), pattern.stage(smap[groups.stage(n)])
        if kind in pattern.pruned_kinds:
            # The stage's mean ratio, not each layer's own, even on the same model: that is Guided Pruning.
            out[n] = st["by_kind"].get(kind, st["ratio"])
        elif kind in source_kinds or kind == "stream":
            out[n] = None  # the source method leaves this kind of group alone
        else:  # a kind the source model does not have (another family): the stage's ratio
            out[n] = st["ratio"]
    if all(r is None for r in out.values()):
        raise UserError(f"pattern {pattern.label()} pruned no channels, so it cannot guide pruning; "
                        "use --sparse (Guided Sparsifying) for patterns of weight-pruned genomes")
    return out


def widths_at(target: Genome, ratios: dict[str, float | None], factor: float) -> dict[str, int]:
    """Widths with every ratio scaled by ``factor`` (capped at the target's width, at least one channel)."""
    base = target.widths
    w = {n: base[n] if r is None else max(1, min(base[n], round(base[n] * r * factor)))
         for n, r in ratios.items()}
    return fit_selects(target, w)


def guided_widths(pattern: Pattern, target: Genome, size: float, by: str = "params") -> tuple[Genome, dict]:
    """Guided Pruning of ``target`` (an unpruned genome) to ``size`` of its params/FLOPs (see module doc):
    (genome, {"factor", "achieved"})."""
    (size,) = check_sizes([size])
    ratios = group_ratios(pattern, target)
    goal = size * _cost(target, by)
    hi = max((1 / r for r in ratios.values() if r), default=1.0) + 1.0

    def cost_at(f: float) -> int:
        return _cost(replace(target, widths=widths_at(target, ratios, f)), by)

    smallest = cost_at(0.0)
    if goal < smallest:
        raise UserError(f"size {size:g} is impossible for {target.model}: one channel per pruned layer "
                        f"already keeps {smallest / _cost(target, by):.3f} of its {by}")
    factor = match_factor(cost_at, goal, 0.0, hi, iters=60)
    genome = target.replace(widths=widths_at(target, ratios, factor))
    return genome, {"factor": factor, "achieved": _cost(genome, by) / _cost(target, by)}


# ---- guided sparsifying ------------------------------------------------------------------------------------
def layer_densities(pattern: Pattern, target: Genome) -> dict[str, float]:
    """Per target conv layer, the pattern's density: its own for the same layers, else its stage's."""
    if not pattern.sparse:
        raise UserError(f"pattern {pattern.label()} has no sparsity (mined from dense genomes); use guided "
                        "pruning, or mine genomes of a weight-pruning method")
    convs = conv_ops(target)
    own = {x["name"]: x["mean"] for x in pattern.sparse["layers"]}
    smap = stage_map(pattern.n_stages, max(op.stage for op in convs.values()))
    stage_d = {s["stage"]: s["density"] for s in pattern.sparse["stages"]}
    same = target.model == pattern.model and set(own) == set(convs)
    return {n: own[n] if same else stage_d[smap[op.stage]] for n, op in convs.items()}


def kernel_maps(pattern: Pattern, target: Genome) -> dict[int, np.ndarray]:
    """Per target stage, the 3x3 keep map of its source stage (uniform where the source has none)."""
    stages = sorted({op.stage for op in conv_ops(target).values()})
    smap = stage_map(pattern.n_stages, max(stages))
    out = {}
    for t in stages:
        src = pattern.kernel_stage(smap[t])
        km = src["kernel_keep"] if src and src["kernel_keep"] is not None else None
        out[t] = np.asarray(km, dtype=float) if km is not None \
            else np.full((3, 3), src["density"] if src else 1.0)
    return out


def _kept_counts(ops: dict, dens: dict[str, float], target: Genome, size: float, by: str) -> dict[str, int]:
    total = {n: op.weight_count for n, op in ops.items()}
    unit = {n: 1 if by == "params" else op.hw * op.hw for n, op in ops.items()}
    base_cost = _cost(target, by)
    fixed = base_cost - sum(total[n] * unit[n] for n in ops)  # BN, linear and biases: never masked
    goal = size * base_cost - fixed
    if goal < sum(unit.values()):
        raise UserError(f"size {size:g} is impossible for sparse {target.model}: its unmasked layers alone "
                        f"keep {(fixed + sum(unit.values())) / base_cost:.3f} of its {by}")

    def kept_at(f):
        return {n: max(1, min(total[n], round(total[n] * min(1.0, f * dens[n])))) for n in ops}

    def cost_at(f):
        return sum(k * unit[n] for n, k in kept_at(f).items())

    kept = kept_at(match_factor(cost_at, goal, 0.0, max(1 / d for d in dens.values()) + 1.0, iters=60))
    if by == "params":  # hit the parameter count exactly: one weight more or less in the largest layers
        rest = round(goal) - sum(kept.values())
        for n in sorted(ops, key=lambda n: -total[n]):
            if rest == 0:
                break
            step = 1 if rest > 0 else -1
            if 1 <= kept[n] + step <= total[n]:
                kept[n] += step
                rest -= step
    return kept




def guided_sparse(pattern: Pattern, target: Genome, size: float, seed: int = 0, by: str = "params"
                  ) -> tuple[Genome, dict[str, np.ndarray], dict]:
    """Guided Sparsifying of ``target`` to ``size``: (genome without its mask reference, masks, info).
    ``write_genome`` saves the masks next to the genome and references them."""
    (size,) = check_sizes([size])
    ops = conv_ops(target)
    dens = layer_densities(pattern, target)
    maps = kernel_maps(pattern, target)
    kept = _kept_counts(ops, dens, target, size, by)
    rng = np.random.default_rng(seed)
    masks = {n: sample_mask((op.cout, op.cin, op.k, op.k), kept[n], maps[op.stage] if op.k == 3 else None,
                            rng)
             for n, op in ops.items()}
    # Six significant digits, not decimals: a layer keeping one weight of millions must stay above zero.
    sp = Sparsity(density={n: float(f"{kept[n] / op.weight_count:.6g}") for n, op in ops.items()},
                  kernel_keep={str(s): np.round(m, 6).tolist() for s, m in maps.items()}, seed=seed)
    genome = replace(target, sparsity=sp)
    base_cost = _cost(target, by)
    unit = {n: 1 if by == "params" else op.hw * op.hw for n, op in ops.items()}
    achieved = (base_cost - sum((op.weight_count - kept[n]) * unit[n] for n, op in ops.items())) / base_cost
    return genome, masks, {"achieved": achieved}


# ---- writing -----------------------------------------------------------------------------------------------
def write_genome(genome: Genome, path: Path, masks: dict[str, np.ndarray] | None = None) -> Genome:
    """Save ``genome`` (and its masks as ``<stem>.masks.npz`` beside it, referenced with their SHA-256)."""
    from prune_nas.core.masks import save_masks

    path = Path(path)
    if masks is not None:
        mask_file = path.with_name(path.name.removesuffix(".json") + ".masks.npz")
        digest = save_masks(masks, mask_file)
        genome = replace(genome, sparsity=replace(genome.sparsity, mask=MaskRef(mask_file.name, digest)),
                         source_dir=path.resolve().parent)
    validate(genome)
    save_genome(genome, path)
    return genome


def generate(pattern: Pattern, target: Genome, sizes: Sequence[float], out_dir: Path, stem: str, *,
             sparse: bool | None = None, by: str = "params", seed: int = 0, kind: str = "guided",
             pattern_file: str | None = None) -> list[tuple[Path, Genome, dict]]:
    """Guided (or transferred) genomes of ``target`` at each size, written to ``out_dir/<stem>-<size>.json``.
    ``sparse=None`` picks Guided Sparsifying for patterns of sparse genomes, else Guided Pruning. A narrow
    ``target`` (width multiplier) is written beside them and recorded as their ``reference``."""
    from prune_nas.core.version import __version__

    sizes = check_sizes(sizes)
    sparse = bool(pattern.sparse) if sparse is None else sparse
    smap = stage_map(pattern.n_stages, n_stages(target))
    reference = target.model
    if target.groups.base_widths() != dict(target.widths):
        # A narrow target: write it beside the genomes so reductions and Scratch-B budgets can be measured
        # against it (an absolute path, as discover records its narrow references outside the library).
        ref_path = Path(out_dir) / f"{target.name or target.model + '-narrow-' + target.key}.json"
        save_genome(replace(target, provenance={"method": "unpruned", "reference": target.model,
                                                "prune_nas_version": __version__}), ref_path)
        reference = str(ref_path.resolve())
    out = []
    for size in sizes:
        if sparse:
            genome, masks, info = guided_sparse(pattern, target, size, seed=seed, by=by)
        else:
            (genome, info), masks = guided_widths(pattern, target, size, by=by), None
        name = f"{stem}-{size:g}"
        method = f"{kind}-{'sparsifying' if sparse else 'pruning'}"
        prov = {"method": method, "reference": reference, "pattern": pattern.source_summary(),
                "pattern_file": pattern_file, "stage_map": {str(t): s for t, s in smap.items()},
                "size": {"by": by, "target": size, "achieved": round(info["achieved"], 6)},
                "prune_nas_version": __version__}
        if sparse:
            prov["seed"] = seed
        genome = replace(genome, name=name, provenance=prov)
        path = Path(out_dir) / f"{name}.json"
        out.append((path, write_genome(genome, path, masks), info))
    return out


# ---- transfer ----------------------------------------------------------------------------------------------
def discovered_files(model: str, dataset: str, method: str, folder: Path, ratio: float | None = None
                     ) -> list[Path]:
    """Discovered runs: ``<model>[-x<width>]-<dataset>-<method>-*.json`` (not the ``.masks``/reference files);
    with ``ratio``, only those named ``...-r<ratio>-...``."""
    folder = Path(folder)
    model = model.replace(":", "-")  # a generic reference, as discover names its files
    files = set(folder.glob(f"{model}-{dataset}-{method}-*.json"))
    files |= {p for p in folder.glob(f"{model}-x*-{dataset}-{method}-*.json")
              if p.name.startswith(f"{model}-x") and _is_width(p.name[len(model) + 2:].split("-", 1)[0])}
    if ratio is not None:
        files = {p for p in files if f"-r{ratio:g}-" in p.name}
    return sorted(files)


def _is_width(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def source_pattern(source: str, method: str, discovered_dir: Path, *, discover: bool = True, runs: int = 3,
                   ratio: float | None = None, say: Callable[[str], None] = print,
                   discover_kwargs: dict | None = None) -> Pattern:
    """The pattern of ``source`` (``<model>-<dataset>``) mined from its discovered runs by ``method`` (those
    at ``ratio`` if given, else all); with none on disk, run the discovery first (``runs`` seeds at ``ratio``,
    default ``DISCOVER_RATIO``) or, if ``discover`` is False, refuse."""
    model, dataset = parse_name(source)
    files = discovered_files(model, dataset, method, discovered_dir, ratio)
    tag = f"r{ratio:g}-" if ratio is not None else ""
    where = f"{Path(discovered_dir).as_posix()}/{model}[-x<width>]-{dataset}-{method}-{tag}*.json"
    ratio = DISCOVER_RATIO if ratio is None else ratio
    if not files:
        hint = (f"`prune-nas discover --method {method} --model {model} --dataset {dataset} --ratio "
                f"{ratio:g}` creates them")
        if not discover:
            raise UserError(f"no pruned runs of {source} by {method} found ({where}); {hint}, or drop "
                            "--no-discover to run it now")
        say(f"no pruned runs of {source} by {method} found; running discovery ({runs} runs) first")
        kwargs = {"out_dir": discovered_dir, **(discover_kwargs or {})}
        files = run_discovery(method, model, dataset, ratio, range(runs), **kwargs)
    return mine(files)


def run_discovery(method: str, model: str, dataset: str, ratio: float, seeds, **kwargs) -> list[Path]:
    """Run the pruning methods' discovery once per seed; returns the written genome files."""
    try:
        from prune_nas.design.discover import discover
    except ImportError as e:
        raise UserError(f"cannot run discovery here ({e}); create the runs with `prune-nas discover` first, "
                        "or give --pattern") from None
    out = []
    for s in seeds:
        found = discover(method, model=model, dataset=dataset, ratio=ratio, seed=s, **kwargs)
        out.append(Path(getattr(found, "path", found)))  # a Discovered record (or a path)
    return out


def transfer(source: str, target: str, sizes: Sequence[float], *, method: str = "slimming",
             pattern: Pattern | None = None, discovered_dir: Path, out_dir: Path, sparse: bool | None = None,
             by: str = "params", seed: int = 0, discover: bool = True, runs: int = 3,
             ratio: float | None = None,
             pattern_out: Path | None = None, say: Callable[[str], None] = print,
             discover_kwargs: dict | None = None,
             width: float | None = None) -> list[tuple[Path, Genome, dict]]:
    """Transferred genomes: ``source`` runs' pattern applied to ``target`` (both ``<model>-<dataset>``),
    written as ``out_dir/<source>-to-<target>-<method>[-sparse]-<size>.json``."""
    t_model, t_dataset = parse_name(target)
    s_model, s_dataset = parse_name(source)
    if pattern is not None and (pattern.model, pattern.dataset) != (s_model, s_dataset):
        raise UserError(f"the pattern is of {pattern.model}-{pattern.dataset}, not {source}")
    if pattern is None:
        pattern = source_pattern(source, method, discovered_dir, discover=discover, runs=runs, ratio=ratio,
                                 say=say, discover_kwargs=discover_kwargs)
        if pattern_out is not None:
            save_pattern(pattern, pattern_out)
    sparse = bool(pattern.sparse) if sparse is None else sparse
    source_stem, target_stem = (slug(n.replace(":", "-"), what) for n, what in ((source, "source"),
                                                                              (target, "target")))
    stem = f"{source_stem}-to-{target_stem}-{slug(pattern.method, 'pattern method')}"
    stem += "-sparse" if sparse else ""
    return generate(pattern, target_base(pattern, t_model, t_dataset, width), sizes, out_dir, stem,
                    sparse=sparse, by=by,
                    seed=seed, kind="transferred",
                    pattern_file=pattern_out.as_posix() if pattern_out is not None else None)
