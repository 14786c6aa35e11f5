"""Training runs: a frozen description (genome, data set, protocol, budget, initialisation, seed) whose
canonical hash keys its record in the store, so the same run is trained once; plus inherited-weights I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import torch
from torch import nn

from prune_nas.training import distributed
from prune_nas.training.data import Dataset
from prune_nas.training.loop import Checkpoint, _device_name, train_model
from prune_nas.training.protocol import Budget, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    from prune_nas.core.genome import Genome
    from prune_nas.training.store import Store

RUN_FORMAT = "prune-nas.run"
RUN_VERSION = 1
INITS = ("scratch", "finetune", "winning_ticket")

@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one training run. Its ``key`` hashes canonical JSON of the architecture
    (not the genome's name), dataset, effective protocol, resolved budget, seed and initialisation, so the
    same run asked for twice is trained once. Where the data lives and which device runs it are not part of
    the key; the record says which device produced it.

    ``init="finetune"`` starts from the inherited weights named by ``genome.provenance["weights"]``
    (``{"file": relative .pt path, "sha256": ...}``); their hash is part of the key.

    ``init="winning_ticket"`` starts from the large model's *original initialisation*, sliced to the kept
    channels (or masked, for a sparse genome): the file ``genome.provenance["ticket"]`` names
    (``prune_nas.design.ticket.attach_ticket`` derives and writes it). The key holds what identifies that
    initialisation: the large model's seed and genome, and the kept channels or the mask.
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
            # The model's BN scale init (ModelSpec.bn_init) is recorded where it is not 1, so those runs (and
            # only those) are told apart from runs that started at 1.
            bn = self.genome.spec.bn_init
            return {"kind": "scratch", **({"bn_init": bn} if bn != 1.0 else {})}
        if self.init == "winning_ticket":
            ticket = ticket_record(self.genome)
            return {"kind": "winning_ticket", **{k: ticket[k] for k in ("seed", "large_genome", "kept")}}
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


def tensors_sha256(state: dict) -> str:
    """SHA-256 of a state dict's content (names, dtypes, shapes, values), not of the file holding it: a
    ``torch.save`` zip embeds the name it was first written under, so identical weights saved twice hash
    differently as files."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_CONTENT_SHA: dict[tuple, str] = {}  # (path, size, mtime) -> tensors_sha256: RunSpec.key asks often


def load_weights(path: "Path") -> dict:
    """A weights file a user or a genome names (a checked regular file, tensors only), or a UserError."""
    from prune_nas.core.userfiles import read_state_dict

    return read_state_dict(path, "inherited weights")


def inherited_weights(genome: "Genome", field: str = "weights") -> tuple["Path", str]:
    """Path and content hash (:func:`tensors_sha256`) of the inherited weights a genome names in
    ``provenance["weights"]`` (or of the winning-ticket initialisation in ``provenance["ticket"]``, with
    ``field="ticket"``). The recorded ``sha256`` may be the content hash or, in genomes written before content
    hashing, the file's."""
    from pathlib import Path

    from prune_nas.core.errors import UserError
    from prune_nas.core.masks import file_sha256
    from prune_nas.core.userfiles import checked_file

    what = "inherited weights" if field == "weights" else "winning-ticket weights"
    ref = ticket_record(genome) if field == "ticket" else genome.provenance.get(field)
    if not ref:
        raise UserError(f"genome {genome.name or genome.key} names no inherited weights "
                        "(provenance.weights); fine-tuning needs the pruning method's output")
    file, sha = (ref.get("file"), ref.get("sha256")) if isinstance(ref, dict) else (str(ref), None)
    if not isinstance(file, str) or not file:
        raise UserError(f"genome {genome.name or genome.key}: provenance.{field}.file must be a file name")
    path = checked_file((genome.source_dir or Path.cwd()) / file, what)
    st = path.stat()
    cache = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if cache not in _CONTENT_SHA:
        try:
            _CONTENT_SHA[cache] = tensors_sha256(load_weights(path))
        except UserError as e:
            if sha is not None:  # the file the genome recorded was replaced by something else
                raise UserError(f"{what} {path} do not match the sha256 recorded in the genome "
                                f"({e})") from None
            raise
    content = _CONTENT_SHA[cache]
    if sha is not None and sha != content and sha != file_sha256(path):
        raise UserError(f"{what} {path} do not match the sha256 recorded in the genome")
    return path, content


