"""The paper's experiments as declarative specs (``experiments/*.yaml``), runnable at three scales.

A spec names one table or figure of Liu et al. (ICLR 2019): its models, datasets, methods, ratios, budgets and
seeds, and how to shrink it. ``run_experiment(spec, scale)`` expands it into runs, executes them (finished
runs are reused from the store, so an interrupted run resumes), and writes a manifest that
``prune_nas.repro.report`` renders.

Spec format (YAML, ``version: 1``)::

    format: prune-nas.experiment          # optional; if present it must say this
    version: 1
    name: table4_slimming                 # output folder: <runs root>/<name>/<scale>/
    title: Network Slimming, fine-tuned vs trained from scratch
    paper: Table 4                        # the table / figure of the paper it reproduces
    kind: comparison                      # comparison | widths | efficiency | kernels | guided
    description: ...                      # optional, shown in the report
    method: slimming                      # default method of every row
    rows:                                 # the paper's rows (used by scales that give no rows)
      - {dataset: cifar10, model: vgg19, ratio: 0.7,
         reported: {unpruned: 93.53, finetune: 93.60, scratch-e: 93.30, scratch-b: 93.81}}
    scales:                               # all three are required
      paper: {seeds: 5, epochs: 160, finetune_epochs: 40}
      small: {seeds: 3, epochs: 40, finetune_epochs: 10}
      smoke: {dataset: digits, width: 0.125, input_size: 16, seeds: 2, epochs: 3, finetune_epochs: 1,
              rows: [{model: vgg11, ratio: 0.5}]}

Settings may be given at the top level (all scales), in a scale, or in a row; the most specific wins, except
``dataset`` in a scale, which *forces* every row's dataset (and a guided row's source dataset): that is how
``smoke`` maps the paper's CIFAR rows onto the embedded digits data. A scale's ``rows`` replace the top-level
rows. Settings:

==================  ==================================================================================
``seeds``           number of seeds (0..n-1, at most 100) or a list of seeds; a row's ``seeds: 1`` marks the
                    paper's single runs (ImageNet)
``epochs``          base epochs: the large model and Scratch-E (default: 160, ImageNet 90)
``finetune_epochs`` fine-tuning epochs at lr 0.001 (default 40; the paper uses 20/10/5 on ImageNet)
``lr``              initial lr of the large model, the unpruned model and Scratch-E/B (default 0.1)
``lr_milestones``   epochs of the base schedule where the lr drops x0.1 (default 50%/75%; ImageNet every 30);
                    Scratch-B stretches them with its epochs
``dataset``         digits, synthetic, cifar10, cifar100, imagenet
``width``           width multiplier of the large model (default 1)
``input_size``      input resolution (default: the model's, 32 CIFAR / 224 ImageNet)
``budgets``         comparison columns: any of pruned (no fine-tuning), finetune, scratch-e, scratch-b
                    (default: the last three)
``budget``          efficiency / guided curves: scratch-e (default) or scratch-b
``cap``             Scratch-B cap on the FLOPs ratio: a number, ``none``, or ``imagenet`` (2; the default
                    on ImageNet)
``ratios``          efficiency / guided: pruning ratios, one point of each curve per ratio
``series``          efficiency / guided curves: any of pruned, uniform, guided, transferred
``source``          guided: ``<model>-<dataset>`` whose pattern is transferred (e.g. vgg16-cifar10)
``layout``          comparison: ``absolute`` accuracies, or ``relative`` to the unpruned model (Tables 2, 3)
``note``            a sentence shown under the report's table (e.g. what the scale cannot show)
==================  ==================================================================================

Row keys: ``model``, ``dataset``, ``method``, ``ratio`` or ``config`` (shortcuts for the method's parameters),
``params`` (pinned method parameters, as ``prune-nas methods`` lists them), ``label`` (how the report names
the row), ``reported`` (the paper's numbers: unpruned, finetune, scratch-e, scratch-b, and for Tables 2-3
unpruned_original, the original paper's baseline of its fine-tuned column; each a number or ``{mean, std,
source, note}``, source saying whether a disputed number follows the paper or the reference code's README),
and the settings ``seeds``, ``epochs``, ``finetune_epochs``, ``width``, ``input_size``, ``cap``, ``lr`` (the
initial learning rate of the large model and of the runs trained from scratch; fine-tuning keeps its 0.001),
``lr_milestones``, ``ratios``, ``source``. A row may also set ``init``: ``scratch`` (default, a fresh
initialisation) or ``winning_ticket`` (a comparison row's Scratch-E / Scratch-B runs start from the large
model's original initialisation, sliced to the kept channels or masked: ``prune_nas.design.ticket``;
Section 6).

The JSON Schema ``prune_nas/core/schema/spec.schema.json`` (:func:`schema`) holds every key, type and bound
(finite positive numbers, at most 100 seeds, unknown keys rejected); it is checked before anything else.

Kinds, and the runs each row expands into (per seed):

* ``comparison`` (Tables 1-6): prune (train the large model, or reuse it, then prune), the unpruned model
  (the large model itself when the method trains it plainly, else a plain training of it), then fine-tune
  the inherited weights, Scratch-E and Scratch-B of the pruned architecture. Rows built in code may also set
  ``baselines`` (uniform pruning at the pruned genome's params / FLOPs, a random architecture at its params,
  each Scratch-B) and ``prune_once`` (prune with the first seed only): ``prune-nas evaluate`` is such a row.
* ``widths`` (Table 8): prune; then mine the kept widths per layer (``prune_nas.design.mining``).
* ``kernels`` (Figure 4): prune with a non-structured method; then mine the 3x3 kernel keep maps.
* ``efficiency`` (Figure 3): per ratio, prune, train the pruned architecture from scratch, and train uniform
  pruning at the same parameter count (channels: ``baselines.match_params``; weights: the same density in
  every layer); accuracy vs params.
* ``guided`` (Figure 5): as ``efficiency``, plus Guided Pruning / Sparsifying (the stage pattern of the
  pruned runs applied at their size) and the pattern transferred from ``source``
  (``prune_nas.design.transfer``).

A user error in a spec (unknown key, model, method, dataset, missing scale, bad value) is one line naming the
file and the field, e.g. ``experiments/x.yaml: scales.smoke.rows[0].model: unknown model 'vgg99'``.

Outputs of ``run_experiment`` in ``<runs root>/<name>/<scale>/`` (runs root: ``$PRUNE_NAS_HOME/runs``, else
``artifacts/runs``): ``manifest.json`` (written atomically after every run: the spec, the scale, every run's
key and result, versions, hardware, wall time), ``genomes/`` (pruned, uniform, guided and transferred genomes,
inherited weights, masks) and ``patterns/`` (mined patterns). Training records live in the store
(``prune_nas.training.store``), keyed by their run spec, so the same run in two experiments trains once.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from prune_nas.core.errors import UserError
from prune_nas.core.paths import bundled_dir, output_dir
from prune_nas.core.schemas import first_error, validator

FORMAT = "prune-nas.experiment"
VERSION = 1
MANIFEST_FORMAT = "prune-nas.experiment-run"
MANIFEST_VERSION = 1
KINDS = ("comparison", "widths", "efficiency", "kernels", "guided")
SCALES = ("smoke", "small", "paper")
BUDGETS = ("pruned", "finetune", "scratch-e", "scratch-b")
# "pruned" (the pruned model with its inherited weights, not trained further) is asked for by name: Sparse
# Structure Selection's column.
DEFAULT_BUDGETS = ("finetune", "scratch-e", "scratch-b")
SERIES = ("pruned", "uniform", "guided", "transferred")
# Comparison rows may also train, per seed and at Scratch-B, architectures matched to that seed's pruned
# genome: uniform pruning at its params or FLOPs, and a random architecture at its params
# (``prune-nas evaluate``).
BASELINES = ("uniform-params", "uniform-flops", "random-params")

DEFAULT_SERIES = {"efficiency": ("pruned", "uniform"), "guided": SERIES}


def default_runs_root() -> Path:
    return output_dir("runs")


# ---- specs -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One row of a table (or one panel of a figure) at one scale, every setting resolved."""

    index: int
    model: str
    dataset: str
    method: str
    params: dict  # the method's parameters as given (ratio / config included)
    label: str
    seeds: tuple[int, ...]
    epochs: int
    finetune_epochs: int
    width: float = 1.0
    input_size: int | None = None
    cap: float | None = None
    budgets: tuple[str, ...] = DEFAULT_BUDGETS
    budget: str = "scratch-e"
    ratios: tuple[float, ...] = ()
    series: tuple[str, ...] = ()
    source: tuple[str, str] | None = None  # (model, dataset) of a transferred pattern
    reported: dict = field(default_factory=dict)
    lr: float | None = None  # initial lr of the large model and the scratch runs (None: the protocol's 0.1)
    lr_milestones: tuple[int, ...] = ()  # epochs of the base schedule; (): the dataset's protocol
    init: str = "scratch"  # how Scratch-E / Scratch-B runs start: scratch or winning_ticket
    baselines: tuple[str, ...] = ()  # comparison: any of BASELINES (set in code, e.g. by evaluate)
    prune_once: bool = False  # comparison: prune with the first seed only; every seed trains that genome

    @property
    def ratio(self) -> float | None:
        r = self.params.get("ratio")
        return float(r) if r is not None else None

    def base_genome(self, model: str | None = None, dataset: str | None = None):
        """The (possibly narrow) unpruned model the row prunes: ``width`` x the named model, at the row's
        input size, with the dataset's classes."""
        from prune_nas.core.genome import base_genome, model_spec
        from prune_nas.training.data import NUM_CLASSES

        model, dataset = model or self.model, dataset or self.dataset
        g = base_genome(model, num_classes=NUM_CLASSES[dataset], input_size=self.input_size or
                        model_spec(model).input_size, width_mult=self.width)
        if self.width != 1.0:  # discover names its narrow references this way; mining finds them by width
            g = replace(g, name=f"{model}-x{self.width:g}-{dataset}")
        return g

    def protocol(self):
        """The large model's and Scratch-E's protocol: the method's for the dataset (``Method.protocol``: the
        paper's, or the method's reference code's), at the row's epochs (what
        ``discover`` trains the large model with)."""
        from prune_nas.methods import get_method

        overrides: dict[str, Any] = {"epochs": self.epochs}
        if self.lr is not None:
            overrides["lr"] = self.lr
        if self.lr_milestones:  # as fractions of the epochs, so Scratch-B stretches them with its epochs
            overrides.update(lr_steps=tuple(m / self.epochs for m in self.lr_milestones), lr_step_every=None)
        return get_method(self.method).protocol(self.dataset, self.model, **overrides)

    def finetune_protocol(self):
        from prune_nas.training.protocol import Protocol

        return Protocol.finetune(self.protocol(), epochs=self.finetune_epochs)

    def schedule(self) -> dict:
        """The row's training settings as ``--dry-run`` shows them: seeds, the base schedule (epochs, lr and
        the epochs where it drops, batch), fine-tuning, and the Scratch-B rule."""
        p, f = self.protocol(), self.finetune_protocol()
        return {"seeds": list(self.seeds), "epochs": p.epochs, "lr": p.lr, "lr_milestones": p.lr_milestones(),
                "lr_gamma": p.lr_gamma, "batch_size": p.batch_size, "weight_decay": p.weight_decay,
                "finetune_epochs": f.epochs, "finetune_lr": f.lr,
                "scratch_b": {"base_epochs": p.epochs, "cap": self.cap,
                              "max_epochs": int(p.epochs * self.cap) if self.cap is not None else None}}

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in ("seeds", "budgets", "ratios", "series", "lr_milestones", "baselines"):
            d[k] = list(d[k])
        d["source"] = "-".join(self.source) if self.source else None
        return d


