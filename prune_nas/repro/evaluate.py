"""One row of the paper's tables: a pruning method against training its architecture from scratch.

For a method M on model X / dataset D at ratio r, with N seeds:

* the pruned genome and its inherited weights come from the methods' discover pipeline (found once, with
  seed 0, written under ``<out root>/genomes/``; an existing genome file from the same settings is reused, and
  so is the cached large model);
* every row trains N seeds through ``train.run``, so each run is stored under its spec's hash and reused:

  ============== ===================================================================================
  unpruned        the large (unpruned) model, trained from scratch for the base epochs
  fine-tuned      the pruned model from its inherited weights, ``Protocol.finetune`` (lr 0.001; 40 of 160)
  Scratch-E       the pruned architecture from scratch, the base epochs
  Scratch-B       the pruned architecture from scratch, the large model's training FLOPs
  uniform (params) every layer at one kept fraction, params matched to the pruned genome, Scratch-B
  uniform (FLOPs)  the same with FLOPs matched, Scratch-B
  random (params)  random per-layer fractions (one draw per seed), scaled to the same params, Scratch-B
  ============== ===================================================================================

  For a sparse (weight-level) genome the uniform and random rows prune weights, not channels: one density
  for every conv layer, or random per-layer densities, matched the same way.

Statistics: mean and sample standard deviation (n - 1) of the final test top-1 over the seeds; the best mean
among the pruned-size rows (all but ``unpruned``) is bold; Welch's two-sided t-test
(``scipy.stats.ttest_ind(equal_var=False)``) of Scratch-B against fine-tuned, uniform (params) and random
(params), with "n/a" when a side has fewer than two finished runs or neither side varies.

With no arguments, :func:`evaluate` runs the embedded default: Network Slimming (ratio 0.5) on the bundled
digits data at 16x16, a VGG-11 at a quarter of its widths, 10 base epochs (Network Slimming needs about 10 there
to zero a share of the BN scales, see ``methods/slimming.py``; with 5 no s both keeps the large model and
sparsifies it), fine-tuning 5 (a quarter of 10 is too few to recover a pruned model) and 3 seeds: about 5.5
minutes on two CPU cores.
The table is written as Markdown, CSV and JSON under ``$PRUNE_NAS_HOME/runs/evaluate/<name>/`` (else
``artifacts/runs/evaluate/<name>/``) with how it was produced: command, versions, hardware, wall time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from prune_nas.core.errors import UserError
from prune_nas.core.paths import output_dir

if TYPE_CHECKING:
    from prune_nas.core.genome import Genome

ROWS = ("unpruned", "fine-tuned", "Scratch-E", "Scratch-B", "uniform (params)", "uniform (FLOPs)",
        "random (params)")
BASELINE_ROW = "unpruned"
COMPARISONS = (("Scratch-B", "fine-tuned"), ("Scratch-B", "uniform (params)"),
               ("Scratch-B", "random (params)"))
TEST_NAME = "Welch's two-sided t-test (scipy.stats.ttest_ind, equal_var=False)"
# The embedded default: small enough for a CPU in minutes. Elsewhere: the paper's protocol and 5 seeds.
SHORT = {"digits": {"width": 0.25, "epochs": 10, "finetune_epochs": 5, "seeds": 3},
         "synthetic": {"width": 0.125, "epochs": 2, "finetune_epochs": 2, "seeds": 2}}
PAPER_SEEDS = 5


# ---- statistics ------------------------------------------------------------------------------------------
@dataclass
class Row:
    label: str
    genome: str  # name, or the key
    genome_key: str
    params: int
    flops: int
    budget: str  # Scratch-E / Scratch-B / fine-tune
    epochs: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)  # final test top-1 of each finished run (fractions)
    runs: int = 0
    failed: list[str] = field(default_factory=list)
    run_keys: list[str] = field(default_factory=list)
    note: str = ""
    latency_ms: float | None = None  # with latency=True: batch-1 median on the evaluating device

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        if not self.values:
            return None
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def cell(self) -> str:
        """'93.51 ± 0.12' in percent, or '-' when no run finished."""
        if self.mean is None:
            return "-"
        return f"{100 * self.mean:.2f} ± {100 * self.std:.2f}"

    def epochs_text(self) -> str:
        if not self.epochs:
            return "-"
        lo, hi = min(self.epochs), max(self.epochs)
        return str(lo) if lo == hi else f"{lo}-{hi}"

    def to_dict(self) -> dict:
        return {"row": self.label, "genome": self.genome, "genome_key": self.genome_key,
                "params": self.params, "flops": self.flops, "budget": self.budget, "epochs": self.epochs,
                "values": self.values, "runs": self.runs, "finished": len(self.values), "failed": self.failed,
                "mean": self.mean, "std": self.std, "run_keys": self.run_keys, "note": self.note,
                "latency_ms": self.latency_ms}


@dataclass
class Test:
    a: str
    b: str
    n_a: int
    n_b: int
    statistic: float | None = None
    pvalue: float | None = None
    diff: float | None = None  # mean(a) - mean(b), fractions
    reason: str = ""  # why there is no p-value

    def text(self) -> str:
        if self.pvalue is None:
            return f"{self.a} vs {self.b}: n/a ({self.reason})"
        return (f"{self.a} vs {self.b}: {100 * self.diff:+.2f} points, t = {self.statistic:.3f}, "
                f"p = {self.pvalue:.3g} (n = {self.n_a}, {self.n_b})")

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "n_a": self.n_a, "n_b": self.n_b, "statistic": self.statistic,
                "pvalue": self.pvalue, "mean_difference": self.diff, "reason": self.reason or None,
                "test": TEST_NAME}


def welch(a: str, va: list[float], b: str, vb: list[float]) -> Test:
    """Welch's t-test of two rows' accuracies (two-sided); n/a below two runs a side or without variance."""
    from scipy import stats

    t = Test(a, b, len(va), len(vb))
    if len(va) < 2 or len(vb) < 2:
        t.reason = "needs at least 2 finished runs on each side"
        return t
    t.diff = statistics.fmean(va) - statistics.fmean(vb)
    if statistics.pvariance(va) == 0 and statistics.pvariance(vb) == 0:
        t.reason = "no variance on either side"
        return t
    with warnings.catch_warnings():  # nearly equal samples: scipy warns about precision, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(va, vb, equal_var=False)
    if not math.isfinite(float(res.pvalue)):
        t.reason = "undefined"
        return t
    t.statistic, t.pvalue = float(res.statistic), float(res.pvalue)
    return t


@dataclass
class Comparison:
    """The table: rows, tests, and how it was produced (``meta``)."""

    title: str
    rows: list[Row]
    tests: list[Test]
    meta: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def best(self) -> set[str]:
        """Labels of the rows with the best mean among the pruned-size rows (ties: all of them)."""
        means = [r.mean for r in self.rows if r.label != BASELINE_ROW and r.mean is not None]
        if not means:
            return set()
        top = max(means)
        return {r.label for r in self.rows if r.label != BASELINE_ROW and r.mean is not None
                and abs(r.mean - top) < 1e-12}

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)

    def headers(self) -> list[str]:
        timed = any(r.latency_ms is not None for r in self.rows)
        return ["", "genome", "params", "FLOPs", "budget", "epochs", "runs", "top-1 % (mean ± std)"] + \
            (["ms (batch 1)"] if timed else [])

    def cells(self, bold: str | None = "md") -> list[list[str]]:
        """Table cells; ``bold`` marks the best: "md" (``**x**``), "ansi" (terminal bold) or None."""
        best = self.best()
        out = []
        for r in self.rows:
            v = r.cell()
            if r.label in best:
                v = f"**{v}**" if bold == "md" else f"\033[1m{v}\033[0m" if bold == "ansi" else v
            runs = f"{len(r.values)}/{r.runs}" if r.runs else "-"
            out.append([r.label, r.genome, _human(r.params), _human(r.flops), r.budget, r.epochs_text(), runs,
                        v] + ([f"{r.latency_ms:.3f}"] if r.latency_ms is not None else []))
        return out

    def footer(self) -> list[str]:
        seeds = self.meta.get("seeds")
        lines = [f"Final test top-1 (%), mean ± sample std over {seeds} seeds; bold: best mean among the "
                 f"pruned-size rows (all but {BASELINE_ROW}).",
                 f"Significance: {TEST_NAME}:"]
        lines += [f"  {t.text()}" for t in self.tests]
        lines += self.notes
        return lines

    def markdown(self, bold: str | None = "md") -> str:
        cells = self.cells(bold)
        heads = self.headers()
        visible = [[_visible_len(c) for c in row] for row in cells]
        widths = [max([len(h)] + [v[i] for v in visible]) for i, h in enumerate(heads)]
        right = {2, 3, 5, 6, 7, 8}

        def line(values, lens):
            parts = []
            for i, (v, n) in enumerate(zip(values, lens)):
                pad = " " * (widths[i] - n)
                parts.append(pad + v if i in right else v + pad)
            return "| " + " | ".join(parts) + " |"

        dashes = [("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)]
        sep = "|" + "|".join(dashes) + "|"
        out = [line(heads, [len(h) for h in heads]), sep]
        out += [line(c, v) for c, v in zip(cells, visible)]
        return "\n".join(out)

    def report(self, bold: str | None = "md") -> str:
        """Title, table, footer and provenance: the Markdown file's content."""
        m = self.meta
        prov = [f"Produced by `{m.get('command', '?')}` in {m.get('wall_time_s', 0):.0f} s on "
                f"{m.get('device', '?')} ({m.get('threads', '?')} threads); prune-nas {m.get('prune_nas')}, "
                f"torch {m.get('torch')}, scipy {m.get('scipy')}, Python {m.get('python')}; "
                f"{m.get('finished_at', '')}."]
        lines = [f"### {self.title}", "", self.markdown(bold), ""] + [f"{x}  " for x in self.footer()]
        return "\n".join(lines + [""] + prov) + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["row", "genome", "genome_key", "params", "flops", "budget", "epochs", "finished", "runs",
                    "mean_top1", "std_top1", "best", "values"])
        best = self.best()
        for r in self.rows:
            mean = "" if r.mean is None else f"{r.mean:.6f}"
            std = "" if r.std is None else f"{r.std:.6f}"
            w.writerow([r.label, r.genome, r.genome_key, r.params, r.flops, r.budget, r.epochs_text(),
                        len(r.values), r.runs, mean, std, int(r.label in best),
                        ";".join(f"{v:.6f}" for v in r.values)])
        return buf.getvalue()

    def to_dict(self) -> dict:
        return {"format": "prune-nas.comparison", "version": 1, "title": self.title,
                "rows": [r.to_dict() for r in self.rows], "best": sorted(self.best()),
                "tests": [t.to_dict() for t in self.tests], "notes": self.notes, "meta": self.meta}

    def write(self, folder: str | os.PathLike) -> dict[str, Path]:
        """``table.md``, ``table.csv`` and ``table.json`` in ``folder``, each written atomically."""
        from prune_nas.core.genome import atomic_write_text

        folder = Path(folder)
        paths = {"md": folder / "table.md", "csv": folder / "table.csv", "json": folder / "table.json"}
        atomic_write_text(paths["md"], self.report("md"))
        atomic_write_text(paths["csv"], self.csv())
        atomic_write_text(paths["json"], json.dumps(self.to_dict(), indent=1) + "\n")
        return paths


