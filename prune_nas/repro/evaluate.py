"""One row of the paper's tables: a pruning method against training its architecture from scratch.

For a method M on model X / dataset D at ratio r, with N seeds, :func:`evaluate` builds a one-row
``comparison`` experiment in memory and runs it through the experiments runner
(``prune_nas.repro.experiments.run_experiment``): one pipeline, one reuse rule, one manifest.

* **Pruning happens once**, with seed 0 (the runner's ``prune_once`` comparison rows): the method trains (or
  reuses) its large model and prunes it; every seed of every row then trains that one genome, so the spread
  over seeds is the training's, and the rows compare ways of training the architecture the method found.
  (``prune-nas run`` specs prune per seed.) The pruned genome is reused when its file and the
  ``<name>.run.json`` beside it, which records the hash of the settings it was pruned with, match; the large
  model comes from the store's cache.
* every row trains N seeds through ``prune_nas.training.runs.run``, so each run is stored under its spec's
  hash and reused:

  ============== ===================================================================================
  unpruned        the large (unpruned) model, trained from scratch for the base epochs (for a method that
                  trains it plainly, the large model it pruned)
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
digits data at 16x16, a VGG-11 at a quarter of its widths, 10 base epochs (Network Slimming needs about 10
there to zero a share of the BN scales, see ``methods/slimming.py``; with 5, no s both keeps the large
model accurate and sparsifies it), fine-tuning 5 (a quarter of 10 is too few to recover a pruned model) and
3 seeds. The table is written as Markdown, CSV and JSON (and drawn as ``accuracy.png``) under
``$PRUNE_NAS_HOME/runs/evaluate/<name>/`` (else
``artifacts/runs/evaluate/<name>/``) with how it was produced: command, versions, hardware, wall time; the
runner's ``manifest.json`` lies beside it and the pruned genomes in ``runs/evaluate/genomes/``. A method that
inherits no weights (uniform, random) has no fine-tuned row, so evaluate refuses it, as experiment specs do.
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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from prune_nas.core.errors import UserError
from prune_nas.core.paths import output_dir
from prune_nas.core.units import human

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
            out.append([r.label, r.genome, human(r.params), human(r.flops), r.budget, r.epochs_text(), runs,
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
        """``table.md``, ``table.csv``, ``table.json`` and the figure ``accuracy.png`` in ``folder``, each
        written atomically."""
        from prune_nas.core.genome import atomic_write_text
        from prune_nas.repro.comparison_figure import plot_comparison

        folder = Path(folder)
        paths = {"md": folder / "table.md", "csv": folder / "table.csv", "json": folder / "table.json",
                 "png": folder / "accuracy.png"}
        atomic_write_text(paths["md"], self.report("md"))
        atomic_write_text(paths["csv"], self.csv())
        atomic_write_text(paths["json"], json.dumps(self.to_dict(), indent=1) + "\n")
        plot_comparison(self, paths["png"])
        return paths


def _visible_len(s: str) -> int:
    import re

    return len(re.sub(r"\033\[[0-9;]*m", "", s))


# ---- the pipeline: a one-row experiment -----------------------------------------------------------------
# Runner role -> (table row, budget column). The order is the table's.
ROLES = (("unpruned", "unpruned", "Scratch-E"), ("finetune", "fine-tuned", "fine-tune"),
         ("scratch-e", "Scratch-E", "Scratch-E"), ("scratch-b", "Scratch-B", "Scratch-B"),
         ("uniform-params", "uniform (params)", "Scratch-B"),
         ("uniform-flops", "uniform (FLOPs)", "Scratch-B"),
         ("random-params", "random (params)", "Scratch-B"))
# The settings are explicit, so every scale of the in-memory spec is the same; the manifest records this one.
SCALE = "small"


def default_out_root() -> Path:
    return output_dir("runs", "evaluate")


def evaluate(method: str = "slimming", *, model: str | None = None, dataset: str = "digits",
             ratio: float | None = None, seeds: int | None = None, width: float | None = None,
             epochs: int | None = None, finetune_epochs: int | None = None, input_size: int | None = None,
             params: dict | None = None,
             device: str = "cpu", store=None, genome_dir=None, data_dir=None, download: bool = False,
             progress: bool = False, log: Callable[[str], None] = print, command: str | None = None,
             out_dir: str | os.PathLike | None = None, latency: bool = False) -> Comparison:
    """Run the one-row comparison experiment (see the module doc) through the experiments runner and return
    the table, also written under ``out_dir`` (default ``<runs>/evaluate/<name>/``) beside the runner's
    ``manifest.json``; pruned genomes go to ``genome_dir`` (default ``<runs>/evaluate/genomes/``). With
    ``latency``, each row's model (seed 0's, for random rows) is also timed at batch 1 on ``device``."""
    import scipy
    import torch

    from prune_nas.core.genome import base_genome, model_spec
    from prune_nas.core.version import __version__
    from prune_nas.design.discover import (
        default_input_size,
        default_model,
        method_params,
        protocol_for,
        run_name,
    )
    from prune_nas.methods import get_method
    from prune_nas.repro.experiments import BASELINES, load_manifest, parse_spec, run_experiment
    from prune_nas.training import distributed
    from prune_nas.training.data import NUM_CLASSES
    from prune_nas.training.loop import _device_name
    from prune_nas.training.store import Store

    start = time.perf_counter()
    if dataset not in NUM_CLASSES:
        raise UserError(f"unknown dataset {dataset!r}; known: {', '.join(NUM_CLASSES)}")
    m = get_method(method)
    short = SHORT.get(dataset, {})
    seeds = seeds if seeds is not None else short.get("seeds", PAPER_SEEDS)
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    width = float(width if width is not None else short.get("width", 1.0))
    if width <= 0:
        raise UserError(f"--width must be > 0, got {width:g}")
    protocol = protocol_for(dataset, epochs if epochs is not None else short.get("epochs"))
    ft_epochs = finetune_epochs if finetune_epochs is not None else \
        short.get("finetune_epochs", max(1, round(protocol.epochs * 40 / 160)))
    if ft_epochs < 1:
        raise UserError(f"--finetune-epochs must be >= 1, got {ft_epochs}")
    model = model or default_model(m, dataset)
    size = input_size or default_input_size(model_spec(model), dataset)
    if model_spec(model).family == "generic":  # the method's generic variant takes its own parameters
        m = m.for_genome(base_genome(model, NUM_CLASSES[dataset], size, width_mult=width))
    given = {**(params or {}), **({"ratio": ratio} if ratio is not None else {})}
    full = method_params(m, given)
    if "seed" not in given:
        full.pop("seed", None)  # the method's seed follows the run's, as in `discover`
    store = store if isinstance(store, Store) else Store(store)

    row = {"model": model, "dataset": dataset, "method": m.name, "epochs": protocol.epochs,
           "finetune_epochs": ft_epochs, "width": width, "input_size": size, "params": given}
    raw = {"version": 1, "name": "evaluate", "title": f"{m.name} on {model} / {dataset}",
           "paper": "one row of Tables 1-6 (prune-nas evaluate)", "kind": "comparison", "seeds": seeds,
           "rows": [row], "scales": {"smoke": {}, "small": {}, "paper": {}}}
    try:
        plan = parse_spec(raw).plan(SCALE)
    except UserError as e:  # name the option, not the in-memory spec's field
        raise UserError(_as_option(str(e))) from None
    plan = replace(plan, rows=tuple(replace(r, baselines=BASELINES, prune_once=True) for r in plan.rows))
    (planned,) = plan.rows
    base = planned.base_genome()
    name = f"{run_name(model, width, dataset, m.name, full, None, epochs=protocol.epochs, input_size=size)}" \
           f"-n{seeds}"
    folder = Path(out_dir) if out_dir is not None else default_out_root() / name
    genomes = Path(genome_dir) if genome_dir is not None else default_out_root() / "genomes"
    labels = {role: label for role, label, _ in ROLES}

    def report(entry: dict) -> None:
        """One line per finished unit of work, as the runner records it."""
        if entry["role"] == "prune":
            if entry.get("reused"):
                log(f"reusing the discovered genome {genomes / entry['genome']}.json")
            return
        how = "reused" if entry.get("reused") else f"trained in {entry.get('wall_time_s') or 0:.0f}s"
        label, s = labels.get(entry["role"], entry["role"]), entry["seed"]
        if entry.get("status") != "ok":
            log(f"{label} seed {s}: FAILED ({entry.get('reason')}; {how})")
        else:
            log(f"{label} seed {s}: test top-1 {100 * entry['final_top1']:.2f}% "
                f"({entry.get('epochs')} epochs, {how})")

    manifest = load_manifest(run_experiment(plan, store=store, device=device, progress=progress,
                                            data_dir=data_dir, download=download, log=log, out_dir=folder,
                                            genome_dir=genomes, on_step=report))
    runs = manifest["runs"]
    rows = [_row(label, budget, [e for e in runs if e["role"] == role]) for role, label, budget in ROLES]
    rows[ROWS.index("random (params)")].note = "one random architecture per seed"
    by = {r.label: r for r in rows}
    tests = [welch(a, by[a].values, b, by[b].values) for a, b in COMPARISONS]
    (pruned,) = (e for e in runs if e["role"] == "prune")
    ratio_shown = pruned.get("ratio")
    at = f", ratio {ratio_shown:g}" if ratio_shown is not None else ""
    base_name = f"{model}-x{width:g}" if width != 1 else model
    title = (f"{m.name} on {base_name} / {dataset}{at}: "
             f"{pruned['params'] / pruned['base_params']:.1%} of the params, "
             f"{pruned['flops'] / pruned['base_flops']:.1%} of the FLOPs, {seeds} seeds")
    path = genomes / f"{pruned['genome']}.json"
    notes = [(f"Pruned genome: {pruned['genome']} ({path}), found once (seed 0); each row trains seeds "
              f"0..{seeds - 1}.")]
    large = pruned.get("large") or {}
    if large.get("test_top1") is not None and not large.get("plain"):
        notes.append(f"The large model {m.name} pruned reached {100 * large['test_top1']:.2f}% "
                     f"(trained with the method's regularizer); "
                     f"`unpruned` is the large model trained plainly.")
    ratio_b = "FLOPs(large) / FLOPs(genome)"
    ratio_b = f"min({planned.cap:g}, {ratio_b})" if planned.cap else ratio_b
    notes.append(f"Epochs: Scratch-E {protocol.epochs} (the large model's), fine-tune {ft_epochs} at lr "
                 f"{planned.finetune_protocol().lr:g}; Scratch-B = int({protocol.epochs} x {ratio_b}).")
    meta = {"command": command or "prune_nas.repro.evaluate.evaluate(...)", "method": m.name,
            "model": base.model, "width": width, "dataset": dataset, "ratio": ratio_shown, "seeds": seeds,
            "epochs": protocol.epochs, "finetune_epochs": ft_epochs, "genome": str(path),
            "genome_key": pruned["genome_key"], "manifest": str(folder / "manifest.json"),
            "store": str(store.root), "device": _device_name(device), "threads": torch.get_num_threads(),
            "prune_nas": __version__,
            "torch": torch.__version__, "scipy": scipy.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "wall_time_s": round(time.perf_counter() - start, 1),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "written_to": str(folder)}
    writer = distributed.is_writer()  # of the ranks of a --nproc launch, rank 0 measures and writes
    if latency and writer:
        _add_latency(rows, base, path, device, meta, notes)
    comp = Comparison(title, rows, tests, meta, notes)
    if writer:
        comp.write(folder)
    return comp


def _add_latency(rows: list[Row], base, pruned_path: Path, device: str, meta: dict, notes: list[str]) -> None:
    """Time each row's architecture (seed 0's for the random row) at batch 1 on ``device``."""
    import torch

    from prune_nas.core.genome import load_genome
    from prune_nas.core.latency import device_name, measure
    from prune_nas.repro.experiments import matched_baseline

    pruned = load_genome(pruned_path)
    fixed = {"unpruned": base, "finetune": pruned, "scratch-e": pruned, "scratch-b": pruned}
    for (role, _, _), row in zip(ROLES, rows):
        genome = fixed.get(role) or matched_baseline(role, base, pruned, 0)
        row.latency_ms = measure(genome, device=device, batch=1, repeats=10).median_ms
    meta["latency_device"] = device_name(device)
    notes.append(f"ms (batch 1): median forward time on {meta['latency_device']} (float32, eval mode, "
                 f"{torch.get_num_threads()} threads; random rows: seed 0's architecture).")


def _row(label: str, budget: str, entries: list[dict]) -> Row:
    """A table row from the runner's manifest entries of one role (one per seed)."""
    entries = sorted(entries, key=lambda e: e["seed"])
    keys = list(dict.fromkeys(e.get("genome_key") or "" for e in entries))
    names = list(dict.fromkeys(e.get("genome") or "" for e in entries))
    genome = names[0] if len(keys) == 1 else f"{_unseeded(names[0], entries[0]['seed'])} (1 per seed)"
    row = Row(label, genome, ";".join(keys), _mean_count(entries, "params"), _mean_count(entries, "flops"),
              budget)
    for e in entries:
        row.runs += 1
        row.run_keys.append(e["key"])
        if e.get("epochs") is not None:
            row.epochs.append(int(e["epochs"]))
        if e.get("status") != "ok":
            row.failed.append(e.get("reason") or "failed")
        else:
            row.values.append(float(e["final_top1"]))
    return row


