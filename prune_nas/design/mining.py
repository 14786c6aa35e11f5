"""Patterns in pruned architectures (paper Section 5, Table 8 and Figure 4), mined from genomes.

A *pattern* summarises several pruning runs of one model on one dataset by one method:

* **widths** (Table 8): per width group, the mean and std of the kept width across runs (std is the population
  std, numpy's default ``ddof=0``); per stage (the layers between two resolution changes: VGG's max-pools, a
  ResNet's residual stages, a DenseNet's dense blocks), the mean kept ratio ``width / base`` over the stage's
  *pruned* groups and all runs, unweighted by layer size. A kind of group (``conv``, ``select``, ``stream``)
  counts as pruned if some run kept fewer channels than the base in some group of that kind, so residual
  streams, which slimming and L1-norm pruning leave alone, do not dilute a ResNet's stage ratios.
* **kernels** (Figure 4, sparse genomes only): per stage, the probability that each of the nine 3x3 kernel
  positions is kept, pooled over every 3x3 kernel of the stage in every run (exact, from mask files; genomes
  without a mask contribute their ``kernel_keep`` maps); and per conv layer the mean and std of its density.

>>> from prune_nas.core.genome import base_genome
>>> g = base_genome("vgg16")
>>> p = mine_genomes([g.replace(widths={**g.widths, "conv13": 256}), g], ["a.json", "b.json"])
>>> p.layer("conv13")["mean"], p.layer("conv13")["std"], round(p.stage(5)["ratio"], 4)
(384.0, 128.0, 0.9167)

Patterns are versioned JSON (``{"format": "prune-nas.pattern", "version": 1, ...}``), written atomically, and
record their sources (genome files and keys, number of runs). This module computes with numpy and imports no
torch of its own (matplotlib only when drawing).
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from prune_nas.core.errors import UserError
from prune_nas.core.genome import Genome, atomic_write_text, base_genome, load_genome
from prune_nas.core.geometry import conv_ops

FORMAT = "prune-nas.pattern"
VERSION = 1
# Classes per dataset name (the names of ``prune_nas.training.data``; a test keeps the two lists equal).
NUM_CLASSES = {"digits": 10, "synthetic": 10, "cifar10": 10, "cifar100": 100, "imagenet": 1000}
# Discovered genome files are named <model>-<dataset>-<method>-r<ratio>-s<seed>[-<settings>].json
_DISCOVERED = re.compile(r"^(?P<model>.+?)-(?P<dataset>" + "|".join(NUM_CLASSES) +
                         r")-(?P<method>.+)-r(?P<ratio>[0-9.]+)-s(?P<seed>\d+)(?:-.+)?$")


@dataclass(frozen=True)
class Pattern:
    """A mined pattern. ``layers``/``stages``/``sparse`` are plain JSON-ready data (see ``to_dict``)."""

    family: str
    model: str
    dataset: str
    method: str
    input: dict  # num_classes, size, channels of the source genomes
    blocks: list | None
    sources: list  # [{"file", "key", "seed", "ratio"}], one per run
    layers: list  # [{"group", "kind", "stage", "base", "mean", "std", "widths"}]
    stages: list  # [{"stage", "ratio", "ratio_std", "by_kind", "groups"}]
    pruned_kinds: list
    # {"stages": [{"stage", "kernel_keep", "density", "kernels"}], "layers": [...]}
    sparse: dict | None = None
    # fraction of the reference's params / flops the runs kept: {"params": [mean, std]}
    size: dict | None = None
    # The unpruned model the runs pruned: {"name", "width"}; width is its multiplier on the named base model.
    reference: dict = field(default_factory=lambda: {"name": None, "width": 1.0})
    extra: dict = field(default_factory=dict)  # producer info, kept as is

    @property
    def runs(self) -> int:
        return len(self.sources)

    @property
    def n_stages(self) -> int:
        return max(s["stage"] for s in self.stages)

    def layer(self, group: str) -> dict:
        return next(x for x in self.layers if x["group"] == group)

    def stage(self, s: int) -> dict:
        return next(x for x in self.stages if x["stage"] == s)

    def kernel_stage(self, s: int) -> dict | None:
        if not self.sparse:
            return None
        return next((x for x in self.sparse["stages"] if x["stage"] == s), None)

    def label(self) -> str:
        """``<model>-<dataset>-<method>``, a file name: dataset and method come from genome files, so they are
        checked (a provenance method of ``../../x`` must not choose where the pattern is written)."""
        from prune_nas.core.paths import slug

        model = self.model.replace(":", "-")  # a generic reference, as discover names its files
        return "-".join(slug(v, what) for v, what in ((model, "model"), (self.dataset, "dataset"),
                                                      (self.method, "method")))

    def source_summary(self) -> dict:
        """What a genome generated from this pattern records about it."""
        return {"model": self.model, "dataset": self.dataset, "method": self.method, "runs": self.runs,
                "genomes": [{"file": s["file"], "key": s["key"]} for s in self.sources]}

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "family": self.family, "model": self.model,
                "dataset": self.dataset, "method": self.method, "runs": self.runs, "input": self.input,
                "blocks": self.blocks, "sources": self.sources, "pruned_kinds": self.pruned_kinds,
                "stages": self.stages, "layers": self.layers, "sparse": self.sparse, "size": self.size,
                "reference": self.reference, **self.extra}

    @classmethod
    def from_dict(cls, d: Any, where: str = "pattern") -> Pattern:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise UserError(f"{where} is not a prune-nas pattern (no \"format\": \"{FORMAT}\")")
        if d.get("version") != VERSION:
            raise UserError(f"{where}: pattern version {d.get('version')!r} is not supported (this is "
                            f"{VERSION})")
        try:
            p = cls(family=d["family"], model=d["model"], dataset=d["dataset"], method=d["method"],
                    input=dict(d["input"]), blocks=d["blocks"], sources=list(d["sources"]),
                    layers=list(d["layers"]), stages=list(d["stages"]), pruned_kinds=list(d["pruned_kinds"]),
                    sparse=d.get("sparse"), size=d.get("size"),
                    reference=dict(d.get("reference") or {"name": d["model"], "width": 1.0}),
                    extra={k: d[k] for k in ("producer",) if k in d})
            _check_pattern(p)
        except (KeyError, TypeError, ValueError, StopIteration) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else f"bad field ({e})"
            raise UserError(f"{where} is malformed: {what}") from None
        return p


def _check_pattern(p: Pattern) -> None:
    from prune_nas.core.generic.refs import is_generic_ref
    from prune_nas.core.genome import model_spec

    if not isinstance(p.model, str) or p.model not in _models() and not is_generic_ref(p.model):
        raise ValueError(f"unknown model {p.model!r}")
    if model_spec(p.model).family != p.family or not p.sources or not p.stages or not p.layers:
        raise ValueError("family, sources, stages and layers must be consistent and non-empty")
    if not float(p.reference.get("width", 1.0)) > 0:
        raise ValueError("reference width must be > 0")
    for s in p.stages:
        if not 0 < float(s["ratio"]) <= 1 or int(s["stage"]) < 1:
            raise ValueError(f"stage {s.get('stage')} ratio {s.get('ratio')}")
    for x in p.layers:
        float(x["mean"]), float(x["std"]), int(x["base"]), int(x["stage"]), str(x["kind"])
    if p.sparse:
        for s in p.sparse["stages"]:
            k = np.asarray(s["kernel_keep"], dtype=float) if s.get("kernel_keep") is not None else None
            if k is not None and (k.shape != (3, 3) or k.min() < 0 or k.max() > 1):
                raise ValueError(f"stage {s['stage']} kernel_keep must be 3x3 in [0, 1]")
        for x in p.sparse["layers"]:
            if not 0 < float(x["mean"]) <= 1:
                raise ValueError(f"density of {x['name']}")


def _models():
    from prune_nas.core.arch import MODELS

    return MODELS


# ---- reading runs ------------------------------------------------------------------------------------------
def expand_paths(patterns: Sequence[str]) -> list[Path]:
    """Files from paths and globs (a glob the shell left unexpanded is expanded here), sorted, unique."""
    out: list[Path] = []
    for pat in patterns:
        if any(c in pat for c in "*?["):
            hits = sorted(glob.glob(pat))
            if not hits:
                raise UserError(f"no files matched {pat}")
            out += [Path(h) for h in hits]
        else:
            if not Path(pat).exists():
                raise UserError(f"genome file not found: {pat}")
            out.append(Path(pat))
    if not out:
        raise UserError("no genome files given")
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def run_info(genome: Genome, path: str | Path) -> dict:
    """Dataset, method, ratio and seed of a pruning run: from the genome's provenance, else from the
    discovered-genome file name ``<model>-<dataset>-<method>-r<ratio>-s<seed>[-<settings>].json``."""
    prov = genome.provenance
    m = _DISCOVERED.match(Path(path).name.removesuffix(".json"))
    named = m.groupdict() if m else {}

    def pick(key):
        v = prov.get(key)
        return v if v is not None else named.get(key)

    ratio, seed = pick("ratio"), pick("seed")
    # methods record their arguments under "params"
    if ratio is None and isinstance(prov.get("params"), dict):
        ratio = prov["params"].get("ratio")
    return {"dataset": str(pick("dataset") or "unknown"), "method": str(pick("method") or "unknown"),
            "ratio": float(ratio) if ratio is not None else None,
            "seed": int(seed) if seed is not None else None}


def mine(paths: Sequence[str | Path]) -> Pattern:
    """Mine the pattern of the genome files ``paths`` (one pruning run each)."""
    paths = [Path(p) for p in paths]
    return mine_genomes([load_genome(p) for p in paths], [p.as_posix() for p in paths])


def mine_genomes(genomes: Sequence[Genome], files: Sequence[str]) -> Pattern:
    """Mine the pattern of ``genomes`` (read from ``files``, which are recorded as the sources)."""
    if not genomes:
        raise UserError("no genomes to mine")
    infos = [run_info(g, f) for g, f in zip(genomes, files)]
    _same("family", [g.family for g in genomes], files)
    _same("model", [g.model for g in genomes], files)
    _same("dataset", [i["dataset"] for i in infos], files)
    _same("method", [i["method"] for i in infos], files)
    _same("blocks per stage", [tuple(g.blocks) if g.blocks else None for g in genomes], files,
          why="width patterns need the same layers in every run")
    refs = [reference_genome(g) for g in genomes]
    _same("reference model", [r.name or r.model for r in refs], files,
          why="kept ratios are measured against the model each run pruned")
    sparse = [g.sparsity is not None for g in genomes]
    if any(sparse) and not all(sparse):
        raise UserError(f"cannot mine dense and sparse genomes together ({_first(files, sparse, True)} is "
                        f"sparse, {_first(files, sparse, False)} is not)")
    first = genomes[0]
    layers, stages, pruned = _width_pattern(genomes, refs[0])
    sources = [{"file": f, "key": g.key, "seed": i["seed"], "ratio": i["ratio"]}
               for g, f, i in zip(genomes, files, infos)]
    from prune_nas.core.version import __version__

    return Pattern(family=first.family, model=first.model, dataset=infos[0]["dataset"],
                   method=infos[0]["method"],
                   input={"num_classes": first.num_classes, "size": first.input_size,
                          "channels": first.in_channels},
                   blocks=list(first.blocks) if first.blocks else None, sources=sources, layers=layers,
                   stages=stages, pruned_kinds=pruned,
                   sparse=_kernel_pattern(genomes) if all(sparse) else None,
                   size=_sizes(genomes, refs[0]),
                   reference={"name": refs[0].name or refs[0].model, "width": width_multiplier(refs[0])},
                   extra={"producer": {"prune_nas_version": __version__}})


def _same(what: str, values: list, files: Sequence[str], why: str = "") -> None:
    distinct = list(dict.fromkeys(values))
    if len(distinct) > 1:
        a, b = distinct[0], distinct[1]
        fa, fb = files[values.index(a)], files[values.index(b)]
        raise UserError(f"cannot mine runs with different {what} together: {fa} has {a}, {fb} has {b}"
                        + (f" ({why})" if why else "") + "; mine each separately")


def _first(files, flags, value):
    return files[flags.index(value)]


def _recorded_width(genome: Genome) -> float | None:
    """The width multiplier of the model a run pruned, where its provenance records one."""
    for key in ("pruned_from", "source"):  # discover's record of the large model
        d = genome.provenance.get(key)
        if isinstance(d, dict) and d.get("width"):
            return float(d["width"])
    return None


def reference_genome(genome: Genome) -> Genome:
    """The unpruned model a run pruned, whose widths its kept ratios are measured against: its recorded
    ``reference`` genome when that resolves to one of the same model (a file beside it, or a name
    ``resolve_genome`` knows), else the base model at the width multiplier its provenance records
    (``pruned_from.width``), else the base model."""
    kw = {"num_classes": genome.num_classes, "input_size": genome.input_size,
          "in_channels": genome.in_channels, "model_args": genome.model_args}
    ref = genome.provenance.get("reference")
    if isinstance(ref, str) and ref not in _models():
        beside = genome.source_dir / f"{ref}.json" if genome.source_dir else None
        try:
            if beside is not None and beside.exists():
                found = load_genome(beside)
            else:
                from prune_nas.core.library import resolve_genome

                found = resolve_genome(ref)
            if (found.model == genome.model and found.blocks == genome.spec.default_blocks
                    and found.input_size == genome.input_size):
                return found
        except UserError:
            pass  # an unresolvable reference: fall back to the base model
    width = _recorded_width(genome) or 1.0
    g = base_genome(genome.model, width_mult=width, **kw)
    return g if width != 1.0 else replace(g, name=genome.model)


def width_multiplier(reference: Genome) -> float:
    """How wide ``reference`` is relative to its base model (0.25 for discover's digits models)."""
    base = reference.groups.base_widths()
    return float(f"{sum(reference.widths.values()) / sum(base.values()):.3g}")


def _width_pattern(genomes: Sequence[Genome], reference: Genome) -> tuple[list, list, list]:
    groups = genomes[0].groups
    full = groups.base_widths()
    base = {n: reference.widths.get(n, full[n]) for n in groups.names}
    w = np.array([[g.widths[n] for n in groups.names] for g in genomes], dtype=float)  # runs x groups
    mean, std = w.mean(axis=0), w.std(axis=0)
    kinds = [groups.kind(n) for n in groups.names]
    stage_of = [groups.stage(n) for n in groups.names]
    b = np.array([base[n] for n in groups.names], dtype=float)
    pruned = sorted({k for k, m, bb in zip(kinds, mean, b) if m < bb})
    layers = [{"group": n, "kind": k, "stage": s, "base": int(bb), "mean": float(m), "std": float(sd),
               "widths": [int(x) for x in w[:, i]]}
              for i, (n, k, s, bb, m, sd) in enumerate(zip(groups.names, kinds, stage_of, b, mean, std))]
    counted = set(pruned) or {k for k in kinds if k != "stream"} or set(kinds)
    ratios = w / b  # runs x groups
    stages = []
    for s in sorted(set(stage_of)):
        cols = [i for i, (k, st) in enumerate(zip(kinds, stage_of)) if st == s and k in counted]
        cols = cols or [i for i, st in enumerate(stage_of) if st == s]
        per_run = ratios[:, cols].mean(axis=1)
        by_kind = {k: float(ratios[:, [i for i in range(len(kinds))
                                       if stage_of[i] == s and kinds[i] == k]].mean())
                   for k in sorted({kinds[i] for i in range(len(kinds)) if stage_of[i] == s})}
        stages.append({"stage": s, "ratio": float(per_run.mean()), "ratio_std": float(per_run.std()),
                       "by_kind": by_kind, "groups": len(cols)})
    return layers, stages, pruned


def _sizes(genomes: Sequence[Genome], reference: Genome) -> dict:
    from prune_nas.core.cost import count

    ref = count(reference)
    costs = [count(x) for x in genomes]
    out = {}
    for by in ("params", "flops"):
        r = np.array([getattr(c, by) / getattr(ref, by) for c in costs])
        out[by] = [float(r.mean()), float(r.std())]
    return out


def _kernel_pattern(genomes: Sequence[Genome]) -> dict:
    """Per-stage 3x3 keep maps (pooled over kernels and runs) and per-layer densities (mean, std over
    runs)."""
    from prune_nas.core.masks import load_masks

    convs = conv_ops(genomes[0])
    dens = np.ones((len(genomes), len(convs)))
    kept = {}  # stage -> [sum of kept per position (3x3), number of kernels]
    maps = {}  # stage -> list of kernel_keep maps from genomes without masks
    for r, g in enumerate(genomes):
        masks = load_masks(g) if g.sparsity.mask else {}
        for c, (name, op) in enumerate(convs.items()):
            if name in masks:
                m = masks[name]
                dens[r, c] = m.mean()
                if op.k == 3:
                    acc = kept.setdefault(op.stage, [np.zeros((3, 3)), 0])
                    acc[0] += m.reshape(-1, 3, 3).sum(axis=0)
                    acc[1] += m.shape[0] * m.shape[1]
            else:
                dens[r, c] = float(g.sparsity.density.get(name, 1.0))
        if not masks:
            for s, km in g.sparsity.kernel_keep.items():
                maps.setdefault(int(s), []).append(np.asarray(km, dtype=float))
    stage_of = [op.stage for op in convs.values()]
    weights = np.array([op.weight_count for op in convs.values()], dtype=float)
    stages = []
    for s in sorted(set(stage_of)):
        cols = [i for i, st in enumerate(stage_of) if st == s]
        if s in kept:
            km, n = kept[s][0] / kept[s][1], kept[s][1]
        elif s in maps:
            km, n = np.mean(maps[s], axis=0), None
        else:
            km, n = None, None
        pooled = float((dens[:, cols] * weights[cols]).sum() / (weights[cols].sum() * len(genomes)))
        stages.append({"stage": s, "kernel_keep": None if km is None else np.round(km, 6).tolist(),
                       "density": pooled, "kernels": n})
    layers = [{"name": name, "stage": op.stage, "k": op.k, "weights": op.weight_count,
               "mean": float(dens[:, i].mean()), "std": float(dens[:, i].std())}
              for i, (name, op) in enumerate(convs.items())]
    return {"stages": stages, "layers": layers}


# ---- files -------------------------------------------------------------------------------------------------
def save_pattern(pattern: Pattern, path: str | Path) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(pattern.to_dict(), indent=1) + "\n")
    return path


