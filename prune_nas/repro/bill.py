"""The bill before paying it: images to train and device-hours of an experiment spec at a scale.

Counted per unit of work of the runner (``experiments.runs_of``), each trained once:

* a pruning run trains its large model (``epochs`` x the training set), once per model, data set, width,
  method and seed -- the runner reuses it from the store; the pruning itself (a forward pass, a few SGD steps
  of ThiNet / regression) is not counted;
* the unpruned model: nothing more when the method trains the large model plainly (it *is* the unpruned
  model), else ``epochs`` x the training set;
* fine-tuning ``finetune_epochs``, Scratch-E ``epochs``, a curve's series ``epochs`` x the training set.

Images are counted in *unpruned-model images*: the training FLOPs divided by the unpruned model's FLOPs per
image. That is exact for the unpruned and large models and for Scratch-B (by definition it spends the FLOPs
of the unpruned model trained for the base epochs, whatever the pruned model's FLOPs turn out to be), and an
upper bound for fine-tuning and Scratch-E of a pruned model, whose FLOPs are not known before it is pruned.
ImageNet's Scratch-B cap (2x the pruned model's FLOPs) can only lower it.

Device-hours = images / the engine's measured training images/s for the model at the row's input size (the
table ``benchmarks/train_throughput.py`` writes, e.g. ``benchmarks/results-h200-train_throughput.json``),
one process on one device. A model the table does not have (or a narrow smoke-scale width) is "not
measured": no number is made up for it. Throughput measured at batch 64 stands for the protocol's batch (256
on ImageNet).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAIN_SIZES = {"cifar10": 50_000, "cifar100": 50_000, "imagenet": 1_281_167, "digits": 1_437,
               "synthetic": 512}
ENGINE_COLUMNS = {"eager": "plain_img_s", "fast": "engine_img_s"}


def benchmark_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "benchmarks"


def throughput_files(folder: str | os.PathLike | None = None) -> list[Path]:
    """The throughput tables shipped with the source tree (none in an installed wheel)."""
    folder = Path(folder) if folder is not None else benchmark_dir()
    return sorted(folder.glob("results-*train_throughput.json")) if folder.is_dir() else []


def load_throughput(path: str | os.PathLike) -> dict:
    """A throughput table: ``{"device": ..., "results": {model key: {"plain_img_s", "engine_img_s"}}}``."""
    from prune_nas.core.errors import UserError
    from prune_nas.core.userfiles import read_json

    table = read_json(path, "throughput table")
    try:
        table["results"], table["device"]  # the two fields a table must have
    except (KeyError, TypeError) as e:
        raise UserError(f"{path} is not a throughput table of benchmarks/train_throughput.py ({e})") from None
    return table


def model_key(model: str, input_size: int) -> str:
    """The benchmark's key: the model name at CIFAR's 32 px, ``name@size`` otherwise (``resnet50@224``)."""
    return model if input_size == 32 else f"{model}@{input_size}"


@dataclass(frozen=True)
class Line:
    """What one row of a plan trains."""

    row: int
    model: str
    dataset: str
    width: float
    input_size: int
    images: int

    @property
    def key(self) -> str:
        return model_key(self.model, self.input_size)


def _large(row: Any, model: str, dataset: str, seed: int, trained: set) -> int:
    """Epochs of the large model a pruning run needs, or 0 when an earlier unit trained it (the store's cache
    key: model, data, width, the method's regularizer -- none for plain training, shared by every method --
    seed and epochs)."""
    from prune_nas.design.discover import regularizer
    from prune_nas.methods import get_method

    g = row.base_genome(model, dataset)
    reg = regularizer(get_method(row.method), g, dict(row.params))
    key = (g.key, dataset, json.dumps(reg, sort_keys=True, default=str), seed, row.epochs)
    if key in trained:
        return 0
    trained.add(key)
    return row.epochs


def lines_of(plan: Any) -> list[Line]:
    """Images to train per row of ``plan`` (a ``experiments.Plan``), in unpruned-model images."""
    from prune_nas.design.discover import regularizer
    from prune_nas.methods import get_method

    kind = plan.spec.kind
    trained: set[tuple] = set()
    out = []
    for row in plan.rows:
        base = row.base_genome()
        epochs = 0  # in epochs of the unpruned model over the training set
        if kind == "comparison":
            plain = regularizer(get_method(row.method), base, dict(row.params)) is None
            for seed in row.seeds:
                epochs += _large(row, row.model, row.dataset, seed, trained)
                epochs += 0 if plain else row.epochs  # else the large model is the unpruned one
                epochs += sum(row.finetune_epochs if b == "finetune" else row.epochs for b in row.budgets)
        elif kind in ("widths", "kernels"):
            epochs += sum(_large(row, row.model, row.dataset, seed, trained) for seed in row.seeds)
        else:
            for _ in row.ratios:
                for seed in row.seeds:
                    epochs += _large(row, row.model, row.dataset, seed, trained)
                    if "transferred" in row.series and row.source:
                        epochs += _large(row, *row.source, seed, trained)
                    epochs += row.epochs * len(row.series)
        out.append(Line(row.index, row.model, row.dataset, row.width, base.input_size,
                        epochs * TRAIN_SIZES[row.dataset]))
    return out


def hours(line: Line, table: dict | None, engine: str) -> float | None:
    """Device-hours of a row at the table's measured throughput; None when not measured."""
    if table is None or line.width != 1.0:
        return None
    rate = table["results"].get(line.key, {}).get(ENGINE_COLUMNS[engine])
    return line.images / rate / 3600 if rate else None