def _mean_count(entries: list[dict], what: str) -> int:
    """Mean params / FLOPs of a row's runs (one architecture per seed for random rows)."""
    return round(statistics.fmean(e.get(what) or 0 for e in entries)) if entries else 0


def _unseeded(name: str, seed: int) -> str:
    """A per-seed genome name without its seed part (``...-r0.5-s0-10ep`` -> ``...-r0.5-10ep``)."""
    parts = name.split("-")
    tag = f"s{seed}"
    if tag in parts:
        del parts[len(parts) - 1 - parts[::-1].index(tag)]
    return "-".join(parts)


def _as_option(message: str) -> str:
    """An in-memory spec's error (``experiment spec: rows[0].params.s: ...``) as one about evaluate's
    options."""
    import re

    text = message.removeprefix("experiment spec: ")
    m = re.match(r"(?:rows\[0\](?:\.params)?\.)?([a-z_]+)?: (.*)", text, re.DOTALL)
    if m is None or m.group(1) is None:
        return f"evaluate: {text.removeprefix('rows[0]: ')}"
    return f"evaluate: --{m.group(1).replace('_', '-')}: {m.group(2)}"


def command_line() -> str:
    """How this process was started, for the record."""
    return " ".join(["prune-nas"] + sys.argv[1:]) if sys.argv and sys.argv[0].endswith("prune-nas") else \
        " ".join(sys.argv)
