"""Architecture search with Optuna over a declared space (``spaces.py``): the only module that imports optuna.

One **trial** is one candidate genome x budget x seed, trained from scratch by the training engine
(``train.run``, so every run is stored under its spec's hash and reused when asked for again). A space with
``seeds: k`` runs each sampled candidate as k trials: seed 0 is sampled, seeds 1..k-1 are enqueued with the
same parameters when seed 0 finishes. Each trial keeps, as user attributes, readable by Optuna's own tools
(``optuna trials``, ``optuna-dashboard``): ``origin`` (sampled, ``seed:<genome>``, ``uniform:r<ratio>``),
``seed``, ``genome_key``, ``genome_name``, ``genome`` (the JSON), ``budget``, ``epochs``, ``params``,
``flops``, ``latency_ms`` / ``latency_iqr_ms`` / ``latency_device`` (latency studies), ``run_key``,
``result`` (path of the run record), then ``accuracy``, ``best_accuracy``,
``reused``, ``wall_time_s``, and on failure ``fail_reason``.

Seeding: the genomes a space names (pruning methods' outputs, mined and transferred designs, library names)
and uniform pruning at the listed ratios are enqueued before any sampling, with the genome in the trial's
user attributes (what trains is exactly that genome) and its projection onto the space as the trial's
parameters (what the sampler learns from), so pruning-found architectures compete with searched ones under
the same budget, seeds and training.

Objectives: accuracy (final test top-1) with FLOPs / params / latency constraints, or two objectives (accuracy
up, FLOPs, params or latency down) whose Pareto front :func:`summarize` reports. Constraints go through
Optuna's own mechanism: ``Trial.set_constraint`` (Optuna 5 deprecated the samplers' ``constraints_func``
for it; TPE and NSGA-II read the stored values), so ``FrozenTrial.constraints``, ``study.best_trial`` /
``best_trials``, the samplers and Optuna's plots all see an infeasible trial as infeasible (a positive
constraint value: the relative excess over the limit). An infeasible candidate is costed (and timed, for a
latency limit), never trained, and completes with accuracy 0.0, which nothing that reads the constraints
ranks. Latency is measured by :mod:`prune_nas.core.latency` on the worker's device at batch 1, float32 and
torch's thread setting, cached per machine: a latency study should run its workers on one kind of
machine. Single-objective studies stop weak trials early (Optuna calls this "pruning"; here it is
**early stopping**, to keep "pruning" for networks): each epoch's test accuracy is reported and Optuna's
median rule decides.

Storage: by default one SQLite file per study, ``$PRUNE_NAS_HOME/studies/<name>.db`` (else
``artifacts/studies/``); any Optuna RDB URL (``sqlite:///...``, ``postgresql://...``, ``mysql://...``) for
several workers; PostgreSQL is the supported multi-machine setup. RDB storages run Optuna's heartbeat: a
worker killed mid-trial (SIGKILL included) stops beating, the next worker that looks (every worker looks
before each trial and while it waits for the last ones) marks that trial failed and enqueues a retry with the
same parameters and attributes; the retry reuses the stored result if the training had finished. A trial that
any other error interrupts (Ctrl-C, SIGTERM, a missing dataset) is re-enqueued the same way before the worker
exits. Optuna's journal files (a path ending in ``.log`` / ``.journal``) work too but have no heartbeat, so a
SIGKILLed trial there stays RUNNING. Optuna hands each waiting or new trial to exactly one worker, so no trial
trains twice; a worker stops when the study has ``trials`` settled trials (completed, stopped early or failed
with a reason; infeasible ones do not count) and none waiting or running.

>>> import tempfile
>>> from prune_nas.search.spaces import Space
>>> space = Space.from_dict({"name": "doc", "model": "vgg11", "width": 0.125, "dataset": "synthetic",
...     "input_size": 16, "budget": {"epochs": 1}, "objective": {"maximize": "accuracy", "max_flops": 0.5},
...     "parameters": {"stage_multiplier": {"range": [0.25, 1.0], "step": 0.25}}, "uniform": [0.9]})
>>> study = create_study(space, storage=f"sqlite:///{tempfile.mkdtemp()}/doc.db", trials=1, log=print)
enqueued 1 seed trial(s) (genomes x 1 seed(s)); they run first
>>> work(study, space, trials=1, store=tempfile.mkdtemp(), progress=False, log=lambda s: None) >= 1
True
>>> study.trials[0].user_attrs["origin"], study.trials[0].state.name
('uniform:r0.9', 'COMPLETE')
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from prune_nas.core.errors import UserError
from prune_nas.core.paths import output_dir
from prune_nas.search.objective import (
    Evaluator,
    TrainingFailed,
    TrialTaken,
    genome_attr,
    keep_followers,
    release_followers,
    storage_errors,
)
from prune_nas.search.spaces import Space

if TYPE_CHECKING:
    from prune_nas.core.genome import Genome

STUDY_FORMAT = "prune-nas.study"
STUDY_VERSION = 1
MAX_RETRY = 3  # a trial interrupted this many times is left failed
HEARTBEAT_S = 10
# Infeasible candidates do not count towards a study's trials and cost no training (only a count of params
# and FLOPs), so a worker may draw many while it fills a tight constraint. It gives up after
# INFEASIBLE_PER_TRIAL per wanted trial plus INFEASIBLE_SLACK (work's default max_infeasible): a constraint
# that few candidates meet still fills the study; one that none meets stops instead of sampling forever.
INFEASIBLE_PER_TRIAL = 20
INFEASIBLE_SLACK = 100

__all__ = ["STUDY_FORMAT", "Counts", "StorageLost", "TrainingFailed", "TrialTaken", "counts", "create_study",
           "default_storage_url", "load_study", "open_storage", "retry_storage", "run_trial", "search",
           "seed_genomes", "storage_url", "summarize", "work", "worker"]  # the objective: search/objective.py


STORAGE_PATIENCE_S = 120.0  # how long a worker retries an unreachable storage before it gives up


class StorageLost(UserError):
    """The study's storage stayed unreachable past the worker's patience: one line saying how to resume."""


def retry_storage(call: Callable[[], Any], *, patience_s: float, log: Callable[[str], None],
                  resume: str) -> Any:
    """``call()``, retried with exponential backoff (0.5 s to 10 s) while the storage is unreachable; after
    ``patience_s`` seconds a :class:`StorageLost` saying to run ``resume``."""
    start, delay, warned = time.monotonic(), 0.5, False
    while True:
        try:
            result = call()
            if warned:
                log(f"storage reachable again after {time.monotonic() - start:.0f} s")
            return result
        except storage_errors() as e:
            cause = e.__cause__ or e
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            waited = time.monotonic() - start
            if waited >= patience_s:
                raise StorageLost(f"the study storage was unreachable for {waited:.0f} s ({first[:160]}); "
                                  f"once it is back, resume with: {resume}") from None
            if not warned:
                log(f"storage unreachable ({first[:160]}); retrying for up to {patience_s:.0f} s")
                warned = True
            time.sleep(min(delay, max(patience_s - waited, 0.05)))
            delay = min(2 * delay, 10.0)


# ---- storage ---------------------------------------------------------------------------------------------
def default_storage_dir() -> Path:
    return output_dir("studies")


def default_storage_path(name: str) -> Path:
    """The study's own SQLite file; the study name is checked, so it cannot point anywhere else."""
    from prune_nas.core.paths import slug

    return default_storage_dir() / f"{slug(name, 'study name')}.db"


