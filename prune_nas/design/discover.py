"""The discover pipeline: train (or reuse) the large model a method needs, prune it, write the genome.

``discover("slimming")`` with nothing else runs the embedded default: a VGG-11 at a quarter of its widths on
the bundled digits data (offline, CPU, about two minutes on two cores). Outputs, in ``out_dir`` (default
``$PRUNE_NAS_HOME/genomes/discovered/`` (else ``artifacts/...`` in the working folder), where
``resolve_genome`` finds them by name)::

    <name>.json         the genome; provenance names the method (``source``: its citation), its parameters,
                        ``pruned_from`` (model, width, dataset, the large model's cache key and test
                        accuracy), seed, notes, and the versions that produced it
    <name>.pt           inherited weights for the fine-tune baseline (provenance["weights"]: file + sha256)
    <name>.masks.npz    exact masks (non-structured methods; sparsity.mask: file + sha256)

with ``name = <model>[-x<width>]-<dataset>-<method>[-sparse]-<tag>-s<seed>[-<settings>]``, ``tag``
``r<ratio>``, ``c<config>`` or ``like-<genome>``, and ``settings`` what differs from the defaults: the large
model's epochs (``-10ep``) and initial learning rate (``-lr0.01``), the input size (``-24px``), the method
parameters the tag does not show (``-s=0.001``, ``-skip=16,20``); see :func:`run_name`. When the large model
is narrower than the named base model (``width != 1``) its genome is written too
(``<model>-x<width>-<dataset>.json``) and recorded as the ``reference`` that reductions and Scratch-B budgets
are measured against.

The trained large model is cached under ``<store root>/large/<key>.pt`` (store root: ``$PRUNE_NAS_HOME/store``
or ``artifacts/store``), keyed by the canonical hash of (large genome, dataset, effective protocol, the
method's training regularizer and its parameters, seed), and written atomically, so pruning the same model at
another ratio, or by another method that needs no special training, reuses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prune_nas.core.errors import UserError
from prune_nas.methods._base import Method, get_method

LARGE_FORMAT = "prune-nas.large-model"
LARGE_VERSION = 1

# Embedded default: on the bundled digits (8x8 images, so 16 pixels lose nothing) a quarter-width model and a
# short schedule (20 epochs, lr 0.1 stepped at 50% / 75% as in the paper), so a run takes about a minute
# on one
# CPU core. The paper's protocol (160 epochs; ImageNet 90) and the model's own input size everywhere else.
SHORT = {"digits": {"width": 0.25, "epochs": 20, "input_size": 16},
         "synthetic": {"width": 0.25, "epochs": 3, "input_size": 16}}
DEFAULT_MODELS = {
    "digits": {"vgg": "vgg11", "resnet": "resnet20", "preresnet": "preresnet110", "densenet": "densenet40"},
    "cifar10": {"vgg": "vgg16", "resnet": "resnet56", "preresnet": "preresnet164", "densenet": "densenet40"},
    "imagenet": {"vgg": "vgg11-imagenet", "resnet": "resnet50"},
}
DEFAULT_MODELS["synthetic"] = DEFAULT_MODELS["digits"]
# Generic models (torchvision:resnet18, ...) are ImageNet-sized: on digits a quarter width at 32 px, where a
# ResNet-18 still keeps a 1x1 map after its five stride-2 steps.
GENERIC_SHORT = {"digits": {"width": 0.25, "epochs": 20, "input_size": 32},
                 "synthetic": {"width": 0.25, "epochs": 3, "input_size": 32}}
DEFAULT_MODELS["cifar100"] = DEFAULT_MODELS["cifar10"]


@dataclass
class Discovered:
    """What one ``discover`` run produced."""

    genome: Any  # Genome, as written
    path: Path
    base: Any  # the large model's genome
    weights: Path | None = None
    masks: Path | None = None
    notes: list[str] = field(default_factory=list)
    # {"key", "path", "reused", "test_top1", "wall_time_s"} when a model was trained
    large: dict | None = None
    wall_time_s: float = 0.0


def default_out_dir() -> Path:
    from prune_nas.core.paths import output_dir

    return output_dir("genomes", "discovered")


def default_model(method: Method, dataset: str) -> str:
    """The model ``discover`` prunes when none is named: the dataset's default for the method's first
    family."""
    table = DEFAULT_MODELS.get(dataset, DEFAULT_MODELS["cifar10"])
    for fam in method.families:
        if fam in table:
            return table[fam]
    raise UserError(f"no default model for {method.name} on {dataset}; name one with --model")


def default_input_size(spec, dataset: str) -> int:
    """The model's own input size, or the short schedule's (at least what the model needs) on digits."""
    from prune_nas.core.arch import get_family

    if spec.family == "generic":
        return GENERIC_SHORT.get(dataset, {}).get("input_size", spec.input_size)
    short = SHORT.get(dataset, {}).get("input_size")
    return max(short, get_family(spec.family).min_input_size(spec)) if short else spec.input_size


def protocol_for(dataset: str, epochs: int | None = None, lr: float | None = None):
    """The large model's training protocol: the paper's, or the short documented schedule for digits; ``lr``
    replaces the initial learning rate (its steps stay)."""
    from prune_nas.training.protocol import Protocol

    if lr is not None and not lr > 0:
        raise UserError(f"--lr must be > 0, got {lr}")
    protocol = Protocol.for_dataset(dataset, **({"lr": float(lr)} if lr is not None else {}))
    short = SHORT.get(dataset, {}).get("epochs")
    if epochs is not None:
        if epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {epochs}")
        return protocol.with_epochs(epochs)
    return protocol.with_epochs(short) if short else protocol


def method_params(method: Method, given: dict[str, Any]) -> dict[str, Any]:
    """The method's parameters: declared defaults overridden by ``given`` (unknown names are a user error)."""
    known = [p.name for p in method.params]
    unknown = [k for k in given if k not in known]
    if unknown:
        takes = ", ".join(known) or "no parameters"
        raise UserError(f"method {method.name!r} has no parameter {unknown[0]!r} (it takes: {takes})")
    out = {p.name: p.default for p in method.params}
    out.update({k: v for k, v in given.items() if v is not None})
    return out