def _visible_len(s: str) -> int:
    import re

    return len(re.sub(r"\033\[[0-9;]*m", "", s))


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


# ---- matched baselines -----------------------------------------------------------------------------------
def match(make: Callable[[float], "Genome"], target: int, metric: str, hi: float = 1.0,
          iters: int = 40) -> "Genome":
    """The genome ``make(x)``, x in (0, hi], whose ``metric`` (params / flops) is closest to ``target``;
    ``make`` must grow with x. Bisection (:func:`~prune_nas.core.cost.match_factor`), then the closer side
    (the smaller on a tie)."""
    from prune_nas.core.cost import count, match_factor

    return make(match_factor(lambda x: getattr(count(make(x)), metric), target, 1e-9, hi, iters))


def uniform_matched(base: "Genome", pruned: "Genome", metric: str) -> "Genome":
    """Uniform pruning of ``base`` with the pruned genome's params or FLOPs: one kept fraction for every width
    group, or, for a sparse genome, one density for every conv layer (random mask, seed 0)."""
    from prune_nas.core.cost import count
    from prune_nas.methods.baselines import uniform_genome, uniform_sparsity_genome

    target = getattr(count(pruned), metric)
    if pruned.sparsity is not None:
        g = match(lambda d: uniform_sparsity_genome(base, d, 0), target, metric)
    else:
        g = match(lambda f: uniform_genome(base, f), target, metric)
    return g.replace(name=f"{base.name}-uniform-{metric}", provenance={"method": "uniform", "matched": metric,
                                                                       "target": target})