def ticket_record(genome: "Genome") -> dict:
    """``genome.provenance["ticket"]``: the winning-ticket file and what identifies the initialisation."""
    from prune_nas.core.errors import UserError

    ticket = genome.provenance.get("ticket")
    if not isinstance(ticket, dict) or not all(k in ticket for k in ("file", "seed", "large_genome", "kept")):
        raise UserError(f"genome {genome.name or genome.key} names no winning-ticket initialisation "
                        "(provenance.ticket); it is derived for genomes pruned by `prune-nas discover` "
                        "(prune_nas.design.ticket.attach_ticket)")
    return ticket


def attach_weights(genome: "Genome", state_dict: dict, path: "Path") -> "Genome":
    """Save inherited weights next to a genome file and return the genome naming them (file + sha256).
    ``path`` is the .pt file; the genome should be saved in the same folder."""
    from prune_nas.core.atomic import atomic_write

    cpu = {k: v.detach().cpu() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: torch.save(cpu, tmp), ".pt")
    weights = {"file": path.name, "sha256": tensors_sha256(cpu)}
    return genome.replace(provenance={**genome.provenance, "weights": weights}, source_dir=path.parent)


def init_model(spec: RunSpec) -> nn.Module:
    """A fresh model for the spec (seeded by the spec's seed), or the inherited weights for fine-tuning, or
    the winning-ticket initialisation."""
    from prune_nas.core.builder import build

    torch.manual_seed(spec.seed)
    model = build(spec.genome)
    if spec.init != "scratch":
        from prune_nas.core.errors import UserError

        path, _ = inherited_weights(spec.genome, "ticket" if spec.init == "winning_ticket" else "weights")
        state = load_weights(path)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("weight_mask")]  # masks come from the genome
        if missing or unexpected:
            raise UserError(f"weights {path} do not fit the genome: missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}")
        with torch.no_grad():  # the genome's mask wins over whatever the file holds
            for m in model.modules():
                if hasattr(m, "weight_mask"):
                    m.weight.mul_(m.weight_mask)
    return model


def run(spec: RunSpec, store: "Store", *, device: str | torch.device = "cpu", progress: bool = True,
        dataset: Dataset | None = None, data_dir: Any = None, download: bool = False,
        retry_failed: bool = False, save_weights: bool = False, desc: str = "",
        callbacks: Iterable[Any] = (), engine: Any = "eager", checkpoint_every_s: float = 120.0) -> dict:
    """Train ``spec`` and store its record, or return the stored record when the spec already ran.

    A failed run (non-finite loss) is stored too and reused like a finished one unless ``retry_failed``.
    ``dataset`` lets a caller load a dataset once for many runs. ``callbacks`` (see :func:`train_model`) may
    only observe, e.g. report each epoch or stop the run by raising (then nothing is stored); they are not
    part of the run's key.

    On CPU the same spec, seed and thread count reproduce the record's curve and accuracy exactly (the record
    notes ``threads``: the reduction order inside conv kernels follows the thread count); CUDA runs are close
    but not bit-identical (cuDNN picks non-deterministic kernels).

    A run killed mid-way (Ctrl-C, SIGKILL, a lost machine) resumes from its checkpoint (written every
    ``checkpoint_every_s`` seconds, at an epoch's end) when the same spec runs again; on CPU the resumed
    run's record equals an uninterrupted one's (but ``wall_time_s``).
    """
    from prune_nas.core.cost import count
    from prune_nas.core.errors import UserError
    from prune_nas.core.version import __version__
    from prune_nas.training.data import load_dataset

    key = spec.key
    found = distributed.broadcast(store.get(key))  # rank 0's store decides, so all ranks agree
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
    # A killed run resumes from its checkpoint when the same spec is asked for again.
    checkpoint = Checkpoint(store.checkpoint_path(key), key, checkpoint_every_s)
    history = train_model(model, dataset, protocol, seed=spec.seed, device=device, progress=progress,
                          desc=desc or (g.name or g.key), callbacks=callbacks, engine=engine,
                          checkpoint=checkpoint)
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
              "prune_nas": __version__, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "distributed": distributed.describe()}
    if not distributed.is_writer():  # only rank 0 writes; the others wait until it has
        distributed.barrier()
        return record
    if save_weights and not history.failed:
        path = store.weights_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
        record["weights"] = path.name
    store.put(record)
    checkpoint.delete()
    distributed.barrier()
    return record


def _engine_dict(engine: Any, device: str | torch.device) -> dict:
    from prune_nas.training.engine import EngineOptions

    options = EngineOptions(engine) if isinstance(engine, str) else engine
    return options.resolved(torch.device(device)).to_dict()