@dataclass(frozen=True)
class Plan:
    """A spec at one scale: its rows and how many runs they expand into."""

    spec: Spec
    scale: str
    rows: tuple[Row, ...]
    layout: str = "absolute"
    note: str = ""

    def total_runs(self) -> int:
        return sum(runs_of(self.spec.kind, r) for r in self.rows)

    def to_dict(self) -> dict:
        return {"scale": self.scale, "layout": self.layout, "note": self.note,
                "rows": [r.to_dict() for r in self.rows], "total_runs": self.total_runs()}


def runs_of(kind: str, row: Row) -> int:
    """Units of work a row expands into (each a pruning run or a training run), for the progress bar."""
    n = len(row.seeds)
    if kind == "comparison":
        prunes = 1 if row.prune_once else n
        return prunes + n * (1 + len(row.budgets) + len(row.baselines))  # unpruned, budgets, baselines
    if kind in ("widths", "kernels"):
        return n
    per_ratio = n * (1 + len(row.series))  # prune, then one training per series
    if "transferred" in row.series:
        per_ratio += n  # prune the source model
    if "uniform" in row.series and _is_sparse(row.method):
        per_ratio += n  # the uniform masks are a (training-free) pruning run
    return per_ratio * len(row.ratios)


def _is_sparse(method: str) -> bool:
    """Whether the method prunes weights, not channels (``Method.structured`` is False)."""
    from prune_nas.methods import get_method

    return not get_method(method).structured