def default_storage_url(name: str) -> str:
    return f"sqlite:///{default_storage_path(name).resolve()}"


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(url: str | None, name: str, *, create: bool = False, heartbeat: int = HEARTBEAT_S,
                 grace: int | None = None) -> optuna.storages.BaseStorage:
    """Optuna storage for ``url`` (default: the study's SQLite file under ``artifacts/studies/``).

    RDB storages get a heartbeat every ``heartbeat`` seconds; a RUNNING trial silent for ``grace`` seconds
    (default 3 x heartbeat) is failed and retried (up to :data:`MAX_RETRY` times)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url is None:
        path = default_storage_path(name)
        if not create and not path.exists():
            raise UserError(f"no study {name!r} in {path} (start one with `prune-nas search`, or pass "
                            "--storage with the URL it was created with)")
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path.resolve()}"
    if url.endswith((".log", ".journal")) and "://" not in url:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        if not create and not Path(url).exists():
            raise UserError(f"no journal file {url}")
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    if "://" not in url:
        if not url.endswith((".db", ".sqlite", ".sqlite3")):
            raise UserError(f"--storage {url!r}: give an Optuna storage URL (sqlite:///path.db, "
                            "postgresql://user@host/db) or a .db / .log file path")
        if not create and not Path(url).exists():
            raise UserError(f"no study database {url}")
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{Path(url).resolve()}"
    url = storage_url(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}  # several local workers: wait for the file lock
    else:
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat arguments are marked experimental
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=int(heartbeat),
                grace_period=int(grace or 3 * heartbeat),
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRY))
        except ImportError as e:
            raise UserError(f"cannot open {redact(url)}: {e} (PostgreSQL needs `pip install "
                            "'prune-nas[postgres]'`)") from None
        except Exception as e:  # sqlalchemy errors: bad URL, server down, no such database
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot open storage {redact(url)}: {first}") from None


def storage_url(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 means psycopg 3 by it, while the
    ``postgres`` extra installs psycopg2; an explicit ``postgresql+driver://`` is left alone. (Optuna's own
    CLI and optuna-dashboard do not rewrite: give them ``postgresql+psycopg2://...``.)"""
    m = re.match(r"postgres(ql)?://", url)
    if not m:
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[m.end():]
    return "postgresql://" + url[m.end():]


