"""Search spaces: YAML files in ``search_spaces/`` (one per model x dataset), validated into a :class:`Space`.

A space says which architectures a study may try (per-stage width multipliers, per-layer widths, per-stage
sparsity, all relative to one base model), how each candidate is trained (dataset, protocol, budget, seeds),
what counts as better (accuracy under a FLOPs / params constraint, or the Pareto front of accuracy and cost)
and which known genomes run first (pruning methods' outputs, mined or transferred designs, uniform pruning).
It never imports optuna: ``search.py`` turns :meth:`Space.param_defs` into Optuna distributions.

Format (``format: prune-nas.space``, ``version: 1``; every key but ``model``, ``dataset`` and ``parameters``
is optional)::

    name: vgg19-cifar100        # study name (default: the file's stem)
    model: vgg19                # base model (`prune-nas genome list`)
    width: 1.0                  # width multiplier of the base model (digits spaces use a narrow one)
    dataset: cifar100           # digits, synthetic, cifar10, cifar100, imagenet
    input_size: 32              # default: the model's
    protocol: {lr: 0.1}         # overrides of the paper's protocol for the dataset (train.Protocol fields)
    budget:                     # or just the kind: `budget: flops`
      kind: flops               # epochs (Scratch-E) | flops (Scratch-B: the base's training FLOPs)
      epochs: 160               # base epochs (default: the protocol's)
      cap: null                 # Scratch-B: cap on the FLOPs ratio
    seeds: 1                    # training seeds per candidate (1-100); each (candidate, seed) is one trial
    objective:                  # either a constraint ...
      maximize: accuracy        #   final test top-1 of the run
      max_flops: 0.5            #   <= 1: fraction of the base's FLOPs (MACs); > 1: absolute MACs
      max_params: 0.5           #   same for parameters
      max_latency_ms: 5.0       #   measured latency at batch 1 on the worker's device (cached per machine)
    # objective: {multi: [accuracy, flops]}   # ... or a Pareto front (flops, params or latency 2nd)
    # objectives: [accuracy, latency]         # the same, spelled as a list, with
    # constraints: {max_latency_ms: 5.0, max_flops: 0.5}   #   limits (latency: ms, measured, batch 1)
    early_stopping:             # single objective only (Optuna's MedianPruner); `false` turns it off
      warmup_epochs: 10         #   never stop a run before this many epochs
      startup_trials: 5         #   nor before this many trials have finished
    sampler: {kind: tpe, seed: 0, startup_trials: 10}   # tpe | random | nsga2 (multi-objective)
    parameters:                 # at least one of:
      stage_multiplier: {range: [0.25, 1.0], step: 0.05}   # one per resolution stage: "mult.stage<s>"
      layer_width: {range: [0.5, 1.0], step: 0.1, groups: ["conv*"]}   # one per width group: "width.<g>"
      stage_sparsity: {range: [0.0, 0.9], step: 0.1}       # one per stage: "sparsity.stage<s>"
    seed_genomes:               # enqueued first: files, globs, library / discovered names (globs too)
      - vgg19-cifar100-slimming-*
    uniform: [0.3, 0.5, 0.7]    # also enqueue uniform pruning at these ratios (fraction of channels removed)

A candidate's width for group ``g`` in stage ``s`` is ``max(1, round(base[g] * mult.stage<s> * width.<g>))``
(a missing parameter counts as 1; channel selections are clipped to what exists). ``sparsity.stage<s> = x``
gives every conv layer of stage ``s`` the density ``1 - x`` (random mask drawn from seed 0; 0 keeps it dense).
Ranges are fractions in (0, 1] (sparsity: [0, 1)); ``(hi - lo)`` must be a whole number of steps.

Validation is declarative first: ``prune_nas/core/schema/space.schema.json`` (JSON Schema 2020-12, shipped
with the package) fixes every key, type and bound (numbers finite, ``protocol.lr > 0``, ``seeds`` 1-100,
unknown keys rejected) before any model is built; then :func:`_parse` checks what needs the registries and the
model. Either way a bad file is one :class:`SpaceError` line naming the field,
e.g. ``vgg11-digits.yaml: budget: must be one of epochs, flops, or a mapping of kind, epochs and cap, got 5``.

>>> s = Space.from_dict({"model": "vgg11", "dataset": "digits", "width": 0.25,
...                      "parameters": {"stage_multiplier": {"range": [0.5, 1.0], "step": 0.25}}})
>>> [p.name for p in s.param_defs()][:2], s.genome({"mult.stage1": 0.5}).widths["conv1"]
(['mult.stage1', 'mult.stage2'], 8)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prune_nas.core.errors import UserError
from prune_nas.core.paths import bundled_dir

if TYPE_CHECKING:
    from prune_nas.core.genome import Genome

FORMAT = "prune-nas.space"
VERSION = 1
SPACES_DIR = bundled_dir("search_spaces")
COSTS = ("flops", "params", "latency")


class SpaceError(UserError):
    """A search space that does not validate; the message names the file and the field."""

    def __init__(self, where: str, field_: str, problem: str):
        self.where, self.field, self.problem = where, field_, problem
        super().__init__(f"{where}: {field_}: {problem}" if field_ else f"{where}: {problem}")


@dataclass(frozen=True)
class ParamDef:
    """One Optuna parameter: a float on a grid ``lo, lo + step, ..., hi``."""

    name: str
    lo: float
    hi: float
    step: float
    kind: str  # "stage_multiplier" | "layer_width" | "stage_sparsity"
    target: str  # the stage number or the width group it sets

    def snap(self, x: float) -> float:
        """The grid value nearest to ``x`` (clamped to the range)."""
        x = min(max(float(x), self.lo), self.hi)
        k = round((x - self.lo) / self.step)
        return round(min(self.lo + k * self.step, self.hi), 10)


@dataclass(frozen=True)
class Objective:
    """``metrics[0]`` is always accuracy (maximised); a second one (flops/params) makes it multi-objective."""

    metrics: tuple[str, ...] = ("accuracy",)
    max_flops: float | None = None
    max_params: float | None = None
    max_latency_ms: float | None = None  # measured on the worker's device at batch 1 (core.latency)

    @property
    def needs_latency(self) -> bool:
        return "latency" in self.metrics or self.max_latency_ms is not None

    @property
    def multi(self) -> bool:
        return len(self.metrics) > 1

    @property
    def directions(self) -> list[str]:
        return ["maximize"] + ["minimize"] * (len(self.metrics) - 1)

    def limits(self, base_cost) -> dict[str, int]:
        """Absolute constraint limits: a value <= 1 is a fraction of the base model's cost."""
        out = {}
        for what, v in (("flops", self.max_flops), ("params", self.max_params)):
            if v is not None:
                ref = getattr(base_cost, what)
                out[what] = int(round(v * ref)) if v <= 1 else int(v)
        return out

    def to_dict(self) -> dict:
        if self.multi:
            d: dict[str, Any] = {"multi": list(self.metrics)}
        else:
            d = {"maximize": "accuracy"}
        if self.max_flops is not None:
            d["max_flops"] = self.max_flops
        if self.max_params is not None:
            d["max_params"] = self.max_params
        if self.max_latency_ms is not None:
            d["max_latency_ms"] = self.max_latency_ms
        return d