def _schedule(protocol, steps_per_epoch: int | None) -> dict:
    return {} if protocol is None else {"protocol": protocol, "steps_per_epoch": steps_per_epoch}


def regularizer(method: Method, genome, params: dict, *, protocol=None,
                steps_per_epoch: int | None = None) -> dict | None:
    """What the method's training phase depends on, for the large model's cache key (None: plain training):
    ``Method.regularizer`` (given the training schedule too, ``protocol`` and the data's ``steps_per_epoch``,
    when known: slimming's default s depends on it), under the method's name."""
    reg = method.regularizer(genome, **_schedule(protocol, steps_per_epoch), **params)
    return None if reg is None else {"method": method.name, **reg}


def training_record(method: Method, genome, params: dict, *, protocol=None,
                    steps_per_epoch: int | None = None) -> dict | None:
    """What the method's training phase used and how its defaults were derived (slimming: the effective s),
    for the genome's provenance (``Method.training_record``); None for a method that does not say."""
    return method.training_record(genome, **_schedule(protocol, steps_per_epoch), **params)


def large_key(genome, dataset: str, protocol, reg: dict | None, seed: int) -> tuple[str, dict]:
    from prune_nas.core.genome import _hash

    d = {"format": LARGE_FORMAT, "version": LARGE_VERSION, "genome": genome.arch_dict(), "dataset": dataset,
         "protocol": protocol.to_dict(), "regularizer": reg, "seed": int(seed)}
    return _hash(d), d


def large_model_init(genome, seed: int):
    """The large model as ``discover`` initialises it before training: ``build(genome)`` right after
    ``torch.manual_seed(seed)``. A winning-ticket run (``prune_nas.design.ticket``) re-creates the same
    weights from the seed and genome recorded in a discovered genome's provenance."""
    import torch

    from prune_nas.core.builder import build

    torch.manual_seed(seed)
    return build(genome)