def random_matched(base: "Genome", pruned: "Genome", seed: int, metric: str = "params") -> "Genome":
    """A random architecture with the pruned genome's params: per-group kept fractions drawn uniformly from
    [0.1, 1] (numpy generator seeded with ``seed``), all scaled by one factor found by bisection (fractions
    capped at 1). For a sparse genome, random per-layer densities, scaled the same way."""
    import numpy as np

    from prune_nas.core.cost import count
    from prune_nas.core.genome import Sparsity, fit_selects
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
            widths = {g: max(1, int(round(base.widths[g] * min(1.0, c * f[g])))) for g in names}
            return base.replace(widths=fit_selects(base, widths))
    g = match(make, target, metric, hi=1.0 / min(f.values()))
    return g.replace(name=f"{base.name}-random-{metric}-{seed}",
                     provenance={"method": "random", "matched": metric, "target": target, "seed": seed})


# ---- the pipeline ----------------------------------------------------------------------------------------
def default_out_root() -> Path:
    return output_dir("runs", "evaluate")


def _discovered(method: str, *, model, dataset, ratio, width, epochs, input_size, params, device, data_dir,
                download, genome_dir, store_root, progress, log):
    """The pruned genome (seed 0), its base, the large model's accuracy, the genome's path and the dataset:
    an existing genome file of the discover pipeline's name is reused when it was pruned from the large model
    these settings train (same cache key: model, data, protocol, regularizer) with the same parameters, else
    ``discover`` runs (reusing its cached large model)."""
    from prune_nas.core.arch import get_spec
    from prune_nas.core.genome import base_genome, load_genome
    from prune_nas.design.discover import (
        default_input_size,
        default_model,
        discover,
        large_key,
        method_params,
        protocol_for,
        regularizer,
        run_name,
    )
    from prune_nas.methods import get_method
    from prune_nas.training.data import NUM_CLASSES, load_dataset

    m = get_method(method)
    given = dict(params or {})
    if ratio is not None:
        given["ratio"] = ratio
    full = method_params(m, given)
    if "seed" in full and "seed" not in given:
        full["seed"] = 0
    model = model or default_model(m, dataset)
    spec = get_spec(model)
    size = input_size or default_input_size(spec, dataset)
    base = base_genome(model, num_classes=NUM_CLASSES[dataset], input_size=size, width_mult=width)
    # Its own folder by default: evaluate's genomes stay apart from those of `prune-nas discover`.
    out = Path(genome_dir) if genome_dir is not None else default_out_root() / "genomes"
    protocol = protocol_for(dataset, epochs)
    path = out / f"{run_name(model, width, dataset, m.name, full, 0, epochs=protocol.epochs, input_size=size)}.json"
    m.check(base, **full)  # the user's mistakes before loading data
    data = load_dataset(dataset, data_dir=data_dir, download=download, input_size=base.input_size,
                        in_channels=base.in_channels)
    if path.exists():
        genome = load_genome(path)
        weights = genome.provenance.get("weights")
        origin = _pruned_from(genome)
        shown = {k: v for k, v in full.items() if v is not None and v != () and v is not False}
        large = origin.get("large_model") or {}
        if m.needs_training:
            reg = regularizer(m, base, full, protocol=protocol,
                              steps_per_epoch=data.steps_per_epoch(protocol.batch_size))
            same_large = large.get("key") == large_key(base, dataset, protocol, reg, 0)[0]
        else:
            same_large = True
        same = (genome.input_size == base.input_size and origin.get("genome") == base.key and same_large
                and json.dumps(genome.provenance.get("params") or {}, sort_keys=True, default=str)
                == json.dumps(shown, sort_keys=True, default=str))
        if same and (not weights or (genome.source_dir / weights["file"]).exists()):
            log(f"reusing the discovered genome {path}")
            return genome, _named_base(base, model, width, dataset), large.get("test_top1"), path, data
    d = discover(method, model=model, dataset=dataset, ratio=ratio, seed=0, width=width, epochs=epochs,
                 input_size=size, params=params, device=device, data_dir=data_dir, download=download,
                 out_dir=out, store_root=store_root, progress=progress, log=log, data=data)
    return d.genome, _named_base(d.base, model, width, dataset), (d.large or {}).get("test_top1"), d.path, data


