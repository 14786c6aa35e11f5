"""Search spaces and the Optuna evaluator: seed genomes first, constraints, Pareto fronts, early stopping,
failed training, reuse of stored runs, resume after SIGKILL, and the search / worker / results commands.

Trials train a VGG-11 at an eighth of its widths on 16x16 synthetic data for one to four epochs: seconds each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from prune_nas.cli import main
from prune_nas.core.cost import count
from prune_nas.core.errors import UserError
from prune_nas.core.genome import save_genome
from prune_nas.methods.baselines import uniform_genome
from prune_nas.search.spaces import Space, list_spaces, load_space
from prune_nas.search.studies import counts, create_study, load_study, seed_genomes, summarize, work
from prune_nas.training.store import Store

REPO = Path(__file__).resolve().parent.parent


def tiny_space(**over) -> dict:
    d = {"name": "tiny", "model": "vgg11", "width": 0.125, "input_size": 16, "dataset": "synthetic",
         "budget": {"kind": "epochs", "epochs": 1}, "early_stopping": False,
         "objective": {"maximize": "accuracy", "max_flops": 0.6},
         "sampler": {"kind": "tpe", "seed": 0, "startup_trials": 2},
         "parameters": {"stage_multiplier": {"range": [0.25, 1.0], "step": 0.25}}}
    d.update(over)
    return d


def sqlite(tmp_path, name="s") -> str:
    return f"sqlite:///{tmp_path / f'{name}.db'}"


def quiet(_):
    pass


# ---- space files -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", list_spaces(), ids=lambda p: p.stem)
def test_bundled_spaces_validate_and_round_trip(path):
    space = load_space(path)
    assert space.name == path.stem and space.param_defs()
    assert Space.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    # The smallest and the largest candidate of the space are valid genomes.
    defs = space.param_defs()
    lo = space.genome({p.name: p.lo for p in defs})
    hi = space.genome({p.name: p.hi for p in defs})
    assert count(lo).flops < count(hi).flops


def test_bundled_spaces_cover_the_issue_models():
    names = {p.stem for p in list_spaces()}
    assert {"vgg19-cifar100", "vgg16-cifar10", "resnet56-cifar10", "vgg11-digits"} <= names


@pytest.mark.parametrize("change, field", [
    ({"model": "vgg99"}, "model"),
    ({"dataset": "mnist"}, "dataset"),
    ({"parameters": {}}, "parameters"),
    ({"parameters": {"stage_multiplier": {"range": [0.3, 1.0], "step": 0.25}}},
     "parameters.stage_multiplier.step"),
    ({"parameters": {"stage_multiplier": {"range": [0.0, 1.0], "step": 0.25}}},
     "parameters.stage_multiplier.range"),
    ({"parameters": {"layer_width": {"range": [0.5, 1.0], "step": 0.25, "groups": ["nope*"]}}},
     "parameters.layer_width.groups"),
    ({"parameters": {"depth": {"range": [0.5, 1.0]}}}, "parameters.depth"),
    ({"objective": {"multi": [], "maximize": "accuracy"}}, "objective"),
    ({"objective": {"multi": ["accuracy", "energy"]}}, "objective.multi"),  # latency is a cost now
    ({"objective": {"multi": ["accuracy", "flops"]}, "early_stopping": {"warmup_epochs": 1}},
     "early_stopping"),
    ({"objective": {"maximize": "accuracy", "max_flops": 1e-6}}, "objective.max_flops"),
    ({"budget": {"kind": "time"}}, "budget.kind"),
    ({"protocol": {"learning_rate": 0.1}}, "protocol.learning_rate"),
    ({"seeds": 0}, "seeds"),
    ({"uniform": [1.5]}, "uniform[0]"),
    ({"sampler": {"kind": "nsga2"}}, "sampler.kind"),
    ({"colour": "blue"}, "colour"),
])
def test_space_validation_names_the_field(change, field):
    with pytest.raises(UserError) as e:
        Space.from_dict(tiny_space(**change), where="x.yaml")
    assert str(e.value).startswith(f"x.yaml: {field}: ")


def test_space_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: vgg11\ndataset: [digits\n")
    with pytest.raises(UserError, match=r"bad.yaml: not valid YAML at line \d+ column \d+"):
        load_space(bad)
    with pytest.raises(UserError, match="search space not found"):
        load_space(tmp_path / "missing.yaml")


def test_genome_from_params_and_projection_round_trip():
    space = Space.from_dict(tiny_space(parameters={
        "stage_multiplier": {"range": [0.25, 1.0], "step": 0.25},
        "stage_sparsity": {"range": [0.0, 0.5], "step": 0.25}}))
    params = {"mult.stage1": 0.5, "mult.stage2": 1.0, "mult.stage3": 0.25, "mult.stage4": 0.75,
              "mult.stage5": 1.0, "sparsity.stage1": 0.0, "sparsity.stage2": 0.5, "sparsity.stage3": 0.25,
              "sparsity.stage4": 0.0, "sparsity.stage5": 0.0}
    g = space.genome(params)
    base = space.base
    assert g.widths["conv1"] == round(base.widths["conv1"] * 0.5)
    assert g.widths["conv3"] == round(base.widths["conv3"] * 0.25)
    assert g.sparsity.density == {"features.conv2": 0.5, "features.conv3": 0.75, "features.conv4": 0.75}
    assert space.project(g) == params
    # Layer widths on every group: the stage multiplier takes the widest ratio, the layers the rest.
    both = Space.from_dict(tiny_space(parameters={"stage_multiplier": {"range": [0.25, 1.0], "step": 0.25},
                                                  "layer_width": {"range": [0.25, 1.0], "step": 0.25}}))
    w = dict(base.widths, conv3=base.widths["conv3"] // 2)
    p = both.project(base.replace(widths=w))
    assert p["mult.stage3"] == 1.0 and p["width.conv3"] == 0.5 and p["width.conv4"] == 1.0
    assert both.genome(p).widths == w


# ---- studies -----------------------------------------------------------------------------------------------
def test_enqueued_seed_genomes_run_first_and_train_exactly_that_genome(tmp_path):
    base = Space.from_dict(tiny_space()).base
    # A per-layer genome the space cannot express exactly (conv4 alone narrowed): what trains is this genome.
    seed = base.replace(widths=dict(uniform_genome(base, 0.5).widths, conv4=3), name="my-seed")
    save_genome(seed, tmp_path / "my-seed.json")
    space = Space.from_dict(tiny_space(seed_genomes=[str(tmp_path / "my-*.json")], uniform=[0.5], seeds=2))
    assert [o for _, o in seed_genomes(space, log=quiet)] == ["seed:my-seed", "uniform:r0.5"]
    store = Store(tmp_path / "store")
    study = create_study(space, sqlite(tmp_path), trials=6, log=quiet)
    assert counts(study.trials).waiting == 4  # 2 genomes x 2 seeds, before any sampling
    work(study, space, store=store, log=quiet)
    trials = sorted(study.trials, key=lambda t: t.datetime_start)
    first = [t.user_attrs["origin"] for t in trials[:4]]
    assert first == ["seed:my-seed", "seed:my-seed", "uniform:r0.5", "uniform:r0.5"]
    assert [t.user_attrs["seed"] for t in trials[:4]] == [0, 1, 0, 1]
    assert all(t.user_attrs["origin"] == "sampled" for t in trials[4:])
    t0 = trials[0]
    assert t0.user_attrs["genome_key"] == seed.key
    record = json.loads(Path(t0.user_attrs["result"]).read_text())
    assert record["spec"]["genome"]["widths"]["conv4"] == 3  # the seed genome itself trained
    assert t0.params == space.project(seed)  # its projection is what the sampler sees
    for k in ("budget", "epochs", "params", "flops", "run_key", "accuracy"):
        assert k in t0.user_attrs
    assert t0.user_attrs["flops"] == count(seed).flops and t0.value == pytest.approx(record["final_top1"])
    # Sampled candidates run once per seed: seed 1 is enqueued when seed 0 finishes.
    sampled = [t for t in trials if t.user_attrs["origin"] == "sampled" and t.state == TrialState.COMPLETE
               and "infeasible" not in t.user_attrs]
    by_key = {}
    for t in sampled:
        by_key.setdefault(t.user_attrs["genome_key"], []).append(t.user_attrs["seed"])
    assert any(sorted(v) == [0, 1] for v in by_key.values())


def test_infeasible_candidate_never_trains(tmp_path):
    # uniform r0.1 keeps 90% of the channels: about 81% of the FLOPs, over the 60% limit.
    space = Space.from_dict(tiny_space(uniform=[0.1, 0.5]))
    store = Store(tmp_path / "store")
    study = create_study(space, sqlite(tmp_path), trials=1, log=quiet)
    work(study, space, store=store, log=quiet)
    bad, good = study.trials[0], study.trials[1]
    assert bad.user_attrs["origin"] == "uniform:r0.1" and "infeasible" in bad.user_attrs
    assert bad.constraints["max_flops"] > 0 and good.constraints["max_flops"] <= 0
    assert not Path(bad.user_attrs["result"]).exists()
    assert all(r["spec"]["genome"]["widths"] != bad.user_attrs["genome"]["widths"] for r in store.records())
    assert Path(good.user_attrs["result"]).exists()
    assert study.best_trial.number == good.number  # Optuna's own answer respects the constraint
    s = summarize(study)
    assert s["counts"]["infeasible"] == 1 and s["counts"]["complete"] == 1
    assert [c["origin"] for c in s["candidates"]] == ["uniform:r0.5"]


def test_multi_objective_reports_a_pareto_front(tmp_path):
    space = Space.from_dict(tiny_space(objective={"multi": ["accuracy", "flops"]}, uniform=[0.25, 0.5, 0.75]))
    study = create_study(space, sqlite(tmp_path), trials=3, log=quiet)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    work(study, space, store=tmp_path / "store", log=quiet)
    s = summarize(study)
    front, cands = s["pareto"], s["candidates"]
    assert front and len(cands) == 3
    for c in front:  # nothing dominates a front member
        assert not any(o["mean"] >= c["mean"] and o["flops"] <= c["flops"]
                       and (o["mean"] > c["mean"] or o["flops"] < c["flops"]) for o in cands)
    for c in cands:  # everything off the front is dominated by a front member
        if c not in front:
            assert any(f["mean"] >= c["mean"] and f["flops"] <= c["flops"] for f in front)
    assert min(c["flops"] for c in cands) in [c["flops"] for c in front]  # the cheapest is always on it
    assert s["optuna_best_trials"]
    assert all(len(t.values) == 2 and t.values[1] == t.user_attrs["flops"] for t in study.trials)


def test_early_stopping_reports_each_epoch_and_stops_weak_trials(tmp_path):
    space = Space.from_dict(tiny_space(budget={"kind": "epochs", "epochs": 2},
                                       objective={"maximize": "accuracy"}, uniform=[0.25, 0.75],
                                       early_stopping={"warmup_epochs": 0, "startup_trials": 1}))
    study = create_study(space, sqlite(tmp_path), trials=2, log=quiet)
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    work(study, space, store=tmp_path / "store", log=quiet)
    first = study.trials[0]
    assert first.state == TrialState.COMPLETE and sorted(first.intermediate_values) == [1, 2]
    # A trial that Optuna's median rule stops ends PRUNED ("stopped early") and stores no run.
    from prune_nas.search.objective import EarlyStopping

    class Stop:
        attrs: dict = {}

        def report(self, value, step):
            self.reported = (value, step)

        def should_prune(self):
            return True

        def set_user_attr(self, k, v):
            self.attrs[k] = v

    t = Stop()
    with pytest.raises(optuna.TrialPruned, match="stopped early after epoch 3"):
        EarlyStopping(t).on_epoch_end(None, 2, {"test_top1": 0.25})
    assert t.reported == (0.25, 3) and "early_stopped" in t.attrs


def test_failed_training_is_recorded_with_its_reason_and_the_study_goes_on(tmp_path):
    space = Space.from_dict(tiny_space(protocol={"lr": 1e30}, objective={"maximize": "accuracy"},
                                       uniform=[0.5, 0.75]))
    study = create_study(space, sqlite(tmp_path), trials=2, log=quiet)
    ran = work(study, space, store=tmp_path / "store", log=quiet)
    assert ran == 2
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("non-finite" in t.user_attrs["fail_reason"] for t in study.trials)
    s = summarize(study)
    assert s["counts"]["failed"] == 2 and s["candidates"] == [] and len(s["failed"]) == 2


def test_results_in_the_store_are_reused_by_another_study(tmp_path):
    space = Space.from_dict(tiny_space(uniform=[0.5]))
    store = Store(tmp_path / "store")
    a = create_study(space, sqlite(tmp_path, "a"), trials=1, log=quiet)
    work(a, space, store=store, log=quiet)
    path = Path(a.trials[0].user_attrs["result"])
    mtime = path.stat().st_mtime_ns
    b = create_study(space, sqlite(tmp_path, "b"), trials=1, log=quiet)
    work(b, space, store=store, log=quiet)
    assert b.trials[0].user_attrs["reused"] is True and a.trials[0].user_attrs["reused"] is False
    assert b.trials[0].value == a.trials[0].value and path.stat().st_mtime_ns == mtime


def test_interrupted_trial_is_put_back_in_the_queue(tmp_path, monkeypatch):
    space = Space.from_dict(tiny_space(uniform=[0.5]))
    study = create_study(space, sqlite(tmp_path), trials=1, log=quiet)
    import prune_nas.training.runs as train_mod

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "run", boom)
    with pytest.raises(KeyboardInterrupt):
        work(study, space, store=tmp_path / "store", log=quiet)
    monkeypatch.undo()
    first, retry = study.trials
    assert first.state == TrialState.FAIL and "KeyboardInterrupt" in first.user_attrs["interrupted"]
    assert retry.state == TrialState.WAITING and retry.user_attrs["origin"] == "uniform:r0.5"
    assert retry.system_attrs["failed_trial"] == first.number
    work(study, space, store=tmp_path / "store", log=quiet)
    assert study.trials[1].state == TrialState.COMPLETE and counts(study.trials).settled == 1


def test_existing_study_with_another_space_is_refused(tmp_path):
    url = sqlite(tmp_path)
    create_study(Space.from_dict(tiny_space()), url, trials=1, enqueue=False, log=quiet)
    with pytest.raises(UserError, match="different search space"):
        create_study(Space.from_dict(tiny_space(seeds=2)), url, trials=1, log=quiet)
    _study, space = load_study("tiny", url)  # the space comes from the study, no file needed
    assert space == Space.from_dict(tiny_space())


# ---- workers as processes ----------------------------------------------------------------------------------
def start_worker(study: str, url: str, home: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PRUNE_NAS_HOME=str(home), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "prune_nas", "worker", "--study", study, "--storage", url,
           "--heartbeat", "1", "--grace", "3", "--no-progress", "--threads", "1", "--device", "cpu", *extra]
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=REPO)


def wait_for(pred, timeout: float, what: str, procs=()):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        for p in procs:
            assert p.poll() in (None, 0), f"worker exited with {p.returncode} while waiting for {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def started(log: Path) -> list[int]:
    """Trial numbers a worker started, from its log lines ("trial 3 [origin, seed 0] ...")."""
    import re

    return [int(m) for m in re.findall(r"^trial (\d+) \[", log.read_text(), re.MULTILINE)]


def test_resume_after_sigkill(tmp_path):
    """SIGKILL a worker mid-trial, start another: finished trials stay, the killed one is retried and
    completes, and the study ends with exactly the requested number of settled trials."""
    space = Space.from_dict(tiny_space(budget={"kind": "epochs", "epochs": 4}, uniform=[0.5, 0.75]))
    url = sqlite(tmp_path)
    home = tmp_path / "home"
    study = create_study(space, url, trials=3, heartbeat=1, grace=3, log=quiet)

    def trials():
        return optuna.load_study(study_name="tiny", storage=url).trials

    w1 = start_worker("tiny", url, home, tmp_path / "w1.log")
    try:
        wait_for(lambda: any(t.state == TrialState.COMPLETE for t in trials())
                 and any(t.state == TrialState.RUNNING for t in trials()), 240,
                 "a finished and a running trial", [w1])
    finally:
        w1.send_signal(signal.SIGKILL)
        w1.wait()
    before = {t.number: t.value for t in trials() if t.state == TrialState.COMPLETE}
    killed = [t.number for t in trials() if t.state == TrialState.RUNNING]
    assert len(killed) == 1 and before
    w2 = start_worker("tiny", url, home, tmp_path / "w2.log")
    assert w2.wait(timeout=300) == 0, (tmp_path / "w2.log").read_text()
    final = trials()
    assert {t.number: t.value for t in final if t.number in before} == before  # finished trials stay
    dead = final[killed[0]]
    assert dead.state == TrialState.FAIL
    retries = [t for t in final if t.system_attrs.get("failed_trial") == killed[0]]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].user_attrs["origin"] == dead.user_attrs["origin"]
    c = counts(final)
    assert c.complete + c.early_stopped + c.failed == 3 and c.running == 0 and c.waiting == 0
    assert retries[0].number in started(tmp_path / "w2.log")
    del study


# ---- commands ----------------------------------------------------------------------------------------------
def test_search_and_results_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny-cli.yaml"
    path.write_text(yaml.safe_dump(tiny_space(name=None, uniform=[0.5])))
    assert main(["search", "--space", str(path), "--trials", "2", "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "enqueued 1 seed trial" in out and "trial 0 [uniform:r0.5, seed 0]" in out
    db = Path(os.environ["PRUNE_NAS_HOME"]) / "studies" / "tiny-cli.db"
    assert db.exists()  # the default storage: one SQLite file per study
    assert main(["results", "tiny-cli"]) == 0
    out = capsys.readouterr().out
    assert "2 complete" in out and "top 2 of 2 candidates" in out and "uniform:r0.5" in out
    assert main(["results", "tiny-cli", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["settled"] == 2
    assert data["best"]["mean"] == max(c["mean"] for c in data["candidates"])
    # Optuna's own command line reads the study and the attributes each trial keeps.
    optuna_cli = Path(sys.executable).parent / "optuna"
    out = subprocess.run([str(optuna_cli), "trials", "--study-name", "tiny-cli", "--storage", f"sqlite:///{db}",
                          "-f", "json"], capture_output=True, text=True, check=True).stdout
    listed = json.loads(out)
    assert len(listed) >= 2
    for k in ("genome_key", "budget", "epochs", "params", "flops", "result", "seed", "origin"):
        assert k in listed[0]["user_attrs"]


@pytest.mark.parametrize("argv, msg", [
    (["results", "nope"], "no study 'nope'"),
    (["search", "--space", "no-such-space"], "search space not found"),
    (["worker", "--study", "x", "--storage", "mysql+nodriver://u@h/db"], "cannot open"),
])
def test_command_errors_are_one_line(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err