def trained_large_model(method: Method, genome, dataset: str, data, protocol, params: dict, *, seed: int,
                        device: str = "cpu", store_root: str | os.PathLike | None = None,
                        progress: bool = True,
                        log: Callable[[str], None] = print):
    """The large model trained with the method's callbacks, from the cache when it is there.
    Returns ``(model on the CPU in eval mode, info dict)``."""

    from prune_nas.core.atomic import file_lock
    from prune_nas.training import distributed
    from prune_nas.training.store import default_root

    schedule = {"protocol": protocol, "steps_per_epoch": data.steps_per_epoch(protocol.batch_size)}
    reg = regularizer(method, genome, params, **schedule)
    used = training_record(method, genome, params, **schedule) if reg is not None else None
    key, key_dict = large_key(genome, dataset, protocol, reg, seed)
    folder = Path(store_root) if store_root is not None else default_root()
    folder = folder / "large"
    pt, meta = folder / f"{key}.pt", folder / f"{key}.json"

    model = large_model_init(genome, seed)
    callbacks = []
    if reg is not None:  # callbacks may add parameters (SSS block scales): attach before loading weights
        callbacks = method.training_callbacks(model, genome=genome, **schedule, **params)
    extra = {"training": used} if used is not None else {}
    # Two identical commands started together: the second waits for the first's model instead of training
    # its own.
    # (Of the ranks of one --nproc launch, rank 0 alone takes the lock: they train the model together.)
    lock = file_lock(folder / f"{key}.lock", lambda: log(f"another process is training this large model "
                                                         f"({key}); waiting to reuse it")) \
        if distributed.is_writer() else contextlib.nullcontext()
    with lock:
        return _trained_or_cached(model, callbacks, extra, genome, dataset, data, protocol, method, reg, used,
                                  key, key_dict, pt, meta, seed=seed, device=device, progress=progress,
                                  log=log)