def _canonical(d: dict) -> dict:
    return json.loads(json.dumps(d, sort_keys=True))


# ---- studies ---------------------------------------------------------------------------------------------
def make_sampler(space: Space, seed: int | None = None) -> optuna.samplers.BaseSampler:
    kind = space.sampler.get("kind", "tpe")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if kind == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=space.sampler.get("startup_trials", 10))


def make_early_stopping(space: Space) -> optuna.pruners.BasePruner:
    """Optuna's median rule ("pruner" in Optuna's words): stop a trial whose best accuracy so far is below the
    median of earlier trials at the same epoch. Off for multi-objective studies."""
    es = space.early_stopping
    if not es or space.objective.multi:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=es["startup_trials"],
                                       n_warmup_steps=es["warmup_epochs"])


def create_study(space: Space, storage: str | optuna.storages.BaseStorage | None = None, *, trials: int,
                 study_name: str | None = None, heartbeat: int = HEARTBEAT_S, grace: int | None = None,
                 sampler_seed: int | None = None, enqueue: bool = True,
                 log: Callable[[str], None] = print) -> optuna.Study:
    """Create the study for ``space`` (or load it when it exists with the same space), store the space and
    the target number of trials in its user attributes, and enqueue the seed genomes (once)."""
    from prune_nas.core.version import __version__

    name = study_name or space.name
    st = storage if isinstance(storage, optuna.storages.BaseStorage) else \
        open_storage(storage, name, create=True, heartbeat=heartbeat, grace=grace)
    seed = space.sampler.get("seed") if sampler_seed is None else sampler_seed
    study = optuna.create_study(study_name=name, storage=st, directions=space.objective.directions,
                                sampler=make_sampler(space, seed), pruner=make_early_stopping(space),
                                load_if_exists=True)
    stored = study.user_attrs.get("space")
    mine = _canonical(space.to_dict())
    if stored is not None and _canonical(stored) != mine:
        diff = next((k for k in mine if mine.get(k) != _canonical(stored).get(k)), "?")
        raise UserError(f"study {name!r} already exists with a different search space (field {diff!r} "
                        "differs); give another --study name, or join it with `prune-nas worker`")
    if stored is None:
        study.set_user_attr("space", mine)
        study.set_user_attr("format", STUDY_FORMAT)
        study.set_user_attr("version", STUDY_VERSION)
        study.set_user_attr("prune_nas", __version__)
        study.set_user_attr("source", space.source)
    study.set_user_attr("trials", int(trials))
    if enqueue:
        n = enqueue_seeds(study, space, log=log)
        if n:
            log(f"enqueued {n} seed trial(s) (genomes x {space.seeds} seed(s)); they run first")
    return study