@dataclass(frozen=True)
class Spec:
    """A parsed, validated experiment spec. ``raw`` is the YAML as read."""

    name: str
    title: str
    paper: str
    kind: str
    description: str
    path: Path | None
    raw: dict

    def plan(self, scale: str) -> Plan:
        if scale not in SCALES:
            raise UserError(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}")
        return _plan(self, scale)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True, default=str).encode()).hexdigest()


def load_spec(path: str | os.PathLike) -> Spec:
    """Read and validate a spec file (every scale is planned, so a bad value anywhere is found now)."""
    from prune_nas.core.userfiles import read_yaml

    path = resolve_spec_path(path)
    raw = read_yaml(path, "experiment spec")
    return parse_spec(raw, path)


@lru_cache(maxsize=1)
def schema() -> dict:
    """The spec's JSON Schema (``prune_nas/core/schema/spec.schema.json``): every key, type and bound."""
    return validator("spec").schema


def parse_spec(raw: Any, path: str | os.PathLike | None = None) -> Spec:
    """Validate ``raw`` (a parsed YAML spec): first against the JSON Schema (keys, types, bounds, finite
    numbers), then the names against the registries and every scale's plan. Errors are one line naming the
    file and the field."""
    where = str(path) if path is not None else "experiment spec"

    def fail(fld: str, problem: str):
        raise UserError(f"{where}: {fld}: {problem}" if fld else f"{where}: {problem}")

    if not isinstance(raw, dict):
        fail("", "the spec must be a YAML mapping")
    bad = first_error(raw, "spec")
    if bad is not None:
        fail(*bad)
    for s in SCALES:
        if raw["scales"][s] is None:
            raw["scales"][s] = {}
    spec = Spec(name=raw["name"], title=raw["title"].strip(), paper=raw["paper"].strip(), kind=raw["kind"],
                description=str(raw.get("description") or "").strip(), path=Path(path) if path else None,
                raw=raw)
    for s in SCALES:
        _plan(spec, s)
    return spec


# ---- plans ------------------------------------------------------------------------------------------------
def _plan(spec: Spec, scale: str) -> Plan:
    raw = spec.raw
    where = str(spec.path) if spec.path else "experiment spec"

    def fail(fld: str, problem: str):
        raise UserError(f"{where}: {fld}: {problem}")

    sc = raw["scales"][scale] or {}
    rows_raw, rows_at = (sc["rows"], f"scales.{scale}.rows") if "rows" in sc else (raw.get("rows"), "rows")
    if not rows_raw:
        fail(rows_at, f"needs at least one row (at the top level or in scales.{scale})")
    layout = _pick("layout", sc, raw, "absolute")
    rows = [_row(spec, scale, i, r, sc, f"{rows_at}[{i}]", fail) for i, r in enumerate(rows_raw)]
    return Plan(spec, scale, tuple(rows), layout, str(_pick("note", sc, raw, "") or ""))


def _pick(key: str, sc: dict, raw: dict, default=None, row: dict | None = None):
    for d in (row or {}, sc, raw):
        if key in d and d[key] is not None:
            return d[key]
    return default


