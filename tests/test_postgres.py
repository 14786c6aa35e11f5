"""Two workers on one study in a real PostgreSQL server: no trial trains twice, none is lost, and after one
worker is SIGKILLed the other retries its trial and finishes the study.

Needs ``PRUNE_NAS_TEST_POSTGRES`` (a URL such as ``postgresql://postgres@127.0.0.1:54329/prune_nas_test``);
``.ci/run`` installs Debian's PostgreSQL when it is missing, starts a throw-away server and sets it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

URL = os.environ.get("PRUNE_NAS_TEST_POSTGRES")
pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not URL, reason="PRUNE_NAS_TEST_POSTGRES is not set (.ci/run starts a "
                                                 "PostgreSQL server and sets it)")]
REPO = Path(__file__).resolve().parent.parent


def tiny_space(name: str) -> dict:
    return {"name": name, "model": "vgg11", "width": 0.125, "input_size": 16, "dataset": "synthetic",
            "budget": {"kind": "epochs", "epochs": 3}, "early_stopping": False,
            "objective": {"maximize": "accuracy", "max_flops": 0.6},
            "sampler": {"kind": "tpe", "seed": 0, "startup_trials": 4},
            "parameters": {"stage_multiplier": {"range": [0.25, 1.0], "step": 0.25}}, "uniform": [0.5, 0.75]}


def start_worker(study: str, home: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PRUNE_NAS_HOME=str(home), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "prune_nas", "worker", "--study", study, "--storage", URL,
           "--heartbeat", "1", "--grace", "3", "--no-progress", "--threads", "1", "--device", "cpu", *extra]
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=REPO)


def started(log: Path) -> list[int]:
    return [int(m) for m in re.findall(r"^trial (\d+) \[", log.read_text(), re.MULTILINE)]


def test_two_workers_no_duplicate_no_loss_then_kill_and_resume(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from prune_nas.search.spaces import Space
    from prune_nas.search.studies import counts, create_study, storage_url

    name = f"pg-{uuid.uuid4().hex[:8]}"
    space = Space.from_dict(tiny_space(name))
    create_study(space, URL, trials=6, heartbeat=1, grace=3, log=lambda s: None)
    home = tmp_path / "home"  # one store for both workers, as on a shared file system

    def trials():
        return optuna.load_study(study_name=name, storage=storage_url(URL)).trials

    # ---- phase 1: two workers at once -------------------------------------------------------------------
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_worker(name, home, log) for log in logs]
    for p, log in zip(procs, logs):
        assert p.wait(timeout=400) == 0, log.read_text()
    ran = [started(log) for log in logs]
    assert ran[0] and ran[1], "both workers should have run trials"
    assert not set(ran[0]) & set(ran[1]), f"a trial ran in both workers: {ran}"  # no duplicate
    assert len(ran[0]) == len(set(ran[0])) and len(ran[1]) == len(set(ran[1]))
    final = trials()
    numbers = [t.number for t in final]
    assert len(numbers) == len(set(numbers))
    assert set(ran[0]) | set(ran[1]) == set(numbers)  # every trial was run by exactly one worker
    c = counts(final)
    assert c.running == 0 and c.waiting == 0 and c.interrupted == 0  # none lost
    assert c.settled >= 6
    assert [t.user_attrs["origin"] for t in final[:2]] == ["uniform:r0.5", "uniform:r0.75"]
    assert all(t.state == TrialState.COMPLETE for t in final[:2])

    # ---- phase 2: two workers again; SIGKILL one mid-trial; the other retries its trial and finishes ----
    target = c.settled + 4
    logs2 = [tmp_path / "c.log", tmp_path / "d.log"]
    victim = start_worker(name, home, logs2[0], "--trials", str(target))
    survivor = start_worker(name, home, logs2[1], "--trials", str(target))
    end = time.time() + 300
    while time.time() < end:
        mine = set(started(logs2[0]))
        if any(t.state == TrialState.RUNNING and t.number in mine for t in trials()):
            victim.send_signal(signal.SIGKILL)
            break
        assert victim.poll() is None, logs2[0].read_text()
        time.sleep(0.1)
    else:
        pytest.fail("the first worker never started a trial")
    victim.wait()
    killed = [t.number for t in trials() if t.state == TrialState.RUNNING and t.number in started(logs2[0])]
    assert survivor.wait(timeout=400) == 0, logs2[1].read_text()
    final = trials()
    c = counts(final)
    assert c.running == 0 and c.waiting == 0 and c.settled >= target
    for k in killed:  # the killed trial failed by heartbeat and was retried to completion by the survivor
        assert final[k].state == TrialState.FAIL
        retry = [t for t in final if t.system_attrs.get("failed_trial") == k]
        assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
        assert retry[0].number in started(logs2[1])
    assert len(killed) == 1
    numbers = [t.number for t in final]
    assert len(numbers) == len(set(numbers))


PG_CTL = os.environ.get("PRUNE_NAS_TEST_PG_CTL")
PG_OPTIONS = os.environ.get("PRUNE_NAS_TEST_PG_OPTIONS", "")


@pytest.mark.skipif(not PG_CTL, reason="PRUNE_NAS_TEST_PG_CTL is not set (.ci/run sets it)")
def test_fifteen_second_outage_is_ridden_out(tmp_path):
    """Stop the server for 15 s while a worker trains: the worker waits for it (no traceback), the trial the
    outage cut is requeued, and the study finishes with nothing lost or duplicated."""
    import shlex

    import optuna
    from optuna.trial import TrialState

    from prune_nas.search.spaces import Space
    from prune_nas.search.studies import counts, create_study, storage_url

    name = f"pg-outage-{uuid.uuid4().hex[:8]}"
    create_study(Space.from_dict(tiny_space(name)), URL, trials=3, heartbeat=1, grace=3, log=lambda s: None)

    def trials():
        return optuna.load_study(study_name=name, storage=storage_url(URL)).trials

    log = tmp_path / "w.log"
    worker = start_worker(name, tmp_path / "home", log)
    ctl = shlex.split(PG_CTL)
    try:
        end = time.time() + 300
        while not any(t.state == TrialState.RUNNING for t in trials()):
            assert worker.poll() is None and time.time() < end, log.read_text()
            time.sleep(0.1)
        subprocess.run(ctl + ["-m", "fast", "stop"], check=True, capture_output=True)
        time.sleep(15)
        subprocess.run(ctl + ["-o", PG_OPTIONS, "start"], check=True, capture_output=True)
        assert worker.wait(timeout=400) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    text = log.read_text()
    assert "Traceback" not in text and "storage unreachable" in text, text
    final = trials()
    c = counts(final)
    assert c.running == 0 and c.waiting == 0 and 3 <= c.settled <= 4
    done = [(t.user_attrs["genome_key"], t.user_attrs["seed"]) for t in final
            if t.state == TrialState.COMPLETE and "infeasible" not in t.user_attrs]
    assert len(done) == len(set(done))  # no candidate x seed trained into two completed trials
    for t in final:  # an interrupted trial has a finished retry
        if t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs:
            assert any(r.system_attrs.get("failed_trial") == t.number and r.state.is_finished()
                       for r in final)
