"""A training run killed mid-way resumes from its checkpoint and ends exactly where an uninterrupted run ends
(on CPU, where runs are deterministic); the checkpoint goes once the record is written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from prune_nas.core.genome import base_genome
from prune_nas.training.data import synthetic
from prune_nas.training.protocol import Budget, Protocol
from prune_nas.training.runs import RunSpec, run
from prune_nas.training.store import Store

EPOCHS = 4


class _KillAfter:
    """Stands in for a killed process: Ctrl-C at the end of epoch ``k``, before its checkpoint (so epoch k
    trains again on resume)."""

    def __init__(self, k: int):
        self.k = k

    def on_epoch_end(self, model, epoch, metrics):
        if epoch + 1 == self.k:
            raise KeyboardInterrupt


def _spec(engine_epochs: int = EPOCHS) -> RunSpec:
    genome = base_genome("vgg11", width_mult=0.125, input_size=16, num_classes=10)
    # lr steps inside the run, so the resumed half must pick up the schedule where it stopped
    protocol = Protocol(epochs=engine_epochs, batch_size=32, lr_steps=(0.5, 0.75))
    return RunSpec(genome, "synthetic", protocol, Budget("epochs", engine_epochs), seed=3)


@pytest.fixture(scope="module")
def data():
    return synthetic(train_size=192, test_size=64, input_size=16)


def _weights(store: Store, key: str) -> dict:
    return torch.load(store.weights_path(key), weights_only=True)


@pytest.mark.parametrize("engine", ["eager", "fast"])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, data, engine):
    spec = _spec()
    whole = Store(tmp_path / "whole")
    ref = run(
        spec, whole, dataset=data, progress=False, save_weights=True, engine=engine, checkpoint_every_s=0
    )

    store = Store(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        run(
            spec,
            store,
            dataset=data,
            progress=False,
            save_weights=True,
            engine=engine,
            callbacks=[_KillAfter(3)],
            checkpoint_every_s=0,
        )
    assert store.get(spec.key) is None and store.checkpoint_path(spec.key).is_file()
    saved = torch.load(store.checkpoint_path(spec.key), weights_only=True)
    assert saved["epoch"] == 2 and saved["tag"] == spec.key

    resumed = run(
        spec, store, dataset=data, progress=False, save_weights=True, engine=engine, checkpoint_every_s=0
    )
    assert not store.checkpoint_path(spec.key).exists()  # deleted once the record is written
    assert [c["loss"] for c in resumed["curve"]] == [c["loss"] for c in ref["curve"]]
    assert [c["lr"] for c in resumed["curve"]] == [c["lr"] for c in ref["curve"]]
    assert resumed["final_top1"] == ref["final_top1"] and resumed["best_top1"] == ref["best_top1"]
    a, b = _weights(whole, spec.key), _weights(store, spec.key)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_of_another_run_is_ignored(tmp_path, data):
    spec = _spec()
    store = Store(tmp_path)
    other = _spec(EPOCHS + 1)
    with pytest.raises(KeyboardInterrupt):
        run(other, store, dataset=data, progress=False, callbacks=[_KillAfter(2)], checkpoint_every_s=0)
    store.checkpoint_path(spec.key).parent.mkdir(parents=True, exist_ok=True)
    os.replace(store.checkpoint_path(other.key), store.checkpoint_path(spec.key))  # the wrong run's state
    rec = run(spec, store, dataset=data, progress=False, checkpoint_every_s=0)
    ref = run(spec, Store(tmp_path / "ref"), dataset=data, progress=False)
    assert rec["final_top1"] == ref["final_top1"] and len(rec["curve"]) == EPOCHS


def test_damaged_checkpoint_trains_from_the_start(tmp_path, data):
    spec = _spec()
    store = Store(tmp_path)
    path = store.checkpoint_path(spec.key)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    rec = run(spec, store, dataset=data, progress=False)
    assert rec["status"] == "ok" and len(rec["curve"]) == EPOCHS and not path.exists()


_CHILD = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    from tests.test_resume import _spec
    from prune_nas.training.data import synthetic
    from prune_nas.training.runs import run
    from prune_nas.training.store import Store

    class Slow:  # leaves time to be killed after the second epoch's checkpoint
        def on_epoch_end(self, model, epoch, metrics):
            print("epoch", epoch + 1, flush=True)
            if epoch + 1 == 2:
                import time; time.sleep(60)

    data = synthetic(train_size=192, test_size=64, input_size=16)
    slow = sys.argv[3] == "slow"
    run(_spec(), Store(sys.argv[1]), dataset=data, progress=False, save_weights=True, checkpoint_every_s=0,
        callbacks=[Slow()] if slow else [])
""")


def test_sigkilled_process_resumes_to_the_same_result(tmp_path):
    """A real SIGKILL between epochs: the rerun finishes from the checkpoint with the same weights."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", _CHILD, str(tmp_path / "s")]
    child = subprocess.Popen(cmd + [root, "slow"], stdout=subprocess.PIPE, text=True, env=env, cwd=root)
    for line in child.stdout:
        if line.strip() == "epoch 2":
            break
    spec = _spec()
    ckpt = Store(tmp_path / "s").checkpoint_path(spec.key)
    deadline = time.monotonic() + 30
    while not ckpt.exists() and time.monotonic() < deadline:  # the checkpoint follows the callback
        time.sleep(0.05)
    time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    saved = torch.load(ckpt, weights_only=True)
    assert saved["epoch"] in (1, 2)
    subprocess.run(cmd + [root, "fast"], check=True, env=env, cwd=root, timeout=300, capture_output=True)
    subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "w"), root, "fast"],
        check=True,
        env=env,
        cwd=root,
        timeout=300,
        capture_output=True,
    )
    a = torch.load(Store(tmp_path / "s").weights_path(spec.key), weights_only=True)
    b = torch.load(Store(tmp_path / "w").weights_path(spec.key), weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (
        Store(tmp_path / "s").get(spec.key)["final_top1"] == Store(tmp_path / "w").get(spec.key)["final_top1"]
    )