def _row(spec: Spec, scale: str, index: int, r: dict, sc: dict, at: str, fail) -> Row:
    """One row at one scale, settings resolved (the schema has checked types and bounds): names against the
    registries, the kind's own rules, and the deep checks (the model builds, the method accepts it)."""
    from prune_nas.core.arch import MODELS
    from prune_nas.core.genome import model_spec
    from prune_nas.training.data import NUM_CLASSES

    raw = spec.raw

    def field_of(key: str) -> str:
        if key in r:
            return f"{at}.{key}"
        if key in sc:
            return f"scales.{scale}.{key}"
        return key

    def get(key: str, default=None):
        if key == "dataset" and sc.get("dataset") is not None:  # a scale's dataset forces every row's
            return sc["dataset"]
        return _pick(key, sc, raw, default, r)

    model = r["model"]
    if model not in MODELS:
        try:
            model_spec(model)
        except UserError as e:
            fail(f"{at}.model", str(e))
    dataset = get("dataset")
    if dataset is None:
        fail(f"{at}.dataset", "missing (give it in the row, the scale or at the top level)")
    if dataset not in NUM_CLASSES:
        fail(field_of("dataset"), f"unknown dataset {dataset!r}; known: {', '.join(NUM_CLASSES)}")
    method_name = get("method")
    if method_name is None:
        fail(f"{at}.method", "missing (give it in the row or at the top level)")
    from prune_nas.methods import get_method

    try:
        method = get_method(method_name)
    except UserError as e:
        fail(field_of("method"), str(e))
    params = dict(r.get("params") or {})
    for key in ("ratio", "config"):
        if key in r:
            params[key] = r[key]

    seeds_v = get("seeds", 1)
    seeds = tuple(range(seeds_v)) if isinstance(seeds_v, int) else tuple(int(s) for s in seeds_v)
    epochs = int(get("epochs", 90 if dataset == "imagenet" else 160))
    milestones = tuple(int(m) for m in get("lr_milestones", ()))
    if list(milestones) != sorted(milestones) or any(m >= epochs for m in milestones):
        fail(field_of("lr_milestones"), f"epochs in increasing order, each before the last epoch ({epochs}), "
                                        f"got {list(milestones)}")
    lr = get("lr")
    input_size = get("input_size")
    cap_v = get("cap", "imagenet" if dataset == "imagenet" else "none")
    if cap_v == "imagenet":
        from prune_nas.training.protocol import IMAGENET_RATIO_CAP

        cap = IMAGENET_RATIO_CAP
    else:
        cap = None if cap_v == "none" else float(cap_v)
    budgets = get("budgets", list(DEFAULT_BUDGETS))
    budget = get("budget", "scratch-e")
    kind = spec.kind
    ratios: tuple[float, ...] = ()
    series: tuple[str, ...] = ()
    source = None
    if kind in ("efficiency", "guided"):
        rv = get("ratios")
        if not rv:
            fail(field_of("ratios"), f"a {kind} row needs a list of pruning ratios")
        ratios = tuple(float(v) for v in rv)
        if "ratio" in params:
            fail(f"{at}.ratio", f"a {kind} row takes ratios (a list), not ratio")
        sv = get("series", list(DEFAULT_SERIES[kind]))
        if "pruned" not in sv:
            fail(field_of("series"), f"a list of {', '.join(SERIES)} that includes pruned, got {sv!r}")
        series = tuple(s for s in SERIES if s in sv)
        if "transferred" in series:
            src = get("source")
            if src is None:
                fail(field_of("source"), "the transferred series needs source: <model>-<dataset>")
            from prune_nas.design.transfer import parse_name

            try:
                s_model, s_dataset = parse_name(src)
            except UserError as e:
                fail(field_of("source"), str(e))
            if sc.get("dataset") is not None:
                s_dataset = sc["dataset"]
            source = (s_model, s_dataset)
    elif kind in ("widths", "kernels", "comparison"):
        for key in ("ratios", "source"):
            if key in r:
                fail(f"{at}.{key}", f"only efficiency and guided rows take {key}")
    if kind == "kernels" and not _is_sparse(method.name):
        fail(field_of("method"), "a kernels experiment needs a non-structured method (magnitude)")
    if kind == "comparison" and not method.needs_training:
        fail(field_of("method"), f"{method.name} inherits no weights, so it has no fine-tuned column")
    init = r.get("init", "scratch")
    if init != "scratch" and kind != "comparison":
        fail(f"{at}.init", "only comparison rows train from a winning ticket")
    row = Row(index=index, model=model, dataset=dataset, method=method.name, params=params,
              label=r.get("label") or _label(method.name, params), seeds=seeds, epochs=epochs,
              finetune_epochs=int(get("finetune_epochs", 40)), width=float(get("width", 1.0)),
              input_size=int(input_size) if input_size is not None else None,
              cap=cap, budgets=tuple(b for b in BUDGETS if b in budgets), budget=budget, ratios=ratios,
              series=series, source=source, reported=dict(r.get("reported") or {}),
              lr=float(lr) if lr is not None else None, lr_milestones=milestones, init=init)
    # The deep checks: the model builds at this input size, and the method accepts it with these parameters
    # (a generic model's: the method's generic variant, which takes its own parameters).
    try:
        base = row.base_genome()
        method = method.for_genome(base)
    except UserError as e:
        fail(at, str(e))
    known = [p.name for p in method.params]
    for k in params:
        if k not in known:
            fail(f"{at}.params.{k}" if k not in ("ratio", "config") else f"{at}.{k}",
                 f"method {method.name!r} has no parameter {k!r} (it takes: {', '.join(known) or 'none'})")
    try:
        if source is not None:
            row.base_genome(*source)
        for ratio in ratios or (None,):
            p = {**params, **({"ratio": ratio} if ratio is not None else {})}
            method.check(base, **p)
    except UserError as e:
        fail(at, str(e))
    return row


def _label(method: str, params: dict) -> str:
    if params.get("config"):
        return str(params["config"])
    if params.get("ratio") is not None:
        return f"{100 * float(params['ratio']):g}%"
    return method