def load_pattern(path: str | Path) -> Pattern:
    from prune_nas.core.userfiles import read_json

    path = Path(path)
    data = read_json(path, "pattern file")
    return Pattern.from_dict(data, where=str(path))


def figure_paths(pattern_path: str | Path) -> dict[str, Path]:
    """Where the figures of a pattern file go: ``x.pattern.json`` -> ``x.widths.png``, ``x.kernels.png``."""
    p = Path(pattern_path)
    stem = p.name.removesuffix(".json").removesuffix(".pattern")
    return {"widths": p.with_name(f"{stem}.widths.png"), "kernels": p.with_name(f"{stem}.kernels.png")}


def _title(p: Pattern) -> str:
    model = (p.reference.get("name") or p.model).removesuffix(f"-{p.dataset}")  # discover's names end so
    return f"{model} / {p.dataset} / {p.method}, {p.runs} run{'s' if p.runs != 1 else ''}"


def plot_widths(pattern: Pattern, path: str | Path) -> Path:
    """Bar chart: base width and mean kept width (± std) per width group, coloured by stage."""
    plt = _pyplot()
    layers = pattern.layers
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(layers) + 2), 4.2))
    colors = plt.get_cmap("tab10")
    c = [colors((x_["stage"] - 1) % 10) for x_ in layers]
    ax.bar(x, [x_["base"] for x_ in layers], color="0.88", width=0.8, label="base width")
    ax.bar(x, [x_["mean"] for x_ in layers], yerr=[x_["std"] for x_ in layers], color=c, width=0.6,
           capsize=2, error_kw={"elinewidth": 0.8}, label="kept (mean ± std)")
    step = max(1, len(layers) // 40)
    ax.set_xticks(x[::step], [x_["group"] for x_ in layers][::step], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("channels")
    ax.set_ylim(0, max(x_["base"] for x_ in layers) * 1.2)  # room for the stage labels above the bars
    for s in pattern.stages:
        idx = [i for i, x_ in enumerate(layers) if x_["stage"] == s["stage"]]
        ax.text(np.mean(idx), ax.get_ylim()[1] * 0.97, f"stage {s['stage']}\n{s['ratio']:.0%} kept",
                ha="center",
                va="top", fontsize=7, color=colors((s["stage"] - 1) % 10))
    ax.set_title(f"Kept widths per layer: {_title(pattern)}", fontsize=10)
    ax.legend(loc="upper left", fontsize=7, bbox_to_anchor=(0, -0.22), ncol=2, frameon=False)
    return _save(fig, path)


def plot_kernels(pattern: Pattern, path: str | Path) -> Path:
    """One 3x3 heat map per stage: keep probability of each kernel position, one shared colour scale."""
    if not pattern.sparse:
        raise UserError(f"pattern {pattern.label()} has no kernel maps (its genomes are not sparse)")
    plt = _pyplot()
    st = [s for s in pattern.sparse["stages"] if s["kernel_keep"] is not None]
    if not st:
        raise UserError(f"pattern {pattern.label()} has no 3x3 conv layers with masks or kernel maps")
    maps = [np.asarray(s["kernel_keep"]) for s in st]
    lo, hi = min(m.min() for m in maps), max(m.max() for m in maps)
    if hi - lo < 1e-3:
        lo, hi = lo - 0.05, hi + 0.05
    fig, axes = plt.subplots(1, len(st), figsize=(2.1 * len(st) + 1.2, 2.9), squeeze=False)
    for ax, s, m in zip(axes[0], st, maps):
        im = ax.imshow(m, vmin=lo, vmax=hi, cmap="viridis")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if (v - lo) / (hi - lo) > 0.6 else "white")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"stage {s['stage']}\ndensity {s['density']:.0%}", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="keep probability")
    fig.suptitle(f"3x3 kernel keep probability per stage: {_title(pattern)}", fontsize=9)
    return _save(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    from prune_nas.core.atomic import atomic_write

    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png"), ".png")
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path