def _pruned_from(genome: "Genome") -> dict:
    """What a discovered genome was pruned from (model, width, base genome key, large model), as recorded."""
    for k in ("pruned_from", "source"):
        v = genome.provenance.get(k)
        if isinstance(v, dict):
            return v
    return {}


def _named_base(base: "Genome", model: str, width: float, dataset: str) -> "Genome":
    return base.replace(name=f"{model}-x{width:g}" if width != 1 else model)


def evaluate(method: str = "slimming", *, model: str | None = None, dataset: str = "digits",
             ratio: float | None = None, seeds: int | None = None, width: float | None = None,
             epochs: int | None = None, finetune_epochs: int | None = None, input_size: int | None = None,
             params: dict | None = None,
             device: str = "cpu", store=None, genome_dir=None, data_dir=None, download: bool = False,
             progress: bool = False, log: Callable[[str], None] = print, command: str | None = None,
             out_dir: str | os.PathLike | None = None, write: bool = True,
             latency: bool = False) -> Comparison:
    """Discover (or reuse) the pruned genome, train every row over ``seeds`` seeds (reusing stored runs), and
    return the comparison; with ``write`` also save it under ``out_dir`` (default: see the module doc). With
    ``latency``, each row's model (seed 0's, for random rows) is also timed at batch 1 on ``device``."""
    import scipy
    import torch

    from prune_nas.core.cost import count
    from prune_nas.core.version import __version__
    from prune_nas.design.discover import protocol_for
    from prune_nas.training.data import NUM_CLASSES
    from prune_nas.training.loop import _device_name
    from prune_nas.training.protocol import Budget, Protocol
    from prune_nas.training.runs import RunSpec, run
    from prune_nas.training.store import Store

    start = time.perf_counter()
    if dataset not in NUM_CLASSES:
        raise UserError(f"unknown dataset {dataset!r}; known: {', '.join(NUM_CLASSES)}")
    short = SHORT.get(dataset, {})
    seeds = seeds if seeds is not None else short.get("seeds", PAPER_SEEDS)
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    width = float(width if width is not None else short.get("width", 1.0))
    if width <= 0:
        raise UserError(f"--width must be > 0, got {width:g}")
    epochs = epochs if epochs is not None else short.get("epochs")
    protocol = protocol_for(dataset, epochs)
    ft_epochs = finetune_epochs if finetune_epochs is not None else \
        short.get("finetune_epochs", max(1, round(protocol.epochs * 40 / 160)))
    if ft_epochs < 1:
        raise UserError(f"--finetune-epochs must be >= 1, got {ft_epochs}")
    store = store if isinstance(store, Store) else Store(store)

    pruned, base, large_acc, genome_path, data = _discovered(
        method, model=model, dataset=dataset, ratio=ratio, width=width, epochs=epochs, input_size=input_size,
        params=params,
        device=device, data_dir=data_dir, download=download, genome_dir=genome_dir, store_root=store.root,
        progress=progress, log=log)
    scratch_e = Budget("epochs")
    scratch_b = Budget("flops", reference=base)
    finetune = Protocol.finetune(protocol, epochs=ft_epochs)
    has_weights = bool(pruned.provenance.get("weights"))

    plan: list[tuple[str, Callable[[int], Genome], Protocol, Budget, str, str]] = [
        ("unpruned", lambda s: base, protocol, scratch_e, "scratch", "Scratch-E"),
        ("fine-tuned", lambda s: pruned, finetune, scratch_e, "finetune", "fine-tune"),
        ("Scratch-E", lambda s: pruned, protocol, scratch_e, "scratch", "Scratch-E"),
        ("Scratch-B", lambda s: pruned, protocol, scratch_b, "scratch", "Scratch-B"),
    ]
    uni_p, uni_f = uniform_matched(base, pruned, "params"), uniform_matched(base, pruned, "flops")
    plan += [("uniform (params)", lambda s: uni_p, protocol, scratch_b, "scratch", "Scratch-B"),
             ("uniform (FLOPs)", lambda s: uni_f, protocol, scratch_b, "scratch", "Scratch-B"),
             ("random (params)", lambda s: random_matched(base, pruned, s), protocol, scratch_b, "scratch",
              "Scratch-B")]

    rows: list[Row] = []
    for label, genome_of, proto, budget, init, kind in plan:
        g0 = genome_of(0)
        c0 = count(g0)
        row = Row(label, g0.name or g0.key, g0.key, c0.params, c0.flops, kind)
        if label == "random (params)":
            row.genome, row.note = f"{base.name}-random (1 per seed)", "one random architecture per seed"
        if latency:
            from prune_nas.core.latency import measure

            row.latency_ms = measure(g0, device=device, batch=1, repeats=10).median_ms
        if init == "finetune" and not has_weights:
            row.note = f"{method} gives no inherited weights"
            rows.append(row)
            continue
        for s in range(seeds):
            g = genome_of(s)
            spec = RunSpec(g, dataset, proto, budget, s, init)
            reused = spec.key in store
            rec = run(spec, store, device=device, progress=progress, dataset=data, desc=f"{label} s{s}")
            row.runs += 1
            row.run_keys.append(rec["key"])
            row.epochs.append(int(rec["epochs"]))
            how = "reused" if reused else f"trained in {rec.get('wall_time_s') or 0:.0f}s"
            if rec["status"] != "ok":
                row.failed.append(rec.get("reason") or "failed")
                log(f"{label} seed {s}: FAILED ({rec.get('reason')}; {how})")
                continue
            row.values.append(float(rec["final_top1"]))
            acc = 100 * rec["final_top1"]
            log(f"{label} seed {s}: test top-1 {acc:.2f}% ({rec['epochs']} epochs, {how})")
        rows.append(row)

    by = {r.label: r for r in rows}
    tests = [welch(a, by[a].values, b, by[b].values) for a, b in COMPARISONS]
    pc = count(pruned)
    bc = count(base)
    ratio_shown = pruned.provenance.get("ratio")
    at = f", ratio {ratio_shown:g}" if ratio_shown is not None else ""
    title = (f"{method} on {base.name} / {dataset}{at}: {pc.params / bc.params:.1%} of the params, "
             f"{pc.flops / bc.flops:.1%} of the FLOPs, {seeds} seeds")
    notes = [f"Pruned genome: {pruned.name} ({genome_path}), found once (seed 0); each row trains seeds "
             f"0..{seeds - 1}."]
    if large_acc is not None:
        notes.append(f"The large model {method} pruned reached {100 * large_acc:.2f}% (trained with the "
                     f"method's own regularizer, if any); `unpruned` is the large model trained plainly.")
    notes.append(f"Epochs: Scratch-E {protocol.epochs} (the large model's), fine-tune {ft_epochs} at lr "
                 f"{finetune.lr:g}; Scratch-B = int({protocol.epochs} x FLOPs(large) / FLOPs(genome)).")
    meta = {"command": command or "prune_nas.repro.evaluate.evaluate(...)", "method": method, "model": base.model,
            "width": width, "dataset": dataset, "ratio": ratio_shown, "seeds": seeds,
            "epochs": protocol.epochs, "finetune_epochs": ft_epochs, "genome": str(genome_path),
            "genome_key": pruned.key,
            "store": str(store.root), "device": _device_name(device), "threads": torch.get_num_threads(),
            "prune_nas": __version__, "torch": torch.__version__, "scipy": scipy.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "wall_time_s": round(time.perf_counter() - start, 1),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if latency:
        from prune_nas.core.latency import device_name

        meta["latency_device"] = device_name(device)
        notes.append(f"ms (batch 1): median forward time on {meta['latency_device']} (float32, eval mode, "
                     f"{torch.get_num_threads()} threads; random rows: seed 0's architecture).")
    comp = Comparison(title, rows, tests, meta, notes)
    if write:
        parts = Path(str(genome_path)).stem.split("-")  # discover's run name, less its seed (always 0 here)
        if "s0" in parts:
            del parts[len(parts) - 1 - parts[::-1].index("s0")]
        name = f"{'-'.join(parts)}-n{seeds}"
        folder = Path(out_dir) if out_dir is not None else default_out_root() / name
        comp.meta["written_to"] = str(folder)
        comp.write(folder)
    return comp


def command_line() -> str:
    """How this process was started, for the record."""
    return " ".join(["prune-nas"] + sys.argv[1:]) if sys.argv and sys.argv[0].endswith("prune-nas") else \
        " ".join(sys.argv)