def bill(plans: list[Any], tables: list[dict], engine: str = "fast") -> dict:
    """Per spec and in total: images and, per throughput table, device-hours (None where a row was not
    measured; the total then counts only measured rows and says how many were not)."""
    specs, total_images = [], 0
    totals = {t["device"]: [0.0, 0] for t in tables}
    for plan in plans:
        lines = lines_of(plan)
        images = sum(x.images for x in lines)
        total_images += images
        per_device = {}
        for t in tables:
            hs = [hours(x, t, engine) for x in lines]
            missing = sorted({x.key + (f" x{x.width:g}" if x.width != 1 else "") for x, h in zip(lines, hs)
                              if h is None})
            measured = sum(h for h in hs if h is not None)
            per_device[t["device"]] = {"hours": measured, "not_measured": missing}
            totals[t["device"]][0] += measured
            totals[t["device"]][1] += len([h for h in hs if h is None])
        specs.append({"spec": plan.spec.name, "scale": plan.scale, "images": images, "rows": lines,
                      "devices": per_device})
    return {"engine": engine, "specs": specs, "images": total_images,
            "devices": {d: {"hours": h, "rows_not_measured": m} for d, (h, m) in totals.items()}}


def bill_lines(result: dict) -> list[str]:
    """The bill as text lines for the dry run."""
    def img(n: int) -> str:
        return f"{n / 1e9:.2f} G" if n >= 1e9 else f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n:,}"

    engine = result["engine"]
    out = [(f"bill ({engine} engine, one process per device; images in unpruned-model images, an upper bound "
            "for pruned models):")]
    for s in result["specs"]:
        out.append(f"  {s['spec']} [{s['scale']}]: {img(s['images'])} images")
        for device, d in s["devices"].items():
            missing = ", ".join(d["not_measured"])
            if all(x.key + (f" x{x.width:g}" if x.width != 1 else "") in d["not_measured"]
                   for x in s["rows"]):
                out.append(f"    {device}: not measured ({missing})")
            else:
                tail = f" for the measured rows; not measured: {missing}" if missing else ""
                out.append(f"    {device}: {d['hours']:.1f} device-hours{tail}")
    out.append(f"  total: {img(result['images'])} images")
    for device, d in result["devices"].items():
        tail = f" ({d['rows_not_measured']} rows not measured, not counted)" if d["rows_not_measured"] else ""
        out.append(f"    {device}: {d['hours']:.1f} device-hours{tail}")
    if not result["devices"]:
        out.append("    device-hours: not measured (no benchmarks/results-*train_throughput.json; run "
                   "benchmarks/train_throughput.py on the device and pass --throughput FILE)")
    return out