@dataclass(frozen=True)
class Space:
    model: str
    dataset: str
    parameters: Mapping[str, Mapping[str, Any]]
    name: str = ""
    width: float = 1.0
    input_size: int | None = None
    protocol: Mapping[str, Any] = field(default_factory=dict)
    budget: Mapping[str, Any] = field(default_factory=lambda: {"kind": "epochs"})
    seeds: int = 1
    objective: Objective = field(default_factory=Objective)
    early_stopping: Mapping[str, int] | None = None
    sampler: Mapping[str, Any] = field(default_factory=lambda: {"kind": "tpe", "seed": 0})
    seed_genomes: tuple[str, ...] = ()
    uniform: tuple[float, ...] = ()
    description: str = ""
    source: str = field(default="", compare=False)  # the file it came from

    # ---- reading -------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any, where: str = "search space", default_name: str = "") -> Space:
        return _parse(d, where, default_name)

    def to_dict(self) -> dict:
        """Canonical JSON-ready form (stored in the study, so workers need no file)."""
        d: dict[str, Any] = {"format": FORMAT, "version": VERSION, "name": self.name, "model": self.model,
                             "width": self.width, "dataset": self.dataset, "input_size": self.input_size,
                             "protocol": dict(self.protocol), "budget": dict(self.budget),
                             "seeds": self.seeds,
                             "objective": self.objective.to_dict(),
                             "early_stopping": dict(self.early_stopping) if self.early_stopping else False,
                             "sampler": dict(self.sampler),
                             "parameters": {k: _plain(v) for k, v in self.parameters.items()},
                             "seed_genomes": list(self.seed_genomes), "uniform": list(self.uniform)}
        if self.description:
            d["description"] = self.description
        return d

    # ---- derived -------------------------------------------------------------------------------------------
    @cached_property
    def base(self) -> Genome:
        """The unpruned base model every fraction refers to (head sized for the dataset)."""
        from prune_nas.core.genome import base_genome
        from prune_nas.training.data import NUM_CLASSES

        g = base_genome(self.model, num_classes=NUM_CLASSES[self.dataset], input_size=self.input_size,
                        width_mult=self.width)
        return g.replace(name=f"{self.model}-x{self.width:g}" if self.width != 1 else self.model,
                         provenance={"method": "unpruned", "reference": self.model, "space": self.name})

    def protocol_obj(self):
        from prune_nas.training.protocol import Protocol

        return Protocol.for_dataset(self.dataset, **self.protocol)

    def budget_obj(self):
        from prune_nas.training.protocol import Budget

        b = self.budget
        reference = self.base if b.get("kind") == "flops" else None
        return Budget(b.get("kind", "epochs"), b.get("epochs"), reference, b.get("cap"))

    def stages(self) -> list[int]:
        groups = self.base.groups
        return sorted({groups.stage(g) for g in groups.names})

    def conv_stages(self) -> dict[str, int]:
        from prune_nas.core.geometry import conv_ops

        return {name: op.stage for name, op in conv_ops(self.base).items()}

    def param_defs(self) -> list[ParamDef]:
        """Every Optuna parameter of the space, in a fixed order (stages, then groups in layout order)."""
        out: list[ParamDef] = []
        p = self.parameters
        if "stage_multiplier" in p:
            lo, hi, step = _range(p["stage_multiplier"])
            out += [ParamDef(f"mult.stage{s}", lo, hi, step, "stage_multiplier", str(s))
                    for s in self.stages()]
        if "layer_width" in p:
            lo, hi, step = _range(p["layer_width"])
            out += [ParamDef(f"width.{g}", lo, hi, step, "layer_width", g) for g in self.width_groups()]
        if "stage_sparsity" in p:
            lo, hi, step = _range(p["stage_sparsity"])
            stages = sorted(set(self.conv_stages().values()))
            out += [ParamDef(f"sparsity.stage{s}", lo, hi, step, "stage_sparsity", str(s)) for s in stages]
        return out

    def width_groups(self) -> list[str]:
        """The width groups ``layer_width`` applies to (its ``groups`` patterns; default all)."""
        names = self.base.groups.names
        pats = self.parameters.get("layer_width", {}).get("groups", "all")
        if pats == "all":
            return list(names)
        return [g for g in names if any(fnmatch.fnmatchcase(g, pat) for pat in pats)]

    def genome(self, params: Mapping[str, float], name: str | None = None) -> Genome:
        """The candidate a parameter assignment describes (missing parameters count as 1, or 0 sparsity)."""
        from prune_nas.core.genome import Sparsity, fit_selects

        base = self.base
        groups = base.groups
        widths = {}
        for g in groups.names:
            f = float(params.get(f"mult.stage{groups.stage(g)}", 1.0)) * float(params.get(f"width.{g}", 1.0))
            widths[g] = max(1, int(round(base.widths[g] * f)))
        genome = base.replace(widths=fit_selects(base, widths), name=name, provenance={})
        density = {}
        for conv, s in self.conv_stages().items():
            x = float(params.get(f"sparsity.stage{s}", 0.0))
            if x > 0:
                density[conv] = round(1.0 - x, 10)
        if density:
            genome = genome.replace(sparsity=Sparsity(density=density, seed=0))
        return genome

    def project(self, genome: Genome) -> dict[str, float]:
        """The grid point nearest to ``genome``: stage multipliers are the stage's mean kept ratio, layer
        widths the remaining ratio per group (with a width parameter on every group of a stage, its multiplier
        is the stage's widest ratio instead), sparsity one minus the stage's mean density. Seed genomes carry
        it as their trial parameters so the sampler learns from them; the genome itself is what trains."""
        base, groups = self.base, self.base.groups
        ratio = {g: genome.widths[g] / base.widths[g] for g in groups.names}
        out: dict[str, float] = {}
        mult: dict[int, float] = {}
        per_layer = set(self.width_groups()) if "layer_width" in self.parameters else set()
        for p in self.param_defs():
            if p.kind == "stage_multiplier":
                s = int(p.target)
                in_stage = [g for g in groups.names if groups.stage(g) == s]
                vals = [ratio[g] for g in in_stage]
                # With a width parameter on every group of the stage, the stage's widest ratio lets the layer
                # fractions (<= 1) express every width; otherwise the mean is the best single number.
                m = max(vals) if per_layer.issuperset(in_stage) else sum(vals) / len(vals)
                mult[s] = out[p.name] = p.snap(m)
            elif p.kind == "layer_width":
                out[p.name] = p.snap(ratio[p.target] / mult.get(groups.stage(p.target), 1.0))
            else:
                s = int(p.target)
                dens = genome.sparsity.density if genome.sparsity else {}
                convs = [c for c, st in self.conv_stages().items() if st == s]
                d = sum(float(dens.get(c, 1.0)) for c in convs) / max(len(convs), 1)
                out[p.name] = p.snap(1.0 - d)
        return out

    def adapt(self, genome: Genome, ref: str) -> Genome:
        """A seed genome fitted to this space: same model and blocks, at most the base's widths; its head and
        input size follow the space's dataset."""
        base = self.base
        where = self.source or self.name
        if genome.model != base.model or tuple(genome.blocks or ()) != tuple(base.blocks or ()):
            raise UserError(f"{where}: seed genome {ref} is a {genome.model} (blocks "
                            f"{list(genome.blocks or [])}); this space searches {base.model} (blocks "
                            f"{list(base.blocks or [])})")
        wider = [g for g in base.groups.names if genome.widths[g] > base.widths[g]]
        if wider:
            raise UserError(f"{where}: seed genome {ref} is wider than the space's base ({base.name}) in "
                            f"{', '.join(wider[:3])}; set `width` in the space to its base model's width")
        changes = {}
        if genome.num_classes != base.num_classes:
            changes["num_classes"] = base.num_classes
        if genome.input_size != base.input_size or genome.in_channels != base.in_channels:
            changes.update(input_size=base.input_size, in_channels=base.in_channels)
        return genome.replace(**changes) if changes else genome