# ---- running -----------------------------------------------------------------------------------------------
@dataclass
class _Context:
    plan: Plan
    out: Path
    store: Any
    device: str
    progress: bool
    data_dir: Any
    download: bool
    retry_failed: bool
    log: Callable[[str], None]
    manifest: dict
    engine: Any = "eager"
    genomes: Path | None = None  # where pruned genomes are read and written (default <out>/genomes)
    on_step: Callable[[dict], None] | None = None
    groups: Any = None  # independent groups of runs this process does (see spread.py), None: all of them
    bar: Any = None
    datasets: Any = None  # training.data.Datasets over data_dir / download
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        from prune_nas.training.data import Datasets

        self.datasets = Datasets(self.data_dir, self.download)

    def step(self, entry: dict) -> None:
        """Record one finished unit of work, save the manifest, advance the bar."""
        self.manifest["runs"].append(entry)
        done = len(self.manifest["runs"])
        self.manifest["progress"] = {"done": done, "total": self.manifest["progress"]["total"],
                                     "reused": sum(1 for e in self.manifest["runs"] if e.get("reused"))}
        self.save()
        if self.on_step is not None:
            self.on_step(entry)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"{entry['role']} {entry.get('genome') or ''} s{entry.get('seed')}"[:60])

    def selected(self, *group) -> bool:
        return self.groups is None or group in self.groups

    def save(self, status: str | None = None) -> None:
        from prune_nas.core.genome import atomic_write_text
        from prune_nas.training import distributed

        if not distributed.is_writer():  # the ranks of a --nproc launch: rank 0 alone writes the manifest
            return
        if self.groups is not None:  # several processes share the manifest: merge ours into it, locked
            from prune_nas.core.atomic import file_lock

            with file_lock(self.out / "manifest.json.lock"):
                merged = _merge_manifest(_previous_manifest(self.out / "manifest.json"), self.manifest)
                atomic_write_text(self.out / "manifest.json",
                                  json.dumps(merged, indent=1, default=_json) + "\n")
            return

        if status is not None:
            self.manifest["status"] = status
        self.manifest["wall_time_s"] = round(self.manifest.get("previous_wall_time_s", 0.0)
                                             + time.perf_counter() - self.started, 2)
        self.manifest["compute_time_s"] = round(sum(float(e.get("wall_time_s") or 0)
                                                    for e in self.manifest["runs"] if not e.get("reused")), 2)
        self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_text(self.out / "manifest.json",
                          json.dumps(self.manifest, indent=1, default=_json) + "\n")


