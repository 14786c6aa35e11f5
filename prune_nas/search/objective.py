"""The objective of a study: a trial's candidate built, costed, trained from scratch (or its stored run
reused) and scored; and the ranks of a ``--nproc`` worker, which train each candidate together.

One candidate on several processes (``prune-nas search / worker --nproc N``): rank 0 alone talks to Optuna
(asks for the trial, costs and times it, reports each epoch, tells the result). Before it trains a
candidate it sends every rank the run to train (:class:`Job`, one broadcast); the ranks then train it
together as one DistributedDataParallel run (:func:`prune_nas.training.runs.run`: the run's key does not
depend on the number of ranks, rank 0 alone writes). Early stopping is decided by rank 0 and sent to the
others at each epoch's end, so every rank stops at the same step. The other ranks (:func:`follow`) never
open the study's storage: on several machines only rank 0's has to reach the database. When the study is
done rank 0 sends ``None`` (:func:`release_followers`) and they return; while it has no candidate for them
it says so at every turn of its loop (:func:`keep_followers`), so no rank sits in one broadcast for longer
than the process group's timeout. A rank that dies fails the launch (the launcher stops the others); the
trial being trained goes back to the study's queue, given back by rank 0
(:func:`prune_nas.search.studies.run_trial`) or, if rank 0 was killed first, retried once its heartbeat
falls silent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from prune_nas.core.units import human
from prune_nas.search.spaces import Space
from prune_nas.training import distributed
from prune_nas.training.data import Datasets

if TYPE_CHECKING:
    from prune_nas.core.genome import Genome
    from prune_nas.training.runs import RunSpec
    from prune_nas.training.store import Store


class TrainingFailed(Exception):
    """The run failed (e.g. non-finite loss): the trial is recorded as failed with the reason; the study goes
    on."""


class TrialTaken(Exception):
    """This worker's trial was settled by someone else meanwhile (its heartbeat went silent, e.g. the process
    was paused, and another worker failed it and queued a retry): this worker drops it and moves on."""


class StoppedByRank0(Exception):
    """On a rank other than 0: rank 0 stopped the candidate being trained (early stopping, or an error of its
    own); this rank drops the run and waits for the next."""


def storage_errors() -> tuple[type[BaseException], ...]:
    """What an unreachable database raises through Optuna (a server restart, a network cut)."""
    import sqlalchemy.exc

    return (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError, ConnectionError)


def genome_attr(genome: Genome) -> dict:
    """A genome as a trial attribute: its JSON without bulky provenance, plus where its mask file lives."""
    d = genome.to_dict()
    prov = d.pop("provenance", {}) or {}
    d["provenance"] = {k: prov[k] for k in ("method", "reference", "dataset", "ratio", "seed") if k in prov}
    if genome.sparsity and genome.sparsity.mask and genome.source_dir:
        d["source_dir"] = str(Path(genome.source_dir).resolve())
    return d


def genome_from_attr(d: dict) -> Genome:
    from prune_nas.core.genome import Genome

    d = dict(d)
    src = d.pop("source_dir", None)
    return Genome.from_dict(d, source_dir=Path(src) if src else None)


# ---- training a candidate, on one process or several -------------------------------------------------------
class EarlyStopping:
    """Training callback: report each epoch's test accuracy; stop the run when Optuna's rule says so.

    ``trial`` is None on the ranks other than 0 of a ``--nproc`` worker: they follow rank 0's verdict, sent at
    each epoch's end, so that all ranks leave the run at the same step (a rank that went on alone would wait
    forever for the others' gradients)."""

    def __init__(self, trial: optuna.Trial | None):
        self.trial = trial

    def on_epoch_end(self, model, epoch: int, metrics: dict) -> None:
        acc = metrics.get("test_top1")
        if acc is None:
            return
        verdict, error = None, None
        if self.trial is not None:
            try:
                self.trial.report(float(acc), epoch + 1)
                if self.trial.should_prune():
                    verdict = (f"stopped early after epoch {epoch + 1}: test top-1 {100 * acc:.2f}% is below "
                               "the median")
            except BaseException as e:  # the storage went away, the trial was taken: the others must hear
                error, verdict = e, f"rank 0 stopped: {type(e).__name__}"
        verdict = distributed.broadcast(verdict)
        if error is not None:
            raise error
        if verdict is None:
            return
        if self.trial is None:
            raise StoppedByRank0(verdict)
        self.trial.set_user_attr("early_stopped", verdict)
        raise optuna.TrialPruned(verdict)