# ---- loading ---------------------------------------------------------------------------------------------
def load_space(ref: str | Path) -> Space:
    """A space from a YAML (or JSON) file, or by name from ``search_spaces/`` (``vgg19-cifar100``)."""
    from prune_nas.core.userfiles import read_yaml

    path = Path(ref)
    if not path.exists() and not path.suffix:
        for cand in (SPACES_DIR / f"{ref}.yaml", SPACES_DIR / f"{ref}.yml"):
            if cand.exists():
                path = cand
                break
    known = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
    data = read_yaml(path, "search space", f"bundled spaces: {known}")
    space = _parse(data, str(path), path.stem)
    object.__setattr__(space, "source", str(path))
    return space


def list_spaces() -> list[Path]:
    return sorted(SPACES_DIR.glob("*.yaml"))


def schema() -> dict:
    """The search-space file schema (``prune_nas/core/schema/space.schema.json``)."""
    from prune_nas.core.schemas import validator

    return validator("space").schema


def _parse(d: Any, where: str, default_name: str) -> Space:
    """Validate ``d`` against the schema (types, bounds, unknown keys), then what needs the registries and the
    model (model and dataset names, protocol, objective combinations, grids, width groups, feasibility)."""
    def err(f: str, problem: str):
        return SpaceError(where, f, problem)

    if not isinstance(d, dict):
        raise err("", "must be a mapping (key: value lines)")
    from prune_nas.core.schemas import first_error

    bad = first_error(d, "space")
    if bad is not None:
        raise err(*bad)
    from prune_nas.core.arch import MODELS
    from prune_nas.core.generic.refs import is_generic_ref
    from prune_nas.training.data import NUM_CLASSES
    from prune_nas.training.protocol import Protocol

    model, dataset = d["model"], d["dataset"]
    # A generic reference (torchvision:resnet18) is checked when its base model is built below.
    if not isinstance(model, str) or model not in MODELS and not is_generic_ref(model):
        import difflib

        close = difflib.get_close_matches(str(model), MODELS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise err("model", f"unknown model {model!r}{hint}")
    if not isinstance(dataset, str) or dataset not in NUM_CLASSES:
        raise err("dataset", f"unknown dataset {dataset!r}; known: {', '.join(NUM_CLASSES)}")
    name = d.get("name") or default_name or f"{model.replace(':', '-')}-{dataset}"
    if not all(c.isalnum() and c.isascii() or c in "-_." for c in name):
        raise err("name", f"use letters, digits, '-', '_' and '.' only, got {name!r}")
    width = float(d.get("width", 1.0))
    input_size = d.get("input_size")

    protocol = d.get("protocol") or {}
    try:
        Protocol.for_dataset(dataset, **protocol)
    except (TypeError, ValueError) as e:
        raise err("protocol", str(e)) from None

    budget = d.get("budget") or {}
    budget = {"kind": budget} if isinstance(budget, str) else budget
    budget = {"kind": budget.get("kind", "epochs"), "epochs": budget.get("epochs"), "cap": budget.get("cap")}

    seeds = d.get("seeds", 1)
    objective = _objective(_objective_dict(d, err), err)
    es = d.get("early_stopping", None)
    if es is False or objective.multi and es is None:
        early = None
    elif objective.multi:
        raise err("early_stopping", "works for single-objective studies only; remove it or set `false`")
    else:
        es = {} if es in (None, True) else es
        early = {"warmup_epochs": es.get("warmup_epochs", 1), "startup_trials": es.get("startup_trials", 5)}

    sampler = dict(d.get("sampler") or {})
    sampler.setdefault("kind", "tpe")
    if sampler["kind"] == "nsga2" and not objective.multi:
        raise err("sampler.kind", "nsga2 is for multi-objective studies; use tpe")
    sampler["seed"] = sampler.get("seed")
    sampler["startup_trials"] = sampler.get("startup_trials", 10)

    parsed = {kind: _param(kind, spec, err) for kind, spec in d["parameters"].items()}
    seed_genomes = d.get("seed_genomes") or []
    if isinstance(seed_genomes, str):
        seed_genomes = [seed_genomes]
    uniform = [float(u) for u in d.get("uniform") or []]

    space = Space(model=model, dataset=dataset, parameters=parsed, name=name, width=width,
                  input_size=input_size, protocol=dict(protocol), budget=budget, seeds=seeds,
                  objective=objective, early_stopping=early, sampler=sampler,
                  seed_genomes=tuple(seed_genomes), uniform=tuple(uniform),
                  description=str(d.get("description") or ""))
    # Checks that need the model: the base builds, groups match, stages exist.
    try:
        base = space.base
    except UserError as e:
        raise err("model", str(e)) from None
    if "layer_width" in parsed and not space.width_groups():
        raise err("parameters.layer_width.groups", f"matches none of {base.model}'s width groups "
                                                   f"({', '.join(base.groups.names[:6])}, ...)")
    if objective.max_flops is not None or objective.max_params is not None:
        from prune_nas.core.cost import count

        smallest = {p.name: p.hi if p.kind == "stage_sparsity" else p.lo for p in space.param_defs()}
        floor = space.genome(smallest)
        limits, fc = objective.limits(count(base)), count(floor)
        for what, limit in limits.items():
            if getattr(fc, what) > limit:
                raise err(f"objective.max_{what}", f"no candidate can meet it: the smallest has "
                                                   f"{getattr(fc, what)} {what}, the limit is {limit}")
    return space


def _objective_dict(d: dict, err) -> Any:
    """``objective:`` as written, or built from the other spelling: ``objectives: [accuracy, latency]`` and
    ``constraints: {max_latency_ms: 5, max_flops: 0.5}``."""
    if "objectives" not in d and "constraints" not in d:
        return d.get("objective") or {"maximize": "accuracy"}
    if "objective" in d:
        raise err("objective", "give either `objective` or `objectives` / `constraints`, not both")
    metrics = d.get("objectives") or ["accuracy"]
    if not isinstance(metrics, list) or not metrics:
        raise err("objectives", f"must be a list: [accuracy] or [accuracy, flops|params|latency], "
                                f"got {metrics!r}")
    constraints = d.get("constraints") or {}
    if not isinstance(constraints, dict):
        raise err("constraints", "must be a mapping of max_flops, max_params, max_latency_ms")
    bad = sorted(set(constraints) - {"max_flops", "max_params", "max_latency_ms"})
    if bad:
        raise err(f"constraints.{bad[0]}", "unknown key (known: max_flops, max_params, max_latency_ms)")
    head = {"multi": metrics} if len(metrics) > 1 else {"maximize": metrics[0]}
    return {**head, **constraints}


def _objective(o: dict, err) -> Objective:
    """The objective (types and bounds are the schema's): a Pareto pair, or accuracy under constraints."""
    limits = {k: float(o[k]) for k in ("max_flops", "max_params", "max_latency_ms") if o.get(k) is not None}
    if "multi" in o:
        m = o["multi"]
        if len(m) != 2 or m[0] != "accuracy" or m[1] not in COSTS:
            raise err("objective.multi", f"must be [accuracy, flops], [accuracy, params] or "
                                         f"[accuracy, latency], got {m!r}")
        return Objective(tuple(m), **limits)
    return Objective(("accuracy",), **limits)


def _param(kind: str, spec: dict, err) -> dict:
    """One parameter's grid (types are the schema's): the range's bounds depend on the kind, and the step
    must divide it."""
    f = f"parameters.{kind}"
    sparse = kind == "stage_sparsity"
    lo, hi = (float(x) for x in spec["range"])
    for v in (lo, hi):
        if (v < 0 or v > 1) or (sparse and v == 1) or (not sparse and v == 0):
            raise err(f"{f}.range", f"must be in {'[0, 1)' if sparse else '(0, 1]'}, got {v:g}")
    if lo > hi:
        raise err(f"{f}.range", f"lo {lo} is above hi {hi}")
    step = float(spec.get("step", 0.05))
    n = (hi - lo) / step
    if abs(n - round(n)) > 1e-6:
        raise err(f"{f}.step", f"(hi - lo) = {hi - lo:g} is not a whole number of steps of {step:g}")
    out: dict[str, Any] = {"range": [lo, hi], "step": step}
    if kind == "layer_width":
        groups = spec.get("groups", "all")
        out["groups"] = [groups] if isinstance(groups, str) and groups != "all" else groups
    return out


def _range(spec: Mapping) -> tuple[float, float, float]:
    return float(spec["range"][0]), float(spec["range"][1]), float(spec["step"])


def _plain(v):
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