def _merge_manifest(disk: dict, mine: dict) -> dict:
    """The manifest on disk with this process's runs and patterns added (an entry is replaced by ours when it
    is the same unit of work); the progress counts follow."""
    def merge(theirs: list, ours: list, fields: tuple) -> list:
        out = {tuple(str(e.get(f)) for f in fields): e for e in theirs}
        out.update({tuple(str(e.get(f)) for f in fields): e for e in ours})
        return list(out.values())

    if disk.get("spec", {}).get("sha256") != mine["spec"]["sha256"] or disk.get("scale") != mine["scale"]:
        disk = {}
    merged = {**mine, "status": "running",
              "runs": merge(disk.get("runs", []), mine["runs"],
                            ("role", "row", "seed", "ratio", "budget", "key")),
              "patterns": merge(disk.get("patterns", []), mine["patterns"], ("row", "role", "ratio", "file"))}
    merged["progress"] = {**mine["progress"], "done": len(merged["runs"]),
                          "reused": sum(1 for e in merged["runs"] if e.get("reused"))}
    merged["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return merged


def _json(o):
    if isinstance(o, Path):
        return o.as_posix()
    if isinstance(o, (set, tuple)):
        return list(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def hardware(device: str = "cpu") -> dict:
    """What ran the experiment: device name (CPU model and cores, or the GPU), torch threads, platform."""
    import torch

    from prune_nas.training.loop import _device_name

    return {"device": _device_name(device), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version()}


def versions() -> dict:
    import numpy
    import torch

    from prune_nas.core.version import __version__

    return {"prune_nas": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def run_dir(spec: Spec, scale: str, root: str | os.PathLike | None = None) -> Path:
    from prune_nas.core.paths import slug, under

    return under(root if root is not None else default_runs_root(), slug(spec.name, "experiment spec name"),
                 slug(scale, "scale"))


def run_experiment(spec: Spec | Plan | str | os.PathLike, scale: str = "smoke", *, runs_root=None, store=None,
                   device: str = "cpu", progress: bool = True, data_dir=None, download: bool = False,
                   retry_failed: bool = False, engine: Any = "eager",
                   log: Callable[[str], None] | None = None, out_dir: str | os.PathLike | None = None,
                   genome_dir: str | os.PathLike | None = None,
                   on_step: Callable[[dict], None] | None = None, groups: Any = None) -> Path:
    """Run every run of ``spec`` at ``scale``; returns the manifest path.

    Finished training runs come from the store and finished pruning runs from ``genomes/`` (when their
    settings match), so running again after an interruption resumes where it stopped. ``engine`` is the
    training engine of the training runs (``prune_nas.training.runs.run``: "eager" or "fast"); it is recorded,
    not part of the runs' keys.

    ``spec`` may also be a :class:`Plan` built in code (its own scale; ``prune-nas evaluate`` runs a one-row
    plan this way). ``out_dir`` replaces ``<runs root>/<name>/<scale>``, ``genome_dir`` the pruned genomes'
    folder ``<out>/genomes``; ``on_step`` is called with each manifest entry as it is recorded.
    """
    from tqdm.auto import tqdm

    from prune_nas.training import distributed
    from prune_nas.training.store import Store

    if isinstance(spec, Plan):
        plan, spec, scale = spec, spec.spec, spec.scale
    else:
        spec = spec if isinstance(spec, Spec) else load_spec(spec)
        plan = spec.plan(scale)
    store = store if store is not None else Store()
    if isinstance(store, (str, os.PathLike)):  # a Path has a .root too
        store = Store(store)
    out = Path(out_dir) if out_dir is not None else run_dir(spec, scale, runs_root)
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_manifest(out / "manifest.json")
    log = log or (lambda s: tqdm.write(s, file=sys.stderr))
    if not distributed.is_writer():  # rank 0 speaks for a --nproc launch
        log, progress = (lambda s: None), False
    manifest = {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "status": "running",
        "spec": {"name": spec.name, "title": spec.title, "paper": spec.paper, "kind": spec.kind,
                 "description": spec.description, "file": spec.path.as_posix() if spec.path else None,
                 "sha256": spec.sha256(), "raw": spec.raw},
        "scale": scale, "plan": plan.to_dict(), "store": str(Path(store.root).resolve()),
        "progress": {"done": 0, "total": plan.total_runs(), "reused": 0}, "runs": [], "patterns": [],
        "versions": versions(), "hardware": {**hardware(device), "distributed": distributed.describe()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "previous_wall_time_s": previous.get("wall_time_s", 0.0) if previous.get("spec", {}).get("sha256")
        == spec.sha256() else 0.0,
    }
    ctx = _Context(plan, out, store, device, progress, data_dir, download, retry_failed, log, manifest,
                   engine, Path(genome_dir) if genome_dir is not None else out / "genomes", on_step,
                   groups=groups)
    ctx.save()
    bar = tqdm(total=plan.total_runs(), desc=f"{spec.name} [{scale}]", unit="run", dynamic_ncols=True,
               disable=None if progress else True, position=0)
    ctx.bar = bar
    runner = {"comparison": _run_comparison, "widths": _run_patterns, "kernels": _run_patterns,
              "efficiency": _run_curves, "guided": _run_curves}[spec.kind]
    try:
        for row in plan.rows:
            runner(ctx, row)
    except KeyboardInterrupt:
        ctx.save("interrupted")
        raise
    except BaseException:
        ctx.save("failed")
        raise
    finally:
        bar.close()
    manifest.pop("previous_wall_time_s", None)
    ctx.save("complete" if groups is None else None)
    distributed.barrier()  # every rank returns once rank 0's last manifest is there
    return out / "manifest.json"


def _previous_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


# ---- units of work -----------------------------------------------------------------------------------------
def _hash(d: dict) -> str:
    from prune_nas.core.genome import _hash as h

    return h(json.loads(json.dumps(d, default=_json)))


def prune(ctx: _Context, row: Row, seed: int, *, method: str | None = None, params: dict | None = None,
          model: str | None = None, dataset: str | None = None, role: str = "prune",
          ratio: float | None = None) -> dict:
    """One pruning run through the methods' discover pipeline (``prune_nas.design.discover.discover``):
    train (or reuse) the large model, prune it, write the genome (+ inherited weights, masks) into
    ``genomes/``. A genome already there from the same settings is reused without pruning again (a
    ``<name>.run.json`` beside it records the settings' hash). Returns the manifest entry."""
    from prune_nas.core.genome import atomic_write_text, load_genome
    from prune_nas.design.discover import discover, method_params, regularizer, run_name
    from prune_nas.methods import get_method
    from prune_nas.training import distributed

    model, dataset = model or row.model, dataset or row.dataset
    base = row.base_genome(model, dataset)
    m = get_method(method or row.method).for_genome(base)
    given = dict(params if params is not None else row.params)
    full = method_params(m, given)
    if "seed" in full and given.get("seed") is None:
        full["seed"] = seed
    protocol = replace(row, dataset=dataset).protocol()
    folder = ctx.genomes
    name = run_name(model, row.width, dataset, m.name, full, seed, epochs=protocol.epochs,
                    input_size=base.input_size, lr=protocol.lr)
    path, side = folder / f"{name}.json", folder / f"{name}.run.json"
    key = _hash({"base": base.arch_dict(), "dataset": dataset, "protocol": protocol.to_dict(),
                 "method": m.name, "params": full, "seed": seed})
    entry = {"role": role, "row": row.index, "seed": seed,
             "ratio": ratio if ratio is not None else full.get("ratio"), "method": m.name, "model": model,
             "dataset": dataset, "genome": name, "key": key, "genome_file": _relative(path, ctx.out)}
    old = distributed.broadcast(_previous_manifest(side))  # rank 0's files decide, so all ranks agree
    if distributed.broadcast(path.exists() and old.get("key") == key):
        return _finish_prune(ctx, entry, load_genome(path), base, old, reused=True,
                             wall=old.get("wall_time_s", 0.0))
    d = discover(m.name, model=model, dataset=dataset, seed=seed, width=row.width, epochs=row.epochs,
                 input_size=row.input_size, params=given, device=ctx.device, data_dir=ctx.data_dir,
                 protocol=protocol, download=ctx.download, out_dir=folder, store_root=ctx.store.root,
                 progress=ctx.progress, log=ctx.log)
    if d.path.resolve() != path.resolve():  # the name is discover's own run_name; a mismatch is a bug here
        raise RuntimeError(f"discover wrote {d.path}, expected {path}")
    large = dict(d.large) if d.large else None
    if large is not None and regularizer(m, d.base, full) is None:
        large["plain"] = True  # trained without a regularizer: it is the unpruned model
    info = {"key": key, "large": large, "notes": d.notes, "wall_time_s": d.wall_time_s}
    if distributed.is_writer():
        atomic_write_text(side, json.dumps(info, indent=1, default=_json) + "\n")
    return _finish_prune(ctx, entry, load_genome(path), base, info, reused=False, wall=d.wall_time_s)


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when it lies there, else absolute (``root / result`` finds it either
    way)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _finish_prune(ctx, entry, genome, base, info, *, reused: bool, wall: float) -> dict:
    from prune_nas.core.cost import count

    c, b = count(genome), count(base)
    entry.update({"genome_key": genome.key, "params": c.params, "flops": c.flops, "base_params": b.params,
                  "base_flops": b.flops, "large": info.get("large"), "notes": info.get("notes", []),
                  "reused": reused, "wall_time_s": wall, "status": "ok"})
    entry["_genome"] = genome  # in memory only (dropped before the manifest is written)
    ctx.step({k: v for k, v in entry.items() if k != "_genome"})
    return entry


def train(ctx: _Context, row: Row, genome, *, role: str, seed: int, budget: str, dataset: str | None = None,
          reference=None, ratio: float | None = None, extra: dict | None = None) -> dict:
    """One training run (``prune_nas.training.runs.run``), reused from the store when it already ran."""
    from prune_nas.training import distributed
    from prune_nas.training.protocol import Budget
    from prune_nas.training.runs import RunSpec, run

    dataset = dataset or row.dataset
    if budget == "finetune":
        protocol, b, init = row.finetune_protocol(), Budget("epochs"), "finetune"
    elif budget == "pruned":  # the inherited weights evaluated as they are: zero epochs of fine-tuning
        protocol, b, init = row.finetune_protocol().with_epochs(0), Budget("epochs"), "finetune"
    elif budget == "scratch-b":
        protocol, b, init = row.protocol(), Budget("flops", reference=reference, cap=row.cap), row.init
    else:
        protocol, b, init = row.protocol(), Budget("epochs"), row.init
    if init == "winning_ticket" and role != "unpruned":
        from prune_nas.design.ticket import attach_ticket

        ticket = genome.source_dir / f"{genome.name}.ticket.pt"
        genome = distributed.on_writer(lambda: attach_ticket(genome, ticket))  # it writes the ticket
    elif init == "winning_ticket":
        init = "scratch"  # the unpruned model is the large model itself, trained from its own init
    spec = RunSpec(genome, dataset, protocol, b, seed, init)
    found = ctx.store.get(spec.key)
    reused = found is not None and (found.get("status") == "ok" or not ctx.retry_failed)
    reused = distributed.broadcast(reused)  # rank 0's store decides, as in run()
    data = None if reused else ctx.datasets(dataset, genome)
    rec = run(spec, ctx.store, device=ctx.device, progress=ctx.progress, dataset=data, engine=ctx.engine,
              retry_failed=ctx.retry_failed, desc=f"{role} {genome.name or genome.key} s{seed}")
    entry = {"role": role, "row": row.index, "seed": seed, "ratio": ratio, "budget": budget, "init": init,
             "genome": genome.name or genome.key, "genome_key": genome.key, "key": rec["key"],
             "store": "runs", "status": rec["status"],
             "reason": rec.get("reason"), "final_top1": rec.get("final_top1"),
             "best_top1": rec.get("best_top1"),
             "final_top5": rec.get("final_top5"), "epochs": rec.get("epochs"), "params": rec.get("params"),
             "flops": rec.get("flops"), "wall_time_s": rec.get("wall_time_s"), "device": rec.get("device"),
             "reused": reused, **(extra or {})}
    ctx.step(entry)
    return entry


def _run_comparison(ctx: _Context, row: Row) -> None:
    from prune_nas.design.discover import regularizer
    from prune_nas.methods import get_method

    base = row.base_genome()
    plain = regularizer(get_method(row.method).for_genome(base), base, dict(row.params)) is None
    once = prune(ctx, row, row.seeds[0]) if row.prune_once else None
    for seed in row.seeds:
        if not ctx.selected(row.index, seed):
            continue
        p = once or prune(ctx, row, seed)
        genome = p["_genome"]
        large = p.get("large") or {}
        if plain and large.get("test_top1") is not None and p["seed"] == seed:
            # The large model was trained plainly under the row's protocol and this seed: it is the unpruned
            # model.
            ctx.step({"role": "unpruned", "row": row.index, "seed": seed, "genome": base.name or row.model,
                      "genome_key": base.key, "key": large.get("key"), "store": "large", "status": "ok",
                      "final_top1": large["test_top1"], "epochs": large.get("epochs"),
                      "params": p["base_params"], "flops": p["base_flops"],
                      "wall_time_s": large.get("wall_time_s"), "reused": True})
        else:
            train(ctx, row, base, role="unpruned", seed=seed, budget="scratch-e")
        for budget in row.budgets:
            train(ctx, row, genome, role=budget, seed=seed, budget=budget, reference=base)
        for kind_ in row.baselines:
            train(ctx, row, matched_baseline(kind_, base, genome, seed), role=kind_, seed=seed,
                  budget="scratch-b", reference=base)


def matched_baseline(kind: str, base, pruned, seed: int):
    """The architecture a comparison row's baseline ``kind`` (one of BASELINES) trains for ``seed``: uniform
    pruning of ``base`` at ``pruned``'s params or FLOPs, or a random architecture (drawn from ``seed``) at its
    params; for a sparse genome, densities instead of channels (``prune_nas.methods.baselines``)."""
    from prune_nas.methods.baselines import random_matched, uniform_matched

    what, metric = kind.split("-")
    if what == "uniform":  # one architecture for every seed
        return uniform_matched(base, pruned, metric).replace(name=f"{base.name or base.model}-{kind}")
    return random_matched(base, pruned, seed, metric).replace(
        name=f"{base.name or base.model}-{kind}-s{seed}")


def _run_patterns(ctx: _Context, row: Row) -> None:
    from prune_nas.design.mining import figure_paths, mine_genomes, save_pattern
    from prune_nas.training import distributed

    if not ctx.selected(row.index):
        return
    entries = [prune(ctx, row, seed) for seed in row.seeds]
    if not distributed.is_writer():  # a --nproc launch: rank 0 writes the pattern
        return
    pattern = mine_genomes([e["_genome"] for e in entries],
                           [str(ctx.out / e["genome_file"]) for e in entries])
    path = ctx.out / "patterns" / f"row{row.index}-{pattern.label()}.pattern.json"
    save_pattern(pattern, path)
    ctx.manifest["patterns"].append({"row": row.index, "role": "pattern", "ratio": row.ratio,
                                     "file": path.relative_to(ctx.out).as_posix(),
                                     "figures": {k: v.relative_to(ctx.out).as_posix()
                                                 for k, v in figure_paths(path).items()}})
    ctx.save()


def _run_curves(ctx: _Context, row: Row) -> None:
    """Efficiency / guided rows: per ratio, the pruned runs and the architectures they are compared with."""
    from prune_nas.core.cost import count
    from prune_nas.methods.baselines import match_params

    base = row.base_genome()
    ref_params = count(base).params
    sparse = _is_sparse(row.method)
    for ratio in row.ratios:
        if not ctx.selected(row.index, ratio):
            continue
        params = {**row.params, "ratio": ratio}
        pruned = [prune(ctx, row, seed, params=params, ratio=ratio) for seed in row.seeds]
        mean_params = statistics.fmean(e["params"] for e in pruned)
        size = min(1.0, mean_params / ref_params)
        designs: dict[str, Any] = {}
        if "guided" in row.series:
            designs["guided"] = _design(ctx, row, ratio, pruned, base, size, "guided")
        if "transferred" in row.series:
            s_model, s_dataset = row.source
            src = [prune(ctx, row, seed, params=params, model=s_model, dataset=s_dataset, role="prune-source",
                         ratio=ratio) for seed in row.seeds]
            designs["transferred"] = _design(ctx, row, ratio, src, base, size, "transferred")
        for seed, p in zip(row.seeds, pruned):
            train(ctx, row, p["_genome"], role="pruned", seed=seed, budget=row.budget, reference=base,
                  ratio=ratio)
        if "uniform" in row.series:
            if sparse:
                for seed in row.seeds:
                    u = prune(ctx, row, seed, method="uniform", params={"ratio": ratio, "sparsity": True},
                              role="prune-uniform", ratio=ratio)
                    train(ctx, row, u["_genome"], role="uniform", seed=seed, budget=row.budget,
                          reference=base, ratio=ratio)
            else:
                u = match_params(base, round(mean_params))
                u = u.replace(name=f"{base.name or row.model}-uniform-p{u.key[:6]}",
                              provenance={"method": "uniform", "matched_params": round(mean_params)})
                for seed in row.seeds:
                    train(ctx, row, u, role="uniform", seed=seed, budget=row.budget, reference=base,
                          ratio=ratio)
        for kind_, g in designs.items():
            for seed in row.seeds:
                train(ctx, row, g, role=kind_, seed=seed, budget=row.budget, reference=base, ratio=ratio,
                      extra={"size": size})


def _design(ctx: _Context, row: Row, ratio: float, runs: list[dict], target, size: float, kind: str):
    """Mine the pattern of ``runs`` and build the guided (or transferred) genome of ``target`` at ``size``."""
    from prune_nas.design.mining import mine_genomes, save_pattern
    from prune_nas.design.transfer import generate
    from prune_nas.training import distributed

    if not distributed.is_writer():  # a --nproc launch: rank 0 mines and writes, the others take its genome
        return distributed.broadcast(None)
    pattern = mine_genomes([e["_genome"] for e in runs], [str(ctx.out / e["genome_file"]) for e in runs])
    stem = f"row{row.index}-{kind}-{pattern.label()}-r{ratio:g}"
    ppath = ctx.out / "patterns" / f"{stem}.pattern.json"
    save_pattern(pattern, ppath)
    ((path, genome, info),) = generate(pattern, target, [size], ctx.out / "genomes", stem,
                                       sparse=_is_sparse(row.method), by="params", seed=0, kind=kind,
                                       pattern_file=ppath.relative_to(ctx.out).as_posix())
    ctx.manifest["patterns"].append({"row": row.index, "role": kind, "ratio": ratio,
                                     "file": ppath.relative_to(ctx.out).as_posix(),
                                     "genome_file": path.relative_to(ctx.out).as_posix(),
                                     "size": size, "achieved": info.get("achieved")})
    ctx.save()
    return distributed.broadcast(genome)


def load_manifest(path: str | os.PathLike) -> dict:
    """A run folder's manifest (``path`` is the folder or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    from prune_nas.core.userfiles import read_json

    m = read_json(path, "experiment manifest", "run `prune-nas run <spec> --scale ...` first")
    if not isinstance(m, dict):
        raise UserError(f"{path} is not an experiment manifest")
    if m.get("format") != MANIFEST_FORMAT:
        raise UserError(f"{path} is not a prune-nas experiment manifest")
    if m.get("version") != MANIFEST_VERSION:
        raise UserError(f"{path}: manifest version {m.get('version')!r} is not supported (this is "
                        f"{MANIFEST_VERSION})")
    return m


def spec_files(folder: str | os.PathLike | None = None) -> list[Path]:
    """The spec files in ``folder`` (default: the specs shipped with the package)."""
    return sorted(Path(folder if folder is not None else bundled_dir("experiments")).glob("*.yaml"))


def resolve_spec_path(ref: str | os.PathLike) -> Path:
    """A spec file path as given, else a bundled spec by name (``table4_slimming``)."""
    path = Path(ref)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) != 1:
        return path
    bundled = bundled_dir("experiments") / f"{path.name}.yaml"
    if bundled.is_file():
        return bundled
    known = ", ".join(p.stem for p in spec_files())
    raise UserError(f"{str(ref)!r} is not a spec file or a bundled spec name (bundled: {known})")
