"""The one training loop, the paper's protocol, and the Scratch-E / Scratch-B budgets.

>>> Protocol.cifar().lr_milestones()
[80, 120]
>>> scratch_b_epochs(reference_flops=3, candidate_flops=2, base_epochs=160)
240

Pruning methods that need a special training phase (Network Slimming's L1 on BN scales, SSS's block scales)
pass callbacks to :func:`train_model` instead of writing their own loop. A callback is any object with some of
these methods:

* ``extra_loss(model) -> Tensor``: added to the cross-entropy before backward;
* ``after_backward(model)``: e.g. add ``s * sign(gamma)`` to BN weight gradients;
* ``after_step(model)``: after the optimizer step;
* ``on_epoch_end(model, epoch, metrics)``: ``metrics`` is that epoch's curve entry.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from prune_nas.training.data import Dataset

if TYPE_CHECKING:
    from pathlib import Path

    from prune_nas.core.genome import Genome
    from prune_nas.training.store import Store

IMAGENET_RATIO_CAP = 2.0  # ImageNet Scratch-B: ratio >= 2 trains 2 x 90 = 180 epochs (lr steps every 60)


@dataclass(frozen=True)
class Protocol:
    """Optimisation hyper-parameters. Defaults are the paper's CIFAR protocol.

    ``lr_steps`` are fractions of ``epochs``: the lr is multiplied by ``lr_gamma`` at the start of epoch
    ``int(f * epochs)`` for each f, so a Scratch-B run that trains longer moves its steps with it.
    """

    epochs: int = 160
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    lr_steps: tuple[float, ...] = (0.5, 0.75)
    lr_gamma: float = 0.1
    crop_padding: int = 4
    flip: bool = True
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_steps", tuple(float(f) for f in self.lr_steps))

    @classmethod
    def cifar(cls, **overrides: Any) -> "Protocol":
        return replace(cls(), **overrides)

    @classmethod
    def imagenet(cls, **overrides: Any) -> "Protocol":
        """90 epochs, batch 256, lr 0.1 divided by 10 every 30 epochs (the folder loader augments)."""
        return replace(cls(epochs=90, batch_size=256, lr_steps=(1 / 3, 2 / 3), crop_padding=0), **overrides)

    @classmethod
    def finetune(cls, base: "Protocol | None" = None, **overrides: Any) -> "Protocol":
        """Fine-tuning a pruned model: 40 epochs at constant lr 0.001 (CIFAR). ImageNet: pass ``epochs``
        (20 for L1-norm, 10 for weight-level, 5 for slimming) with ``base=Protocol.imagenet()``."""
        return replace(base or cls(), **{"epochs": 40, "lr": 0.001, "lr_steps": (), **overrides})

    @classmethod
    def for_dataset(cls, name: str, **overrides: Any) -> "Protocol":
        """The paper's protocol for a dataset. Digits turn flips off (a mirrored digit is another digit)."""
        if name == "imagenet":
            return cls.imagenet(**overrides)
        return cls.cifar(**{"flip": name != "digits", **overrides})

    def with_epochs(self, epochs: int) -> "Protocol":
        return replace(self, epochs=int(epochs))

    def lr_milestones(self) -> list[int]:
        """0-based epochs at whose start the lr drops. The epsilon keeps 2/3 * 90 at 60 despite binary
        fractions (int() floors otherwise); no step comes before epoch 1, so a short run starts at ``lr``."""
        return [max(1, int(f * self.epochs + 1e-9)) for f in self.lr_steps]

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``, to 12 significant digits (0.001, not 0.0010000000000000002)."""
        return float(f"{self.lr * self.lr_gamma ** sum(epoch >= m for m in self.lr_milestones()):.12g}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_steps"] = list(self.lr_steps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Protocol":
        return cls(**{**d, "lr_steps": tuple(d.get("lr_steps", ()))})


def scratch_b_epochs(reference_flops: int, candidate_flops: int, base_epochs: int,
                     cap: float | None = None) -> int:
    """Scratch-B epochs: ``int(base_epochs * FLOPs(reference) / FLOPs(candidate))``, at least 1.

    Computed in exact integer arithmetic (floor of a rational), so no float rounding can move it by an epoch.
    ``cap`` bounds the FLOPs ratio: the paper's ImageNet rule is ``cap=2`` with 90 base epochs (ratio >= 2
    gives 180 epochs, else ``int(90 * ratio)``), see :data:`IMAGENET_RATIO_CAP`.

    >>> scratch_b_epochs(10, 2, 90, cap=IMAGENET_RATIO_CAP), scratch_b_epochs(3, 2, 90, cap=2.0)
    (180, 135)
    """
    if reference_flops <= 0 or candidate_flops <= 0:
        raise ValueError("FLOPs must be positive")
    epochs = (int(base_epochs) * int(reference_flops)) // int(candidate_flops)
    if cap is not None:
        epochs = min(epochs, int(base_epochs * cap))
    return max(1, epochs)


# ---- the loop ----------------------------------------------------------------------------------------------
@dataclass
class TrainHistory:
    """What one training run produced. ``curve`` has one entry per epoch."""

    curve: list[dict] = field(default_factory=list)
    status: str = "ok"  # "ok" | "failed"
    reason: str | None = None
    wall_time_s: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status != "ok"

    def summary(self) -> dict:
        """Final and best test accuracy (top-5 too when the curve has it)."""
        out: dict[str, Any] = {"status": self.status, "reason": self.reason, "epochs_run": len(self.curve)}
        scored = [c for c in self.curve if c.get("test_top1") is not None]
        for k in ("top1", "top5"):
            vals = [c[f"test_{k}"] for c in scored if c.get(f"test_{k}") is not None]
            out[f"final_{k}"] = vals[-1] if vals else None
            out[f"best_{k}"] = max(vals) if vals else None
        out["best_epoch"] = max(scored, key=lambda c: c["test_top1"])["epoch"] if scored else None
        return out


def _hooks(callbacks: Sequence[Any], name: str) -> list:
    return [getattr(cb, name) for cb in callbacks if callable(getattr(cb, name, None))]


def make_optimizer(model: nn.Module, protocol: Protocol) -> torch.optim.SGD:
    # Weight decay on every parameter, BN included, as in the reference code.
    return torch.optim.SGD(model.parameters(), lr=protocol.lr, momentum=protocol.momentum,
                           weight_decay=protocol.weight_decay, nesterov=protocol.nesterov)


def train_model(model: nn.Module, dataset: Dataset, protocol: Protocol, *, seed: int,
                device: str | torch.device = "cpu", callbacks: Iterable[Any] = (), progress: bool = True,
                desc: str = "", evaluate: bool = True, engine: Any = "eager") -> TrainHistory:
    """Train ``model`` in place with SGD under ``protocol`` and return its per-epoch history.

    ``seed`` drives shuffling, crop offsets and flips (one CPU generator) and the global torch RNG (dropout);
    model initialisation is the caller's. A non-finite training loss ends the run with ``status="failed"``
    and the reason; the model is left as it was at that point. ``engine`` is ``"eager"`` (plain PyTorch) or
    ``"fast"`` (device-resident epochs, bf16 + channels_last + one CUDA graph per step on CUDA): see
    ``prune_nas.training.engine``; both run this same loop.

    >>> from prune_nas.core.builder import build
    >>> from prune_nas.core.genome import base_genome
    >>> from prune_nas.training.data import load_dataset
    >>> g = base_genome("vgg11", width_mult=0.125, input_size=16)
    >>> h = train_model(build(g), load_dataset("synthetic", input_size=16), Protocol(epochs=1), seed=0,
    ...                 progress=False)
    >>> len(h.curve), h.status
    (1, 'ok')
    """
    from tqdm.auto import tqdm

    from prune_nas.training.engine import make_step

    callbacks = list(callbacks)
    on_epoch_end = _hooks(callbacks, "on_epoch_end")
    device = torch.device(device)
    model.to(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    step = make_step(model, protocol, device, engine, callbacks)
    history = TrainHistory()
    steps = step.steps_per_epoch(dataset, protocol.batch_size)
    bar = tqdm(total=protocol.epochs * steps, desc=desc or "train", unit="step", leave=False,
               disable=None if progress else True, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        for epoch in range(protocol.epochs):
            lr = protocol.lr_at(epoch)
            step.set_lr(lr)
            bar.set_description(f"{desc + ' ' if desc else ''}epoch {epoch + 1}/{protocol.epochs}")
            model.train()
            t0 = time.perf_counter()
            step.reset()  # sums stay on the device; one sync per epoch keeps GPU runs asynchronous
            seen = 0
            for x, y in step.batches(dataset, protocol, gen):
                step(x, y)
                seen += len(y)
                bar.update(1)
            loss_sum, correct = step.loss_sum, step.correct
            mean_loss = float(loss_sum) / max(seen, 1)
            entry: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "loss": mean_loss,
                                     "train_top1": float(correct) / max(seen, 1)}
            entry["train_time_s"] = round(time.perf_counter() - t0, 4)
            if not math.isfinite(mean_loss):
                history.curve.append(entry)
                history.status = "failed"
                history.reason = f"non-finite training loss ({mean_loss}) in epoch {epoch + 1}"
                break
            if evaluate:
                m = evaluate_model(model, dataset, device, batch_size=protocol.eval_batch_size)
                entry.update({f"test_{k}": v for k, v in m.items()})
            history.curve.append(entry)
            bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{entry['train_top1']:.3f}",
                            test=f"{entry.get('test_top1', float('nan')):.3f}")
            for fn in on_epoch_end:
                fn(model, epoch, entry)
    finally:
        bar.close()
        step.release()  # a CUDA graph holds a private memory pool: free it before the next candidate
        history.wall_time_s = round(time.perf_counter() - start, 3)
    return history


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset: Dataset, device: str | torch.device = "cpu", *,
                   batch_size: int = 256) -> dict:
    """Test-set top-1 and mean loss; top-5 too when the dataset has more than 10 classes (else ``None``)."""
    model.eval()
    device = torch.device(device)
    top1 = torch.zeros((), device=device, dtype=torch.long)
    top5 = torch.zeros((), device=device, dtype=torch.long)
    loss = torch.zeros((), device=device, dtype=torch.float64)
    n = 0
    k5 = dataset.num_classes > 10
    for x, y in dataset.test_batches(batch_size, device):
        out = model(x)
        loss += F.cross_entropy(out, y, reduction="sum").double()
        top1 += (out.argmax(1) == y).sum()
        if k5:
            top5 += (out.topk(5, 1).indices == y[:, None]).any(1).sum()
        n += len(y)
    n = max(n, 1)
    return {"top1": float(top1) / n, "top5": float(top5) / n if k5 else None, "loss": float(loss) / n}


# ---- budgets, run specs, reuse -----------------------------------------------------------------------------
RUN_FORMAT = "prune-nas.run"
RUN_VERSION = 1
INITS = ("scratch", "finetune")


@dataclass(frozen=True)
class Budget:
    """How long to train. ``epochs`` (Scratch-E): the base epochs as they are. ``flops`` (Scratch-B): the
    same training FLOPs as ``reference`` trained for the base epochs, ``cap`` bounding the FLOPs ratio.
    ``epochs=None`` takes the protocol's epochs."""

    kind: str = "epochs"
    epochs: int | None = None
    reference: "Genome | None" = None
    cap: float | None = None

    def __post_init__(self) -> None:
        from prune_nas.core.errors import UserError

        if self.kind not in ("epochs", "flops"):
            raise UserError(f"unknown budget {self.kind!r}; use 'epochs' (Scratch-E) or 'flops' (Scratch-B)")
        if self.kind == "flops" and self.reference is None:
            raise UserError("a flops budget (Scratch-B) needs a reference genome")
        if self.epochs is not None and self.epochs < 1:
            raise UserError(f"epochs must be >= 1, got {self.epochs}")

    def resolve(self, genome: "Genome", base_epochs: int) -> dict:
        """The budget with every number filled in: base epochs, FLOPs of both genomes, ratio, epochs."""
        from prune_nas.core.cost import count

        base = self.epochs or base_epochs
        out: dict[str, Any] = {"kind": self.kind, "base_epochs": base}
        if self.kind == "epochs":
            return {**out, "epochs": base}
        ref, cand = count(self.reference).flops, count(genome).flops
        return {**out, "reference": self.reference.key, "reference_flops": ref, "candidate_flops": cand,
                "ratio": round(ref / cand, 6), "cap": self.cap,
                "epochs": scratch_b_epochs(ref, cand, base, self.cap)}


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one training run. Its ``key`` hashes canonical JSON of the architecture
    (not the genome's name), dataset, effective protocol, resolved budget, seed and initialisation, so the
    same run asked for twice is trained once. Where the data lives and which device runs it are not part of
    the key; the record says which device produced it.

    ``init="finetune"`` starts from the inherited weights named by ``genome.provenance["weights"]``
    (``{"file": relative .pt path, "sha256": ...}``); their hash is part of the key.
    """

    genome: "Genome"
    dataset: str
    protocol: Protocol = field(default_factory=Protocol)
    budget: Budget = field(default_factory=Budget)
    seed: int = 0
    init: str = "scratch"

    def __post_init__(self) -> None:
        from prune_nas.core.errors import UserError

        if self.init not in INITS:
            raise UserError(f"unknown init {self.init!r}; use one of {', '.join(INITS)}")

    def resolved_budget(self) -> dict:
        return self.budget.resolve(self.genome, self.protocol.epochs)

    def effective_protocol(self) -> Protocol:
        return self.protocol.with_epochs(self.resolved_budget()["epochs"])

    def init_dict(self) -> dict:
        if self.init == "scratch":
            return {"kind": "scratch"}
        return {"kind": "finetune", "weights_sha256": inherited_weights(self.genome)[1]}

    def key_dict(self) -> dict:
        return {"format": RUN_FORMAT, "version": RUN_VERSION, "genome": self.genome.arch_dict(),
                "dataset": self.dataset, "protocol": self.effective_protocol().to_dict(),
                "budget": self.resolved_budget(), "seed": self.seed, "init": self.init_dict()}

    @property
    def key(self) -> str:
        from prune_nas.core.genome import _hash

        return _hash(self.key_dict())

    def to_dict(self) -> dict:
        """The key's content plus the names a reader wants (genome and reference names, provenance)."""
        d = self.key_dict()
        d["genome"] = self.genome.to_dict()
        if self.budget.reference is not None:
            d["budget"]["reference_name"] = self.budget.reference.name
        return d


def inherited_weights(genome: "Genome") -> tuple["Path", str]:
    """Path and SHA-256 of the inherited weights a genome names in ``provenance["weights"]``."""
    from pathlib import Path

    from prune_nas.core.errors import UserError
    from prune_nas.core.masks import file_sha256

    ref = genome.provenance.get("weights")
    if not ref:
        raise UserError(f"genome {genome.name or genome.key} names no inherited weights "
                        "(provenance.weights); fine-tuning needs the pruning method's output")
    file, sha = (ref["file"], ref.get("sha256")) if isinstance(ref, dict) else (str(ref), None)
    path = (genome.source_dir or Path.cwd()) / file
    if not path.exists():
        raise UserError(f"inherited weights not found: {path}")
    actual = file_sha256(path)
    if sha is not None and sha != actual:
        raise UserError(f"inherited weights {path} do not match the sha256 recorded in the genome")
    return path, actual


def attach_weights(genome: "Genome", state_dict: dict, path: "Path") -> "Genome":
    """Save inherited weights next to a genome file and return the genome naming them (file + sha256).
    ``path`` is the .pt file; the genome should be saved in the same folder."""
    from prune_nas.core.atomic import atomic_write
    from prune_nas.core.masks import file_sha256

    cpu = {k: v.detach().cpu() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: torch.save(cpu, tmp), ".pt")
    weights = {"file": path.name, "sha256": file_sha256(path)}
    return genome.replace(provenance={**genome.provenance, "weights": weights}, source_dir=path.parent)


def init_model(spec: RunSpec) -> nn.Module:
    """A fresh model for the spec (seeded by the spec's seed), or the inherited weights for fine-tuning."""
    from prune_nas.core.builder import build

    torch.manual_seed(spec.seed)
    model = build(spec.genome)
    if spec.init == "finetune":
        from prune_nas.core.errors import UserError

        path, _ = inherited_weights(spec.genome)
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("weight_mask")]  # masks come from the genome
        if missing or unexpected:
            raise UserError(f"inherited weights {path} do not fit the genome: missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}")
        with torch.no_grad():  # the genome's mask wins over whatever the file holds
            for m in model.modules():
                if hasattr(m, "weight_mask"):
                    m.weight.mul_(m.weight_mask)
    return model