def load_study(name: str, storage: str | None = None, *, heartbeat: int = HEARTBEAT_S,
               grace: int | None = None, sampler_seed: int | None = None) -> tuple[optuna.Study, Space]:
    """An existing study and its space (read from the study, so no file is needed)."""
    st = open_storage(storage, name, heartbeat=heartbeat, grace=grace)
    try:
        summary = optuna.load_study(study_name=name, storage=st, sampler=optuna.samplers.RandomSampler())
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False)]
        raise UserError(f"no study {name!r} in {redact(storage or default_storage_url(name))}"
                        + (f" (it has: {', '.join(names)})" if names else "")) from None
    raw = summary.user_attrs.get("space")
    if raw is None:
        raise UserError(f"study {name!r} was not created by prune-nas (no search space in its attributes)")
    space = Space.from_dict(raw, where=f"study {name}")
    study = optuna.load_study(study_name=name, storage=st, sampler=make_sampler(space, sampler_seed),
                              pruner=make_early_stopping(space))
    return study, space


# ---- seed genomes ----------------------------------------------------------------------------------------
def _resolve_refs(ref: str, rel: Path | None) -> list[tuple[Genome, str]]:
    import glob

    from prune_nas.core.genome import load_genome
    from prune_nas.core.library import LIBRARY_DIR, resolve_genome
    from prune_nas.core.paths import output_dir

    # Relative paths: from the working folder, then the space file's folder.
    bases = [Path.cwd()] + ([rel] if rel is not None else [])
    if not any(c in ref for c in "*?["):
        p = Path(ref)
        for b in bases[1:]:
            if not p.is_absolute() and not p.exists() and (b / p).exists():
                return [(load_genome(b / p), ref)]
        return [(resolve_genome(ref), ref)]
    found: dict[str, Path] = {}
    patterns = [ref] if Path(ref).is_absolute() else [str(b / ref) for b in bases]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            if path.endswith(".json"):
                found.setdefault(str(Path(path).resolve()), Path(path))
    if "/" not in ref:  # a name glob: the library and the folders discover / guide / transfer write to
        for folder in [LIBRARY_DIR] + [output_dir("genomes", d)
                                       for d in ("discovered", "guided", "transferred")]:
            for path in sorted(folder.glob(f"{ref}.json")):
                found.setdefault(str(path.resolve()), path)
    return [(load_genome(p), p.stem) for p in found.values()]


def seed_genomes(space: Space, log: Callable[[str], None] = print) -> list[tuple[Genome, str]]:
    """The genomes a space enqueues, as ``(genome, origin)``: its ``seed_genomes`` (files, globs, names) and
    uniform pruning at its ``uniform`` ratios, fitted to the space; the first occurrence of an architecture
    wins."""
    from prune_nas.methods.baselines import uniform_genome

    rel = Path(space.source).resolve().parent if space.source else None
    out: list[tuple[Genome, str]] = []
    for ref in space.seed_genomes:
        matched = _resolve_refs(ref, rel)
        if not matched:
            log(f"note: seed genome pattern {ref!r} matches nothing yet (run `prune-nas discover` first?)")
        for g, label in matched:
            out.append((space.adapt(g, label), f"seed:{g.name or label}"))
    for r in space.uniform:
        g = uniform_genome(space.base, 1.0 - r)
        provenance = {"method": "uniform", "ratio": r, "reference": space.base.name or space.model}
        out.append((g.replace(name=f"{space.base.name}-uniform-r{r:g}", provenance=provenance),
                    f"uniform:r{r:g}"))
    seen, unique = set(), []
    for g, origin in out:
        if g.key not in seen:
            seen.add(g.key)
            unique.append((g, origin))
    return unique