@dataclass(frozen=True)
class Job:
    """One candidate to train, as rank 0 sends it to the other ranks of a ``--nproc`` worker."""

    spec: RunSpec
    reused: bool  # rank 0's store holds the run already: no dataset to load
    early_stopping: bool
    desc: str


def train(job: Job, store: Store, datasets: Datasets, *, device: str, progress: bool,
          trial: optuna.Trial | None = None) -> dict:
    """Train ``job`` (or reuse its stored run) on this process; every rank of a ``--nproc`` worker calls it
    with the same job, rank 0 with the trial."""
    from prune_nas.training.runs import run

    callbacks = [EarlyStopping(trial)] if job.early_stopping else []
    dataset = None if job.reused else datasets(job.spec.dataset, job.spec.genome)
    return run(job.spec, store, device=device, progress=progress, callbacks=callbacks, dataset=dataset,
               desc=job.desc)


# Rank 0's word to the other ranks when it has no candidate for them yet (it waits for other workers' last
# trials, or draws candidates that are infeasible): they wait for the next word. Sent at every turn of the
# worker's loop, so that no rank waits in one broadcast longer than a turn: a broadcast fails after
# distributed.TIMEOUT, and waiting for another machine's last trial can take hours.
WAIT = "wait"


def follow(store, *, device: str, data_dir=None, download: bool = False) -> int:
    """What the ranks other than 0 of a ``--nproc`` worker do: train, together with rank 0, each candidate it
    sends, until it sends ``None`` (the study is done). Returns how many candidates this rank trained."""
    from prune_nas.training.store import Store

    store = store if isinstance(store, Store) else Store(store)
    datasets = Datasets(data_dir, download)
    n = 0
    while (word := distributed.broadcast(None)) is not None:
        if word == WAIT:
            continue
        with contextlib.suppress(StoppedByRank0):
            train(word, store, datasets, device=device, progress=False)
        n += 1
    return n


def keep_followers() -> None:
    """Rank 0 of a ``--nproc`` worker, at each turn of its loop: no candidate yet (a no-op alone)."""
    distributed.broadcast(WAIT)


def release_followers() -> None:
    """Rank 0 of a ``--nproc`` worker: the study is done, the other ranks may return (a no-op alone)."""
    distributed.broadcast(None)