def run(spec: RunSpec, store: "Store", *, device: str | torch.device = "cpu", progress: bool = True,
        dataset: Dataset | None = None, data_dir: Any = None, download: bool = False,
        retry_failed: bool = False, save_weights: bool = False, desc: str = "",
        callbacks: Iterable[Any] = (), engine: Any = "eager") -> dict:
    """Train ``spec`` and store its record, or return the stored record when the spec already ran.

    A failed run (non-finite loss) is stored too and reused like a finished one unless ``retry_failed``.
    ``dataset`` lets a caller load a dataset once for many runs. ``callbacks`` (see :func:`train_model`) may
    only observe, e.g. report each epoch or stop the run by raising (then nothing is stored); they are not
    part of the run's key.

    On CPU the same spec, seed and thread count reproduce the record's curve and accuracy exactly (the record
    notes ``threads``: the reduction order inside conv kernels follows the thread count); CUDA runs are close
    but not bit-identical (cuDNN picks non-deterministic kernels).
    """
    from prune_nas.core.version import __version__
    from prune_nas.core.cost import count
    from prune_nas.training.data import load_dataset
    from prune_nas.core.errors import UserError

    key = spec.key
    found = store.get(key)
    if found is not None and (found.get("status") == "ok" or not retry_failed):
        return found
    g = spec.genome
    if dataset is None:
        dataset = load_dataset(spec.dataset, data_dir=data_dir, download=download, input_size=g.input_size,
                               in_channels=g.in_channels)
    if dataset.num_classes != g.num_classes:
        raise UserError(f"genome {g.name or g.key} has {g.num_classes} classes, {dataset.name} has "
                        f"{dataset.num_classes}")
    protocol = spec.effective_protocol()
    model = init_model(spec)
    history = train_model(model, dataset, protocol, seed=spec.seed, device=device, progress=progress,
                          desc=desc or (g.name or g.key), callbacks=callbacks, engine=engine)
    cost = count(g)
    summary = history.summary()
    if dataset.num_classes <= 10:
        summary.pop("final_top5"), summary.pop("best_top5")
    record = {"format": RUN_FORMAT, "version": RUN_VERSION, "key": key, **summary,
              "spec": spec.to_dict(), "genome_name": g.name, "dataset": dataset.info(),
              "protocol": protocol.to_dict(), "epochs": protocol.epochs, "params": cost.params,
              "flops": cost.flops, "curve": history.curve, "wall_time_s": history.wall_time_s,
              "device": _device_name(device), "engine": _engine_dict(engine, device),
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "prune_nas": __version__, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if save_weights and not history.failed:
        path = store.weights_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
        record["weights"] = path.name
    store.put(record)
    return record


def _engine_dict(engine: Any, device: str | torch.device) -> dict:
    from prune_nas.training.engine import EngineOptions

    options = EngineOptions(engine) if isinstance(engine, str) else engine
    return options.resolved(torch.device(device)).to_dict()


def _device_name(device: str | torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    import os
    import platform

    name = platform.processor() or platform.machine()
    try:  # Linux: the CPU's marketing name says more than "x86_64"
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu:{name} ({os.cpu_count()} cores)"
