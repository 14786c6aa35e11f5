"""``--nproc`` beyond ``train``: ``run`` and ``evaluate`` train every run as one DDP job over N processes
(gloo on CPU here) and write what one process writes, once; ``search`` / ``worker`` train each trial's
candidate on N processes, rank 0 alone talking to the study, and a killed rank gives the trial back."""

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

ROOT = Path(__file__).resolve().parents[1]

# One comparison row of slimming: the large model (trained with the regularizer, under DDP), pruning (rank 0),
# then the unpruned, fine-tuned, Scratch-E/B and matched-baseline runs.
TINY = {"version": 1, "name": "tiny", "title": "tiny", "paper": "Table 4", "kind": "comparison",
        "method": "slimming", "rows": [{"model": "vgg11", "ratio": 0.5}],
        "scales": {s: {"dataset": "synthetic", "width": 0.125, "input_size": 16, "epochs": 1,
                       "finetune_epochs": 1, "seeds": 1} for s in ("smoke", "small", "paper")}}


def _cli(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PRUNE_NAS_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "prune_nas", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=900)


def _files(home: Path) -> list[str]:
    return sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file()
                  and not p.name.endswith(".lock"))


SAME = ("role", "row", "seed", "budget", "init", "genome", "genome_key", "key", "status", "params", "flops",
        "epochs")