def enqueue_seeds(study: optuna.Study, space: Space, log: Callable[[str], None] = print) -> int:
    """Enqueue every seed genome x seed not in the study yet; returns how many were enqueued."""
    have = {(t.user_attrs.get("genome_key"), t.user_attrs.get("seed"))
            for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL}
    n = 0
    for genome, origin in seed_genomes(space, log=log):
        params = space.project(genome)
        for seed in range(space.seeds):
            if (genome.key, seed) in have:
                continue
            attrs = {"origin": origin, "seed": seed, "genome_key": genome.key, "genome_name": genome.name,
                     "genome": genome_attr(genome)}
            study.enqueue_trial(params, user_attrs=attrs)
            n += 1
    return n


def _requeue(trial: optuna.Trial, why: str, strict: bool = False) -> None:
    """Put an interrupted trial back in the queue (same parameters and attributes), as the heartbeat retry
    does for a killed worker's trial. ``strict``: let storage errors through (for a caller that retries)."""
    with contextlib.suppress(*((optuna.exceptions.UpdateFinishedTrialError,) if strict else (Exception,))):
        trial.set_user_attr("interrupted", why[:300])
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        history = list(frozen.system_attrs.get("retry_history", [])) + [trial.number]
        if len(history) > MAX_RETRY:
            return
        attrs = {k: v for k, v in frozen.user_attrs.items() if k != "interrupted"}
        trial.study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=frozen.params, distributions=frozen.distributions,
            user_attrs=attrs, system_attrs={"failed_trial": history[0], "retry_history": history}))


# ---- running ---------------------------------------------------------------------------------------------
@dataclass
class Counts:
    complete: int = 0  # finished, feasible
    infeasible: int = 0
    early_stopped: int = 0
    failed: int = 0  # training failed (reason recorded)
    interrupted: int = 0  # killed or interrupted, retried under a new number
    running: int = 0
    waiting: int = 0

    @property
    def settled(self) -> int:
        return self.complete + self.early_stopped + self.failed

    def to_dict(self) -> dict:
        return {**self.__dict__, "settled": self.settled}


def infeasible(t: optuna.trial.FrozenTrial) -> bool:
    """Optuna's own reading: some constraint value is positive."""
    return any(v > 0 for v in t.constraints.values())


def trial_kind(t: optuna.trial.FrozenTrial) -> str:
    """What a trial is in this module's words: a :class:`Counts` field name."""
    if t.state == TrialState.COMPLETE:
        return "infeasible" if infeasible(t) else "complete"
    if t.state == TrialState.FAIL:
        return "failed" if "fail_reason" in t.user_attrs else "interrupted"
    return {TrialState.PRUNED: "early_stopped", TrialState.RUNNING: "running"}.get(t.state, "waiting")


def counts(trials: Iterable[optuna.trial.FrozenTrial]) -> Counts:
    c = Counts()
    for t in trials:
        kind = trial_kind(t)
        setattr(c, kind, getattr(c, kind) + 1)
    return c


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM wait until the block is done, then act as usual. A signal that comes before the
    block leaves the trial RUNNING instead, and its silent heartbeat gets it retried."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    before = {s: signal.signal(s, lambda signum, frame: held.append(signum))
              for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        for s in held[:1]:
            signal.raise_signal(s)