def _trained_or_cached(model, callbacks, extra, genome, dataset, data, protocol, method, reg, used, key,
                       key_dict, pt, meta, *, seed, device, progress, log):
    import torch

    from prune_nas.core.genome import atomic_write_text
    from prune_nas.core.version import __version__
    from prune_nas.training import distributed
    from prune_nas.training.loop import train_model

    if distributed.broadcast(pt.exists() and meta.exists()):  # rank 0's cache decides, so all ranks agree
        record = json.loads(meta.read_text())
        model.load_state_dict(torch.load(pt, map_location="cpu", weights_only=True))
        log(f"reusing the trained large model {pt} (test top-1 {_pct(record.get('test_top1'))}, "
            f"{record.get('epochs')} epochs, trained {record.get('finished_at', '?')})")
        return model.cpu().eval(), {"key": key, "path": str(pt), "reused": True, **_summary(record), **extra}
    log(f"training the large model {genome.name or genome.model} on {dataset} for {protocol.epochs} epochs"
        + (f" with {method.name}'s regularizer" if reg else "") + f" (cache key {key})")
    if used is not None and used.get("text"):
        log(f"{method.name}: {used['text']}")
    history = train_model(model, data, protocol, seed=seed, device=device, callbacks=callbacks,
                          progress=progress, desc=f"{genome.name or genome.model}")
    if history.failed:
        raise UserError(f"training the large model failed: {history.reason}; try a lower learning rate or "
                        "a smaller regularizer")
    summ = history.summary()
    record = {"format": LARGE_FORMAT, "version": LARGE_VERSION, "key": key, "spec": key_dict,
              "test_top1": summ["final_top1"], "best_top1": summ["best_top1"], "epochs": protocol.epochs,
              "curve": history.curve, "wall_time_s": history.wall_time_s, "device": str(device),
              "torch": torch.__version__, "prune_nas": __version__,
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if distributed.is_writer():  # the ranks of a --nproc launch hold the same weights; rank 0 stores them
        from prune_nas.core.atomic import atomic_write

        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        atomic_write(pt, lambda tmp: torch.save(state, tmp), ".pt")
        atomic_write_text(meta, json.dumps(record, indent=1) + "\n")
    log(f"trained in {history.wall_time_s:.0f}s: test top-1 {_pct(summ['final_top1'])}; cached as {pt}")
    return model.cpu().eval(), {"key": key, "path": str(pt), "reused": False, **_summary(record), **extra}


def _summary(record: dict) -> dict:
    return {k: record.get(k) for k in ("test_top1", "epochs", "wall_time_s")}


def _pct(x) -> str:
    return f"{100 * x:.2f}%" if isinstance(x, (int, float)) else "?"


# Parameters the tag of a run's name already shows.
_TAGGED = ("ratio", "config", "like", "sparsity")


def run_name(model: str, width: float, dataset: str, method: str, params: dict, seed: int | None, *,
             epochs: int | None = None, input_size: int | None = None, lr: float | None = None) -> str:
    """A discovered genome's file name (no suffix):
    ``<model>[-x<width>]-<dataset>-<method>[-sparse]-<tag>-s<seed>[-<E>ep][-lr<LR>][-<N>px][-<param>=<value>...]``.

    The documented prefix (``vgg16-cifar10-slimming-r0.4-s0``; ``seed=None`` leaves ``-s<seed>`` out) is
    followed by what else tells runs apart, each only where it differs from the default, so that default runs
    keep the short name: ``epochs`` of the large model's training (against the dataset's default schedule:
    digits 20, CIFAR 160, ImageNet 90; not for methods that train nothing), its initial ``lr`` (against
    0.1; likewise), ``input_size`` (against the
    model's default on the dataset), and the method's parameters the tag does not show (a ``seed`` parameter
    only when it is not the run's seed).

    >>> run_name("vgg11", 0.25, "digits", "slimming", {"ratio": 0.5, "s": 1e-3}, 0, epochs=10, input_size=16)
    'vgg11-x0.25-digits-slimming-r0.5-s0-10ep-s=0.001'
    """
    from prune_nas.core.arch import get_spec
    from prune_nas.core.generic.family import generic_spec
    from prune_nas.core.generic.refs import is_generic_ref

    spec = generic_spec(model, None, 1000, 224, 3) if is_generic_ref(model) else get_spec(model)
    parts = [model.replace(":", "-")] + ([f"x{width:g}"] if width != 1 else []) + [dataset, method]
    if params.get("sparsity"):
        parts.append("sparse")
    if params.get("config"):
        parts.append(f"c{_name_value(params['config'])}")
    elif params.get("like"):
        parts.append(f"like-{Path(str(params['like'])).stem}")
    elif params.get("ratio") is not None:
        parts.append(f"r{params['ratio']:g}")
    if seed is not None:
        parts.append(f"s{seed}")
    m = get_method(method)
    if epochs is not None and m.needs_training and epochs != protocol_for(dataset).epochs:
        parts.append(f"{epochs}ep")
    if lr is not None and m.needs_training and lr != protocol_for(dataset).lr:
        parts.append(f"lr{lr:g}")
    if input_size is not None and input_size != default_input_size(spec, dataset):
        parts.append(f"{input_size}px")
    for p in m.params:
        v = params.get(p.name)
        if p.name in _TAGGED or v is None or v is False or _plain(v) in ((), _plain(p.default)):
            continue
        if p.name == "seed" and v == seed:
            continue
        parts.append(p.name if v is True else f"{p.name}={_name_value(v)}")
    return "-".join(parts)


def _plain(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


def _name_value(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(_name_value(x) for x in v)
    text = f"{v:g}" if isinstance(v, float) else str(v)
    return "".join(c if c.isalnum() or c in "._,=+-" else "_" for c in text)  # part of a file name


def discover(method: str, *, model: str | None = None, dataset: str = "digits", ratio: float | None = None,
             seed: int = 0, width: float | None = None, epochs: int | None = None,
             input_size: int | None = None,
             lr: float | None = None, params: dict[str, Any] | None = None, protocol=None,
             device: str = "cpu",
             data_dir=None, download: bool = False,
             out_dir: str | os.PathLike | None = None, store_root: str | os.PathLike | None = None,
             progress: bool = True, log: Callable[[str], None] = print, data=None) -> Discovered:
    """Train (or reuse) the large model, prune it with ``method``, write genome + inherited weights (+ masks).

    ``params`` are the method's own parameters (``prune-nas methods`` lists them); ``ratio`` is a shortcut for
    ``params["ratio"]``. ``lr`` replaces the large model's initial learning rate (its steps stay);
    ``protocol``: the large model's whole training protocol instead (default: the dataset's, at ``epochs``; an
    experiment row passes its own lr schedule). Every check a user can fail (unknown method, model or dataset,
    a ratio outside (0, 1), a method that does not apply to the family, a bad method parameter) runs before
    any training. ``data``: the dataset already loaded at the model's input size (else it is loaded when the
    method trains).

    >>> d = discover("uniform", dataset="synthetic", ratio=0.5, out_dir=__import__("tempfile").mkdtemp(),
    ...              log=lambda s: None)
    >>> d.genome.widths["conv1"], d.base.widths["conv1"]
    (8, 16)
    """
    import torch

    from prune_nas.core.arch import get_spec
    from prune_nas.core.generic.family import generic_spec
    from prune_nas.core.generic.refs import is_generic_ref
    from prune_nas.core.genome import MaskRef, base_genome, save_genome
    from prune_nas.core.masks import save_masks
    from prune_nas.core.version import __version__
    from prune_nas.training import distributed
    from prune_nas.training.data import NUM_CLASSES, load_dataset
    from prune_nas.training.runs import attach_weights

    start = time.perf_counter()
    m = get_method(method)
    if dataset not in NUM_CLASSES:
        raise UserError(f"unknown dataset {dataset!r}; known: {', '.join(NUM_CLASSES)}")
    given = dict(params or {})
    if ratio is not None:
        given["ratio"] = ratio
    model = model or default_model(m, dataset)
    generic = is_generic_ref(model)
    spec = generic_spec(model, None, 1000, 224, 3) if generic else get_spec(model)
    short = GENERIC_SHORT if generic else SHORT
    width = float(width if width is not None else short.get(dataset, {}).get("width", 1.0))
    if width <= 0:
        raise UserError(f"--width must be > 0, got {width:g}")
    size = input_size or default_input_size(spec, dataset)
    base = base_genome(model, num_classes=NUM_CLASSES[dataset], input_size=size, width_mult=width)
    m = m.for_genome(base)  # a generic model gets the method's generic variant
    full = method_params(m, given)
    if "seed" in full and "seed" not in given:
        full["seed"] = seed
    m.check(base, **full)
    protocol = protocol or protocol_for(dataset, epochs, lr)

    large_model, large = None, None
    if m.needs_training:
        if data is None:
            data = load_dataset(dataset, data_dir=data_dir, download=download, input_size=base.input_size,
                                in_channels=base.in_channels)
        large_model, large = trained_large_model(m, base, dataset, data, protocol, full, seed=seed,
                                                 device=device,
                                                 store_root=store_root, progress=progress, log=log)
    if not distributed.is_writer():  # the ranks of a --nproc launch trained it together; rank 0 alone prunes
        return distributed.broadcast(None)  # it and writes the files, the others go on with its result
    kwargs = {"seed": seed, **full}
    result = m.prune(base, large_model, data=data, **kwargs)

    out = Path(out_dir) if out_dir is not None else default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    name = run_name(model, width, dataset, m.name, full, seed, epochs=protocol.epochs, input_size=size,
                    lr=protocol.lr)
    reference = model
    if width != 1:
        ref_name = f"{model.replace(':', '-')}-x{width:g}-{dataset}"
        save_genome(base.replace(name=ref_name, provenance={"method": "unpruned", "reference": model,
                                                            "dataset": dataset, "width": width,
                                                            "prune_nas_version": __version__}),
                    out / f"{ref_name}.json")
        reference = (ref_name if out.resolve() == default_out_dir().resolve()
                     else str((out / f"{ref_name}.json").resolve()))
    shown = {k: v for k, v in full.items() if v is not None and v != () and v is not False}
    provenance = {**result.genome.provenance, "method": m.name, "params": shown, "dataset": dataset,
                  "ratio": full.get("ratio"), "seed": seed, "reference": reference, "source": m.citation,
                  "pruned_from": {"model": model, "width": width, "genome": base.key, "dataset": dataset},
                  "notes": result.notes, "prune_nas_version": __version__, "torch_version": torch.__version__,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if large is not None:
        provenance["pruned_from"]["large_model"] = {"key": large["key"], "test_top1": large["test_top1"],
                                               "epochs": large["epochs"], "device": str(device),
                                               "init": {"seed": seed, "genome": base.arch_dict()}}
        if large.get("training"):  # e.g. slimming's effective s and how it was derived
            provenance["pruned_from"]["large_model"]["training"] = large["training"]
            if large["training"].get("text"):
                provenance["notes"] = [f"{m.name}: {large['training']['text']}", *result.notes]
    genome = result.genome.replace(name=name, provenance=provenance, source_dir=out)
    masks_path = weights_path = None
    if result.masks is not None:
        masks_path = out / f"{name}.masks.npz"
        sha = save_masks(result.masks, masks_path)
        genome = genome.replace(sparsity=dataclasses.replace(genome.sparsity,
                                                             mask=MaskRef(masks_path.name, sha)))
    if result.state_dict is not None:
        weights_path = out / f"{name}.pt"
        genome = attach_weights(genome, result.state_dict, weights_path)
    path = save_genome(genome, out / f"{name}.json")
    return distributed.broadcast(Discovered(genome, path, base, weights_path, masks_path,
                                            list(provenance["notes"]), large,
                                            round(time.perf_counter() - start, 2)))