def test_run_nproc_writes_what_one_process_writes_once(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(json.dumps(TINY))
    two, one = tmp_path / "two", tmp_path / "one"
    p = _cli(["run", str(spec), "--scale", "smoke", "--no-progress", "--device", "cpu", "--nproc", "2"],
             tmp_path, two)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("tiny [smoke]: ") == 1  # rank 1 printed nothing
    q = _cli(["run", str(spec), "--scale", "smoke", "--no-progress", "--device", "cpu"], tmp_path, one)
    assert q.returncode == 0, q.stderr
    m2, m1 = (json.loads((h / "runs" / "tiny" / "smoke" / "manifest.json").read_text()) for h in (two, one))
    assert m2["status"] == m1["status"] == "complete"
    assert m2["hardware"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert m1["hardware"]["distributed"]["world_size"] == 1
    assert m2["progress"] == m1["progress"] and m2["progress"]["reused"] == 0
    assert len(m2["runs"]) == len(m1["runs"]) == m2["progress"]["total"]
    renamed = {}
    for a, b in zip(m2["runs"], m1["runs"]):
        if a["role"] == "finetune":
            # Its key hashes the inherited weights' bits, which two ranks reproduce to float rounding only:
            # everything else of the run's spec is the same.
            ra, rb = (json.loads((h / "store" / "runs" / f"{e['key']}.json").read_text())["spec"]
                      for h, e in ((two, a), (one, b)))
            assert ra["init"].pop("weights_sha256") != rb["init"].pop("weights_sha256")
            assert {**ra, "genome": None} == {**rb, "genome": None} and ra["init"] == rb["init"]
            renamed[f"store/runs/{a['key']}.json"] = f"store/runs/{b['key']}.json"
            a, b = {**a, "key": None}, {**b, "key": None}
        assert {k: a.get(k) for k in SAME} == {k: b.get(k) for k in SAME}
        if a.get("final_top1") is not None:  # two ranks compute one process's training to float rounding
            assert a["final_top1"] == pytest.approx(b["final_top1"], abs=0.05)
    # The same files (runs, genomes, the large-model cache, store records under the same keys), one copy each.
    assert sorted(renamed.get(f, f) for f in _files(two)) == _files(one)
    records = [json.loads(r.read_text()) for r in (two / "store" / "runs").glob("*.json")]
    assert records and all(r["distributed"] == {"world_size": 2, "backend": "gloo"} for r in records)


def test_evaluate_nproc_writes_its_table_once(tmp_path):
    p = _cli(["evaluate", "--method", "slimming", "--model", "vgg11", "--dataset", "synthetic", "--ratio",
              "0.5", "--seeds", "1", "--width", "0.125", "--input-size", "16", "--epochs", "1",
              "--finetune-epochs", "1", "--out", "table", "--genome-dir", "genomes", "--store", "store",
              "--no-progress", "--device", "cpu", "--nproc", "2"], tmp_path, tmp_path / "home")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("written to ") == 1 and p.stdout.count("### slimming") == 1
    assert p.stderr.count("Scratch-E seed 0: test top-1") == 1  # rank 1 logged nothing
    assert sorted(f.name for f in (tmp_path / "table").iterdir()) == ["accuracy.png", "manifest.json",
                                                                        "table.csv", "table.json", "table.md"]
    table = json.loads((tmp_path / "table" / "table.json").read_text())
    assert all(r["runs"] == 1 for r in table["rows"]), table["rows"]
    assert len(list((tmp_path / "genomes").glob("*.json"))) == 1 + 1 + 1  # pruned, its side file, x0.125 ref


# Two seed genomes, then sampled ones; the median rule may stop a trial from its first epoch on. The x0.9 seed
# (1.45K params) stays near chance while the x0.25 one learns, so it is stopped early: every rank must leave
# that run at the same epoch, or the launch hangs.
EARLY_STOPPING_SPACE = {
    "name": "es", "model": "vgg11", "width": 0.125, "input_size": 16, "dataset": "synthetic",
    "budget": {"kind": "epochs", "epochs": 4}, "objective": {"maximize": "accuracy"},
    "early_stopping": {"warmup_epochs": 0, "startup_trials": 1}, "sampler": {"kind": "random", "seed": 0},
    "parameters": {"stage_multiplier": {"range": [0.25, 1.0], "step": 0.25}}, "uniform": [0.25, 0.9]}


def _study(home: Path, name: str = "es"):
    from prune_nas.search.studies import load_study

    study, _ = load_study(name, f"sqlite:///{home / 'studies' / f'{name}.db'}")
    return study


def test_search_nproc_trains_each_trial_once_on_two_ranks(tmp_path):
    space = tmp_path / "es.yaml"
    space.write_text(json.dumps(EARLY_STOPPING_SPACE))
    two, one = tmp_path / "two", tmp_path / "one"
    args = ["search", "--space", str(space), "--trials", "3", "--no-progress", "--device", "cpu"]
    p = _cli([*args, "--nproc", "2"], tmp_path, two)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("trial 0 [uniform:r0.25") == 1 and p.stdout.count("study es:") == 1  # rank 0 spoke
    q = _cli(args, tmp_path, one)
    assert q.returncode == 0, q.stderr
    t2, t1 = _study(two).trials, _study(one).trials
    assert [t.state.name for t in t2] == [t.state.name for t in t1]
    assert t2[1].state.name == "PRUNED" and "stopped early" in t2[1].user_attrs["early_stopped"]
    # The same candidates under the same run keys (the key does not depend on N) ...
    assert [t.user_attrs["run_key"] for t in t2] == [t.user_attrs["run_key"] for t in t1]
    # ... trained by two ranks to what one process computes, up to float rounding.
    assert t2[0].value == pytest.approx(t1[0].value, abs=0.05)
    records = [json.loads(r.read_text()) for r in (two / "store" / "runs").glob("*.json")]
    assert len(records) == 1 + sum(t.state.name == "COMPLETE" for t in t2[1:])  # stopped runs store nothing
    assert all(r["distributed"] == {"world_size": 2, "backend": "gloo"} for r in records)


def _verdicts(rank: int, init: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    from prune_nas.search.objective import EarlyStopping, StoppedByRank0

    class Trial:  # rank 0's: says "stop" at the second epoch, or its storage fails there
        def __init__(self, fail: bool):
            self.fail, self.attrs = fail, {}

        def report(self, value, step):
            if self.fail and step == 2:
                raise ConnectionError("storage down")

        def should_prune(self):
            return not self.fail

        def set_user_attr(self, k, v):
            self.attrs[k] = v

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    seen = []
    try:
        for fail in (False, True):
            callback = EarlyStopping(Trial(fail) if rank == 0 else None)
            for epoch in range(3):
                try:
                    callback.on_epoch_end(None, epoch, {"test_top1": 0.5})
                except (optuna.TrialPruned, StoppedByRank0, ConnectionError) as e:
                    seen.append((epoch, type(e).__name__))
                    break
    finally:
        dist.destroy_process_group()
    Path(f"{out}.{rank}").write_text(json.dumps(seen))


def test_rank_0s_early_stopping_verdict_stops_every_rank_at_the_same_epoch(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "seen")
    mp.spawn(_verdicts, args=(f"file://{tmp_path / 'rdzv'}", out), nprocs=2)
    # Rank 0 stops at the first epoch's end (its trial says prune), then meets a storage error in the second
    # run; rank 1 leaves both runs at the same epochs.
    assert json.loads(Path(f"{out}.0").read_text()) == [[0, "TrialPruned"], [1, "ConnectionError"]]
    assert json.loads(Path(f"{out}.1").read_text()) == [[0, "StoppedByRank0"], [1, "StoppedByRank0"]]


def _patient(rank: int, init: str, url: str, store: str) -> None:
    import datetime

    import torch
    import torch.distributed as dist

    from prune_nas.search.objective import follow
    from prune_nas.search.studies import load_study, work

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=3))
    try:
        if rank == 0:
            study, space = load_study("wait", url, heartbeat=60)
            work(study, space, store=store, poll_s=0.5, log=lambda s: None)
        else:
            follow(store, device="cpu")
    finally:
        dist.destroy_process_group()


def test_ranks_outwait_the_broadcast_timeout_while_other_workers_finish(tmp_path):
    import threading

    import torch.multiprocessing as mp

    from prune_nas.search.spaces import Space
    from prune_nas.search.studies import create_study

    url = f"sqlite:///{tmp_path / 'wait.db'}"
    space = Space.from_dict({**EARLY_STOPPING_SPACE, "name": "wait", "early_stopping": False})
    study = create_study(space, url, trials=1, heartbeat=60, enqueue=False, log=lambda s: None)
    # The study's one trial runs on another worker (this process) for 8 s; the ranks' process group gives up
    # on a broadcast after 3 s, so the other rank must hear from rank 0 while rank 0 waits for that trial.
    with pytest.warns(UserWarning, match="Heartbeat"):  # Optuna's: asked outside Study.optimize
        trial = study.ask()
    finish = threading.Timer(8, lambda: study.tell(trial, 0.5))
    finish.start()
    try:
        mp.spawn(_patient, args=(f"file://{tmp_path / 'rdzv'}", url, str(tmp_path / "store")), nprocs=2)
    finally:
        finish.join()
    assert [t.state.name for t in study.trials] == ["COMPLETE"]


def test_killing_a_rank_of_a_worker_gives_its_trial_back(tmp_path, rank_pid):
    from prune_nas.search.spaces import Space
    from prune_nas.search.studies import _fail_stale, create_study, load_study

    home = tmp_path / "home"
    url = f"sqlite:///{tmp_path / 'long.db'}"
    long = {**EARLY_STOPPING_SPACE, "name": "long", "early_stopping": False, "uniform": [0.5],
            "budget": {"kind": "epochs", "epochs": 500}}
    create_study(Space.from_dict(long), url, trials=1, log=lambda s: None)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PRUNE_NAS_HOME": str(home)}
    p = subprocess.Popen([sys.executable, "-m", "prune_nas", "worker", "--study", "long", "--storage", url,
                          "--heartbeat", "1", "--no-progress", "--device", "cpu", "--nproc", "2"],
                         cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline, pid = time.time() + 300, None
    while pid is None and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
        pid = rank_pid(p.pid, 1)
    assert pid is not None, p.communicate()[1]
    time.sleep(8)  # into the trial's training
    os.kill(pid, signal.SIGKILL)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 1, err
    assert "training 500 epochs" in out, out
    assert "Traceback" not in err, err  # rank 0 says it lost its peer, or was interrupted by the launcher
    last = err.strip().splitlines()[-1]
    assert last.startswith("prune-nas: error: distributed run failed: rank 1 was killed by SIGKILL"), err
    assert last.endswith("goes back to the study's queue; go on with: prune-nas worker --study long "
                         f"--storage {url}"), last
    assert not (home / "store" / "runs").exists() or not list((home / "store" / "runs").iterdir())
    # Rank 0 gave the trial back (or, had the launcher's SIGTERM come first, left it RUNNING for its silent
    # heartbeat): either way the study holds a waiting retry of the same candidate once it is looked at.
    time.sleep(2)
    study, _ = load_study("long", url, heartbeat=1, grace=1)
    _fail_stale(study)
    trials = study.trials
    assert trials[0].state.name == "FAIL", [t.state for t in trials]
    retries = [t for t in trials if t.state.name == "WAITING"]
    assert len(retries) == 1 and retries[0].user_attrs["genome_key"] == trials[0].user_attrs["genome_key"]
    assert retries[0].system_attrs["failed_trial"] == 0


def test_worker_nproc_on_a_missing_study_is_one_line_before_any_launch(capsys):
    from prune_nas.cli import main

    assert main(["worker", "--study", "nope", "--nproc", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no study 'nope'" in err[0], err


def test_run_refuses_devices_with_nproc(capsys):
    from prune_nas.cli import main

    assert main(["run", "table4_slimming", "--devices", "cpu,cpu", "--nproc", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--devices and --nproc do not combine" in err[0], err