@contextlib.contextmanager
def _heartbeat(storage: optuna.storages.BaseStorage, trial_id: int):
    """Beat for the trial while it runs. Unlike Optuna's own thread, a beat that fails (storage down) is
    retried at the next interval instead of ending the thread with a traceback."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    if not is_heartbeat_enabled(storage):
        yield
        return
    interval = float(storage.get_heartbeat_interval())
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                storage.record_heartbeat(trial_id)
            stop.wait(interval)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)  # a beat stuck on a dead connection must not hold the worker


def run_trial(study: optuna.Study, evaluator: "Evaluator", *, patience_s: float, log: Callable[[str], None],
              resume: str) -> None:
    """Ask for one trial, evaluate it and tell the result, riding out what happens to workers:

    * the trial was settled by another worker meanwhile (this one was paused past the heartbeat grace, and
      the other failed it and queued a retry): drop it and move on, nothing is told twice;
    * the storage goes away: retry with backoff for ``patience_s`` seconds; if it went away mid-trial, the
      trial is failed and requeued once it is back (the retry reuses the stored run if training finished);
      past the patience, :class:`StorageLost` says what to run to resume.
    """
    def again(call):
        return retry_storage(call, patience_s=patience_s, log=log, resume=resume)

    storage = study._storage
    def ask() -> optuna.Trial:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with Study.optimize"
            return study.ask()

    trial = again(ask)
    values, state = None, TrialState.COMPLETE
    with _heartbeat(storage, trial._trial_id):
        try:
            values = evaluator(trial)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except TrainingFailed:
            state = TrialState.FAIL
        except TrialTaken:
            log(f"trial {trial.number} was settled by another worker while this one was away; moving on")
            return
        except storage_errors():
            log(f"trial {trial.number}: the storage went away mid-trial; it is requeued once it is back")
            frozen = again(lambda: storage.get_trial(trial._trial_id))
            if frozen.state == TrialState.RUNNING:
                again(lambda: _requeue(trial, "storage unreachable", strict=True))
                again(lambda: study.tell(trial, state=TrialState.FAIL, skip_if_finished=True))
            return
        except BaseException as e:  # Ctrl-C, SIGTERM, a user error, a lost rank: give the trial back
            with _signals_held():  # a second signal (the launcher's SIGTERM) must not cut this in half
                _requeue(trial, f"{type(e).__name__}: {e}".strip(": "))
                with contextlib.suppress(Exception):
                    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
    frozen = again(lambda: storage.get_trial(trial._trial_id))
    if frozen.state != TrialState.RUNNING:
        log(f"trial {trial.number} was settled by another worker while this one was away; moving on")
        return
    again(lambda: study.tell(trial, values if state == TrialState.COMPLETE else None, state=state,
                             skip_if_finished=True))


def work(study: optuna.Study, space: Space, *, trials: int | None = None, store=None, device: str = "cpu",
         progress: bool = False, log: Callable[[str], None] = print, poll_s: float | None = None,
         data_dir=None, download: bool = False, max_infeasible: int | None = None,
         patience_s: float = STORAGE_PATIENCE_S, resume: str | None = None) -> int:
    """Run trials until the study has ``trials`` settled ones (default: the target stored in the study) and
    none waiting or running; returns how many trials this worker ran. While others run the last trials it
    waits, failing and retrying any whose worker died, so no trial is lost. It stops early once
    ``max_infeasible`` candidates were infeasible (default: :data:`INFEASIBLE_PER_TRIAL` per trial plus
    :data:`INFEASIBLE_SLACK`). An unreachable storage is retried for ``patience_s`` seconds (see
    :func:`run_trial`); then :class:`StorageLost` tells the user to run ``resume`` (default: a
    ``prune-nas worker`` command for this study)."""
    from prune_nas.training.store import Store

    resume = resume or f"prune-nas worker --study {study.study_name}"

    def again(call):
        return retry_storage(call, patience_s=patience_s, log=log, resume=resume)

    target = int(trials if trials is not None else again(lambda: study.user_attrs).get("trials", 0))
    store = store if isinstance(store, Store) else Store(store)
    evaluator = Evaluator(space, store, device=device, progress=progress, log=log, data_dir=data_dir,
                          download=download)
    storage = study._storage  # the heartbeat interval sets the polling pace
    hb = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if hb is None:
        log("note: this storage has no heartbeat, so a trial whose worker is killed stays RUNNING; use "
            "SQLite or PostgreSQL for studies that must survive killed workers")
    poll = poll_s if poll_s is not None else float(hb or 2)
    if max_infeasible is None:
        max_infeasible = INFEASIBLE_PER_TRIAL * max(target, 1) + INFEASIBLE_SLACK
    waited = False
    while True:
        keep_followers()
        again(lambda: _fail_stale(study))
        c = counts(again(lambda: study.get_trials(deepcopy=False)))
        if c.waiting == 0 and c.settled + c.running >= target:
            if c.running == 0:
                break
            if not waited:
                log(f"waiting for {c.running} running trial(s) of other workers to finish")
                waited = True
            time.sleep(poll)
            continue
        if c.waiting == 0 and c.infeasible >= max_infeasible:
            log(f"stopping: {c.infeasible} candidates were infeasible; widen the space or relax the "
                "constraint")
            break
        waited = False
        run_trial(study, evaluator, patience_s=patience_s, log=log, resume=resume)
    release_followers()
    return len(evaluator.ran)


def search(space: Space, *, trials: int, storage: str | None = None, study_name: str | None = None,
           store=None, device: str = "cpu", progress: bool = False, heartbeat: int = HEARTBEAT_S,
           grace: int | None = None, log: Callable[[str], None] = print, **kw) -> dict:
    """Create (or resume) the study for ``space``, enqueue its seed genomes, run until ``trials`` trials have
    settled, and return :func:`summarize`'s summary."""
    if trials < 1:
        raise UserError(f"--trials must be >= 1, got {trials}")
    name = study_name or space.name
    own_file = default_storage_path(name) if storage is None else None
    fresh = own_file is not None and not own_file.exists()
    try:
        study = create_study(space, storage, trials=trials, study_name=study_name, heartbeat=heartbeat,
                             grace=grace, log=log)
        resume = f"prune-nas worker --study {name}" + (f" --storage {redact(storage)}" if storage else "")
        work(study, space, trials=trials, store=store, device=device, progress=progress, log=log,
             resume=resume, **kw)
        return retry_storage(lambda: summarize(study), patience_s=kw.get("patience_s", STORAGE_PATIENCE_S),
                             log=log, resume=f"prune-nas results {name}"
                             + (f" --storage {redact(storage)}" if storage else ""))
    except BaseException:
        if fresh:
            _remove_if_empty(own_file, name)
        raise