# ---- the objective -----------------------------------------------------------------------------------------
class Evaluator:
    """The objective: build the trial's genome, cost it, train it (or reuse the stored run), return values."""

    def __init__(self, space: Space, store: Store, *, device: str = "cpu", progress: bool = False,
                 log: Callable[[str], None] = print, data_dir=None, download: bool = False):
        from prune_nas.core.cost import count

        self.space, self.store, self.device, self.progress, self.log = space, store, device, progress, log
        self.protocol = space.protocol_obj()
        self.budget = space.budget_obj()
        self.limits = space.objective.limits(count(space.base))
        self.datasets = Datasets(data_dir, download)
        self.ran: list[int] = []

    def __call__(self, trial: optuna.Trial):
        self.ran.append(trial.number)
        try:
            return self._run(trial)
        except optuna.TrialPruned as e:
            self.log(f"trial {trial.number}: {e}")
            raise
        except optuna.exceptions.UpdateFinishedTrialError:
            raise TrialTaken(f"trial {trial.number}") from None
        # Anything else (storage down, Ctrl-C, a lost rank) reaches run_trial, which gives the trial back.

    def _values(self, acc: float, cost, latency_ms: float | None) -> float | tuple[float, ...]:
        if not self.space.objective.multi:
            return acc
        metric = self.space.objective.metrics[1]
        return (acc, float(latency_ms if metric == "latency" else getattr(cost, metric)))

    def _latency(self, trial: optuna.Trial, genome: "Genome"):
        """Measured (or cached) batch-1 latency of the candidate on this worker's device, as user attributes;
        says so when the latency limit lies within the measurement's noise."""
        from prune_nas.core.latency import measure

        lat = measure(genome, device=self.device, batch=1, repeats=10)
        for k, v in {"latency_ms": lat.median_ms, "latency_iqr_ms": lat.iqr_ms,
                     "latency_device": lat.device_name}.items():
            trial.set_user_attr(k, v)
        limit = self.space.objective.max_latency_ms
        if limit is not None and abs(lat.median_ms - limit) <= lat.iqr_ms:
            trial.set_user_attr("latency_note", f"{lat.median_ms:.3f} ms is within the measurement noise "
                                                f"({lat.iqr_ms:.3f} ms IQR) of the {limit:g} ms limit")
        return lat

    def _run(self, trial: optuna.Trial):
        from prune_nas.core.cost import count
        from prune_nas.training.runs import RunSpec

        space, attrs = self.space, trial.user_attrs
        params = {p.name: trial.suggest_float(p.name, p.lo, p.hi, step=p.step) for p in space.param_defs()}
        origin = attrs.get("origin", "sampled")
        if "genome" in attrs:
            genome = genome_from_attr(attrs["genome"])
        else:
            genome = space.genome(params, name=f"{space.name}-t{trial.number}")
        seed = int(attrs.get("seed", 0))
        cost = count(genome)
        spec = RunSpec(genome, space.dataset, self.protocol, self.budget, seed)
        budget = spec.resolved_budget()
        info = {"origin": origin, "seed": seed, "genome_key": genome.key, "genome_name": genome.name,
                "budget": budget["kind"], "epochs": budget["epochs"], "params": cost.params,
                "flops": cost.flops, "dataset": space.dataset, "run_key": spec.key,
                "result": str(self.store.path_for(spec.key))}
        if "genome" not in attrs:
            info["genome"] = genome_attr(genome)
        for k, v in info.items():
            trial.set_user_attr(k, v)
        head = (f"trial {trial.number} [{origin}, seed {seed}] {genome.name or genome.key}: "
                f"{human(cost.params)} params, {human(cost.flops)} FLOPs")
        over = {what: (getattr(cost, what) - limit) / limit for what, limit in self.limits.items()}
        bad = [f"{what} {human(getattr(cost, what))} > {human(self.limits[what])}"
               for what, v in over.items() if v > 0]
        latency_ms = None
        if space.objective.needs_latency:
            lat = self._latency(trial, genome)
            latency_ms = lat.median_ms
            head += f", {latency_ms:.3f} ms"
            limit = space.objective.max_latency_ms
            if limit is not None:
                over["latency_ms"] = (latency_ms - limit) / limit
                if latency_ms > limit:
                    bad.append(f"latency {latency_ms:.3f} ms > {limit:g} ms")
        for what, v in over.items():
            trial.set_constraint(f"max_{what}", v)
        if bad:
            msg = "infeasible, not trained: " + ", ".join(bad)
            trial.set_user_attr("infeasible", msg)
            self.log(f"{head}: {msg}")
            return self._values(0.0, cost, latency_ms)
        reused = spec.key in self.store
        epochs = budget["epochs"]
        self.log(f"{head}: " + ("reusing the stored run" if reused else f"training {epochs} epochs"))
        job = Job(spec, reused, early_stopping=not space.objective.multi and bool(space.early_stopping),
                  desc=f"trial {trial.number}")
        distributed.broadcast(job)  # the other ranks of a --nproc worker train it with this one
        record = train(job, self.store, self.datasets, device=self.device, progress=self.progress,
                       trial=trial)
        if record["status"] != "ok":
            reason = record.get("reason") or "training failed"
            trial.set_user_attr("fail_reason", reason)
            self.log(f"trial {trial.number}: FAILED ({reason})")
            raise TrainingFailed(reason)
        acc = float(record["final_top1"])
        for k, v in {"accuracy": acc, "best_accuracy": record.get("best_top1"), "reused": reused,
                     "wall_time_s": record.get("wall_time_s")}.items():
            trial.set_user_attr(k, v)
        how = "reused" if reused else f"trained in {record.get('wall_time_s') or 0:.0f}s"
        self.log(f"trial {trial.number}: test top-1 {100 * acc:.2f}% ({epochs} epochs, {how})")
        if seed == 0 and space.seeds > 1 and origin == "sampled":
            _enqueue_replicates(trial, genome.key, space.seeds)
        return self._values(acc, cost, latency_ms)


def _enqueue_replicates(trial: optuna.Trial, key: str, seeds: int) -> None:
    study = trial.study
    have = {t.user_attrs.get("seed") for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get("genome_key") == key and t.state != TrialState.FAIL}
    for s in range(1, seeds):
        if s not in have:
            attrs = {"origin": "sampled", "seed": s, "genome_key": key, "replicate_of": trial.number}
            study.enqueue_trial(dict(trial.params), user_attrs=attrs)


