"""Hardware-aware search: latency as a constraint and as the second objective, infeasible trials as Optuna
itself reads them (``FrozenTrial.constraints``, ``best_trial`` / ``best_trials``, read back from the storage),
the ``objectives`` / ``constraints`` spelling, and uniform seeds' provenance.

Latencies are planted in the per-machine cache (the key is the real one: genome key, this CPU's name, torch,
batch 1, float32, torch's threads), so which candidate is infeasible does not depend on this machine's speed;
that the search reads the cache instead of measuring is part of what is tested.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from prune_nas.core.latency import Latency, default_cache_path, device_name, remember
from prune_nas.search.spaces import Space, SpaceError
from prune_nas.search.studies import create_study, seed_genomes, summarize, work


def space_dict(**over) -> dict:
    d = {"name": "lat", "model": "vgg11", "width": 0.125, "input_size": 16, "dataset": "synthetic",
         "budget": {"kind": "epochs", "epochs": 1}, "early_stopping": False,
         "sampler": {"kind": "tpe", "seed": 0, "startup_trials": 2},
         "parameters": {"stage_multiplier": {"range": [0.25, 1.0], "step": 0.25}}}
    d.update(over)
    return d


def plant(space: Space, ms_by_origin: dict[str, float]) -> None:
    """Cache entries for the space's uniform seeds: ``{"uniform:r0.25": 9.0, ...}``."""
    for genome, origin in seed_genomes(space, log=lambda s: None):
        ms = ms_by_origin[origin]
        remember(default_cache_path(), Latency(genome.key, "cpu", device_name("cpu"), torch.__version__, 1,
                                               "float32", torch.get_num_threads(), ms, ms * 0.99, ms * 1.01,
                                               10,
                                               1))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNE_NAS_HOME", str(tmp_path))
    return tmp_path


def reload(home: Path, name: str) -> optuna.Study:
    """The study as Optuna's own API reads it from the storage, not the object the search used."""
    return optuna.load_study(study_name=name, storage=f"sqlite:///{home / 's.db'}")


def test_latency_constraint_marks_infeasible_trials_for_optuna(home):
    space = Space.from_dict(space_dict(objectives=["accuracy"], constraints={"max_latency_ms": 5.0},
                                       uniform=[0.25, 0.5]))
    assert space.objective.max_latency_ms == 5.0 and not space.objective.multi
    plant(space, {"uniform:r0.25": 9.0, "uniform:r0.5": 1.0})
    study = create_study(space, f"sqlite:///{home / 's.db'}", trials=1, log=lambda s: None)
    work(study, space, store=home / "store", log=lambda s: None)
    trials = {t.user_attrs["origin"]: t for t in reload(home, "lat").get_trials()}
    slow, fast = trials["uniform:r0.25"], trials["uniform:r0.5"]
    assert slow.state == TrialState.COMPLETE and slow.constraints == {"max_latency_ms": pytest.approx(0.8)}
    assert fast.constraints["max_latency_ms"] == pytest.approx(-0.8)
    assert slow.user_attrs["latency_ms"] == 9.0 and fast.user_attrs["latency_ms"] == 1.0  # from the cache
    assert "latency 9.000 ms > 5 ms" in slow.user_attrs["infeasible"]
    assert not Path(slow.user_attrs["result"]).exists() and Path(fast.user_attrs["result"]).exists()
    assert reload(home, "lat").best_trial.number == fast.number  # Optuna's own answer skips the infeasible
    s = summarize(study)
    assert s["counts"]["infeasible"] == 1 and [c["origin"] for c in s["candidates"]] == ["uniform:r0.5"]
    # Uniform seeds say what they are.
    prov = slow.user_attrs["genome"]["provenance"]
    assert prov["method"] == "uniform" and prov["ratio"] == 0.25


def test_accuracy_latency_front_with_nsga2_and_a_limit(home):
    space = Space.from_dict(space_dict(objectives=["accuracy", "latency"],
                                       constraints={"max_latency_ms": 5.0},
                                       sampler={"kind": "nsga2", "seed": 0}, uniform=[0.25, 0.5, 0.75]))
    assert space.objective.metrics == ("accuracy", "latency")
    plant(space, {"uniform:r0.25": 9.0, "uniform:r0.5": 3.0, "uniform:r0.75": 1.0})
    study = create_study(space, f"sqlite:///{home / 's.db'}", trials=2, log=lambda s: None)
    work(study, space, store=home / "store", log=lambda s: None)
    loaded = reload(home, "lat")
    by_origin = {t.user_attrs["origin"]: t for t in loaded.get_trials()}
    assert [d.name for d in loaded.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert by_origin["uniform:r0.75"].values[1] == 1.0 and by_origin["uniform:r0.5"].values[1] == 3.0
    assert by_origin["uniform:r0.25"].constraints["max_latency_ms"] > 0
    best = {t.number for t in loaded.best_trials}
    assert by_origin["uniform:r0.25"].number not in best and by_origin["uniform:r0.75"].number in best
    s = summarize(study)
    assert {c["latency_ms"] for c in s["candidates"]} == {1.0, 3.0}
    assert min(c["latency_ms"] for c in s["pareto"]) == 1.0


@pytest.mark.parametrize("change, field", [
    ({"objectives": ["accuracy", "energy"]}, "objectives[1]"),
    ({"constraints": {"max_latency": 3}}, "constraints.max_latency"),
    ({"constraints": {"max_latency_ms": -1}}, "constraints.max_latency_ms"),
    ({"objectives": "accuracy"}, "objectives"),
    ({"objective": {"maximize": "accuracy"}, "constraints": {"max_flops": 0.5}}, "objective"),
])
def test_objectives_and_constraints_are_validated(change, field):
    with pytest.raises(SpaceError) as e:
        Space.from_dict(space_dict(**change))
    assert e.value.field == field


def test_spellings_agree_and_round_trip():
    a = Space.from_dict(space_dict(objective={"multi": ["accuracy", "latency"], "max_latency_ms": 4}))
    b = Space.from_dict(space_dict(objectives=["accuracy", "latency"], constraints={"max_latency_ms": 4}))
    assert a.objective == b.objective and a.objective.needs_latency
    assert Space.from_dict(b.to_dict()) == b