def _remove_if_empty(path: Path, name: str) -> None:
    """Delete a study database this command created when the study never got a trial (a search that failed
    before its first trial would otherwise leave an empty study that only confuses ``results``)."""
    with contextlib.suppress(Exception):
        st = open_storage(f"sqlite:///{path.resolve()}", name)
        summaries = optuna.get_all_study_summaries(st, include_best_trial=False)
        if all(s.n_trials == 0 for s in summaries):
            st.engine.dispose()
            for p in (path, path.with_name(path.name + "-journal"), path.with_name(path.name + "-wal"),
                      path.with_name(path.name + "-shm")):
                p.unlink(missing_ok=True)


def worker(study_name: str, *, storage: str | None = None, trials: int | None = None, store=None,
           device: str = "cpu", progress: bool = False, heartbeat: int = HEARTBEAT_S,
           grace: int | None = None, sampler_seed: int | None = None, log: Callable[[str], None] = print,
           **kw) -> dict:
    """Join an existing study (its space is read from the study) and work on it until it is done."""
    study, space = load_study(study_name, storage, heartbeat=heartbeat, grace=grace,
                              sampler_seed=sampler_seed)
    if trials is not None and trials < 1:
        raise UserError(f"--trials must be >= 1, got {trials}")
    resume = f"prune-nas worker --study {study_name}" + (f" --storage {redact(storage)}" if storage else "")
    work(study, space, trials=trials, store=store, device=device, progress=progress, log=log, resume=resume,
         **kw)
    return retry_storage(lambda: summarize(study), patience_s=kw.get("patience_s", STORAGE_PATIENCE_S),
                         log=log, resume=resume)


