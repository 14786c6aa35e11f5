"""Workers ride out ordinary hiccups: one paused past the heartbeat grace moves on when it wakes (no
``Cannot tell a FAIL trial``), and a storage that goes away for a while is waited for, then the study
finishes with no trial lost or duplicated and no traceback. The PostgreSQL outage test lives in
test_postgres.py; here the storage errors are injected."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from prune_nas.search import studies
from prune_nas.search.spaces import Space
from prune_nas.search.studies import StorageLost, counts, create_study, retry_storage, work
from tests.test_search import quiet, sqlite, start_worker, tiny_space, wait_for


def assert_nothing_lost(trials, target: int) -> None:
    """The study settled ``target`` trials (one more when two workers asked for the last one at once), none
    waiting or running, no candidate x seed completed twice, and every interrupted trial was retried."""
    c = counts(trials)
    assert c.running == 0 and c.waiting == 0
    assert target <= c.settled <= target + 1, c
    done = Counter(
        (t.user_attrs.get("genome_key"), t.user_attrs.get("seed"))
        for t in trials
        if t.state == TrialState.COMPLETE and "infeasible" not in t.user_attrs
    )
    assert all(n == 1 for n in done.values()), done
    for t in trials:
        if t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs:
            retries = [
                r
                for r in trials
                if t.number in r.system_attrs.get("retry_history", [])
                or r.system_attrs.get("failed_trial") == t.number
            ]
            assert retries and any(r.state.is_finished() for r in retries), t.number


def pause_holding_no_lock(p, db: Path) -> None:
    """SIGSTOP ``p`` at a moment it holds no lock on the SQLite file: a process paused inside a transaction
    stalls every other connection until it resumes (SQLite's nature, not the behaviour under test)."""
    for _ in range(100):
        p.send_signal(signal.SIGSTOP)
        con = sqlite3.connect(db, timeout=2)
        try:
            con.execute("BEGIN EXCLUSIVE")  # granted only when no other connection holds any lock
            con.rollback()
            return
        except sqlite3.OperationalError:
            p.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        finally:
            con.close()
    raise AssertionError("the worker held the database lock at every try")


def test_worker_paused_past_the_grace_moves_on(tmp_path):
    """SIGSTOP a worker mid-trial longer than the grace; another worker fails and retries its trial; on
    SIGCONT the paused worker drops the trial it no longer owns and both exit 0 without a traceback."""
    space = Space.from_dict(tiny_space(budget={"kind": "epochs", "epochs": 3}, uniform=[0.5, 0.75]))
    url = sqlite(tmp_path)
    home = tmp_path / "home"
    create_study(space, url, trials=3, heartbeat=1, grace=3, log=quiet)

    def trials():  # a storage of its own each time, as a URL gives, that waits out write locks 60 s, not 5
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        return optuna.load_study(study_name="tiny", storage=storage).trials

    a = start_worker("tiny", url, home, tmp_path / "a.log")
    b = None
    try:
        wait_for(lambda: any(t.state == TrialState.RUNNING for t in trials()), 120, "a running trial", [a])
        pause_holding_no_lock(a, tmp_path / "s.db")
        paused = next(t.number for t in trials() if t.state == TrialState.RUNNING)
        b = start_worker("tiny", url, home, tmp_path / "b.log")
        wait_for(lambda: trials()[paused].state == TrialState.FAIL, 120, "the paused trial failed", [b])
        time.sleep(1)
        a.send_signal(signal.SIGCONT)
        assert b.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()
        assert a.wait(timeout=300) == 0, (tmp_path / "a.log").read_text()
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    assert "Traceback" not in logs and "Cannot tell" not in logs, logs
    assert f"trial {paused} was settled by another worker" in (tmp_path / "a.log").read_text()
    assert_nothing_lost(trials(), 3)


class _Flaky:
    """Wraps a storage: every call raises OperationalError while ``down`` (a database server restarting)."""

    def __init__(self, inner):
        self.inner, self.down = inner, False

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if not callable(attr) or name in ("get_heartbeat_interval",):
            return attr

        def call(*args, **kwargs):
            if self.down:
                raise sqlalchemy.exc.OperationalError("SELECT", {}, ConnectionRefusedError("server down"))
            return attr(*args, **kwargs)

        return call


def test_storage_outage_mid_trial_is_ridden_out(tmp_path, monkeypatch):
    """The storage goes away while a trial trains and comes back: the worker waits, requeues the trial (the
    retry reuses the finished run) and the study ends complete."""
    space = Space.from_dict(tiny_space(budget={"kind": "epochs", "epochs": 2}, uniform=[0.5]))
    study = create_study(space, sqlite(tmp_path), trials=2, log=quiet)
    flaky = _Flaky(study._storage)
    study._storage = flaky
    from prune_nas.training import runs

    real_run = runs.run
    outages = []

    def run_then_outage(*args, **kwargs):
        record = real_run(*args, **kwargs)
        if not outages:  # after the first training, the database restarts for ~1.5 s
            outages.append(time.monotonic())
            flaky.down = True

            def back():
                time.sleep(1.5)
                flaky.down = False

            import threading

            threading.Thread(target=back, daemon=True).start()
        return record

    monkeypatch.setattr(runs, "run", run_then_outage)
    lines = []
    work(study, space, trials=2, store=tmp_path / "store", log=lines.append, patience_s=60)
    study._storage = flaky.inner
    assert outages and any("storage unreachable" in s for s in lines), lines
    trials = study.get_trials(deepcopy=False)
    assert_nothing_lost(trials, 2)
    assert counts(trials).interrupted == 1  # the trial the outage cut, retried (and its run reused)


def test_storage_gone_for_good_ends_with_one_line(tmp_path):
    space = Space.from_dict(tiny_space(uniform=[0.5]))
    study = create_study(space, sqlite(tmp_path), trials=1, log=quiet)
    flaky = _Flaky(study._storage)
    flaky.down = True
    study._storage = flaky
    with pytest.raises(StorageLost, match=r"resume with: prune-nas worker --study tiny --storage x$"):
        work(
            study,
            space,
            trials=1,
            store=tmp_path / "store",
            log=quiet,
            patience_s=1.0,
            resume="prune-nas worker --study tiny --storage x",
        )


def test_retry_storage_backs_off_then_succeeds(monkeypatch):
    calls, slept = [], []
    monkeypatch.setattr(studies.time, "sleep", slept.append)

    def call():
        calls.append(1)
        if len(calls) < 4:
            raise optuna.exceptions.StorageInternalError("down")
        return "ok"

    assert retry_storage(call, patience_s=60, log=quiet, resume="x") == "ok"
    assert slept == [0.5, 1.0, 2.0]