# ---- results ---------------------------------------------------------------------------------------------
@dataclass
class Candidate:
    key: str
    name: str | None
    origin: str
    params: int
    flops: int
    epochs: int | None
    latency_ms: float | None = None  # latency studies: batch-1 median on the worker's device
    trials: list[int] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)

    def cost(self, metric: str) -> float:
        """The second objective's value: flops, params or latency (ms)."""
        return float(self.latency_ms if metric == "latency" else getattr(self, metric))

    @property
    def mean(self) -> float:
        return sum(self.accuracies) / len(self.accuracies)

    @property
    def std(self) -> float:
        n = len(self.accuracies)
        if n < 2:
            return 0.0
        m = self.mean
        return math.sqrt(sum((a - m) ** 2 for a in self.accuracies) / (n - 1))

    def to_dict(self) -> dict:
        return {"genome_key": self.key, "genome_name": self.name, "origin": self.origin,
                "params": self.params, "flops": self.flops, "latency_ms": self.latency_ms,
                "epochs": self.epochs, "trials": self.trials,
                "accuracies": self.accuracies, "mean": self.mean, "std": self.std,
                "seeds": len(self.accuracies)}


def summarize(study: optuna.Study) -> dict:
    """The study's state: trial counts, candidates (feasible, finished; mean and std of accuracy over their
    seeds, best first), the best candidate or the Pareto front (accuracy up, cost down) over candidates, and
    Optuna's own per-trial answer (``best_trial`` / ``best_trials``) for comparison."""
    space = Space.from_dict(study.user_attrs["space"], where=f"study {study.study_name}")
    trials = study.get_trials(deepcopy=False)
    cands: dict[str, Candidate] = {}
    for t in trials:
        a = t.user_attrs
        if t.state != TrialState.COMPLETE or infeasible(t) or "accuracy" not in a:
            continue
        if a["genome_key"] not in cands:
            cands[a["genome_key"]] = Candidate(a["genome_key"], a.get("genome_name"), a.get("origin", "?"),
                                               a.get("params", 0), a.get("flops", 0), a.get("epochs"),
                                               a.get("latency_ms"))
        c = cands[a["genome_key"]]
        if c.origin == "sampled" and a.get("origin", "sampled") != "sampled":
            c.origin, c.name = a["origin"], a.get("genome_name")  # a seed genome sampled again keeps its name
        c.trials.append(t.number)
        c.accuracies.append(float(a["accuracy"]))
    ranked = sorted(cands.values(), key=lambda c: (-c.mean, c.flops))
    out: dict[str, Any] = {"study": study.study_name, "space": space.to_dict(),
                           "target_trials": study.user_attrs.get("trials"),
                           "objective": space.objective.to_dict(), "counts": counts(trials).to_dict(),
                           "candidates": [c.to_dict() for c in ranked]}
    if space.objective.multi:
        cost = space.objective.metrics[1]
        front = [c for c in ranked if not any(
            (o.mean >= c.mean and o.cost(cost) <= c.cost(cost))
            and (o.mean > c.mean or o.cost(cost) < c.cost(cost)) for o in ranked)]
        out["pareto"] = [c.to_dict() for c in sorted(front, key=lambda c: c.cost(cost))]
        with contextlib.suppress(Exception):
            out["optuna_best_trials"] = sorted(t.number for t in study.best_trials)
    else:
        out["best"] = ranked[0].to_dict() if ranked else None
        with contextlib.suppress(Exception):
            out["optuna_best_trial"] = study.best_trial.number
    failed = [{"trial": t.number, "reason": t.user_attrs["fail_reason"]} for t in trials
              if t.state == TrialState.FAIL and "fail_reason" in t.user_attrs]
    out["failed"] = failed
    return out
