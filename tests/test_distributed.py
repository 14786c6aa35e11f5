"""One run on two gloo ranks computes what one process computes (same global batch, same seed); only rank 0
writes; a rank that dies fails the run with its reason and nothing is stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from prune_nas.core.builder import build
from prune_nas.core.genome import base_genome
from prune_nas.training.data import synthetic
from prune_nas.training.loop import train_model
from prune_nas.training.protocol import Protocol

ROOT = Path(__file__).resolve().parents[1]
# A global batch of 127 images (odd: ranks get 64 and 63) that is the whole training set, so each epoch is one
# step and the curve's loss is the loss of that step.
TRAIN_SIZE = 127
EPOCHS = 4
# Two ranks add the same numbers in another order (per-rank sums, then all-reduce; BatchNorm statistics from
# sums of squares): float32 rounding, grown over the steps by SGD at lr 0.1. Measured on CPU: step losses
# within 1e-5 relative, weights within 2e-5 after one step and 3e-4 after four.
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-3
WEIGHT_RTOL = 1e-3


def _train(engine: str) -> tuple[list[float], dict]:
    from prune_nas.training.engine import EngineOptions

    engine = EngineOptions(engine, cpu_fallback=False)  # the fast engine's own step, even on a CPU
    torch.manual_seed(0)
    model = build(base_genome("vgg11", width_mult=0.125, input_size=16))
    data = synthetic(train_size=TRAIN_SIZE, test_size=64, input_size=16)
    h = train_model(model, data, Protocol(epochs=EPOCHS, batch_size=TRAIN_SIZE), seed=3, progress=False,
                    engine=engine)
    assert h.status == "ok", h.reason
    return [c["loss"] for c in h.curve], {k: v.detach().clone() for k, v in model.state_dict().items()}


def _rank(rank: int, world: int, init: str, engine: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        losses, state = _train(engine)
        torch.save({"losses": losses, "state": state}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("engine", ["eager", "fast"])
def test_two_gloo_ranks_train_like_one_process(tmp_path, engine):
    torch.set_num_threads(1)
    alone_losses, alone = _train(engine)
    out = str(tmp_path / "rank")
    mp.spawn(_rank, args=(2, f"file://{tmp_path / 'rdzv'}", engine, out), nprocs=2)
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]
    for got in ranks:
        assert got["losses"] == pytest.approx(alone_losses, rel=LOSS_RTOL)
        for k, v in alone.items():
            torch.testing.assert_close(got["state"][k].float(), v.float(), atol=WEIGHT_ATOL, rtol=WEIGHT_RTOL)
    for k in alone:  # the replicas agree with each other exactly: same all-reduced gradients and statistics
        assert torch.equal(ranks[0]["state"][k], ranks[1]["state"][k]), k


class _StopAfter:
    """Interrupts training at the end of epoch ``epoch`` (counting from 1), after the checkpoint before it."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, model, epoch, metrics):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt


def _resume(checkpoint, callbacks=()):
    torch.manual_seed(0)
    model = build(base_genome("vgg11", width_mult=0.125, input_size=16))
    data = synthetic(train_size=TRAIN_SIZE, test_size=64, input_size=16)
    h = train_model(model, data, Protocol(epochs=EPOCHS, batch_size=TRAIN_SIZE), seed=3, progress=False,
                    checkpoint=checkpoint, callbacks=callbacks)
    return h, model


def _resume_rank(rank: int, world: int, init: str, folder: str) -> None:
    import torch.distributed as dist

    from prune_nas.training.loop import Checkpoint

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        # Rank 1 looks in a folder of its own, where the file is not: another machine of a torchrun launch.
        h, model = _resume(Checkpoint(Path(folder) / f"rank{rank}" / "run.pt", "run", every_s=0))
        torch.save({"curve": h.curve, "state": model.state_dict()}, Path(folder) / f"out.{rank}")
    finally:
        dist.destroy_process_group()


def test_every_rank_resumes_from_rank_0s_checkpoint(tmp_path):
    from prune_nas.training.loop import Checkpoint

    torch.set_num_threads(1)
    with pytest.raises(KeyboardInterrupt):  # stopped in epoch 3: the checkpoint holds epochs 1-2
        _resume(Checkpoint(tmp_path / "rank0" / "run.pt", "run", every_s=0), [_StopAfter(3)])
    saved = torch.load(tmp_path / "rank0" / "run.pt", weights_only=True)
    assert saved["epoch"] == 2
    mp.spawn(_resume_rank, args=(2, f"file://{tmp_path / 'rdzv'}", str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"out.{r}", weights_only=False) for r in range(2)]
    assert not (tmp_path / "rank1").exists()
    for got in ranks:  # both went on from epoch 3 with rank 0's first two epochs
        assert [c["epoch"] for c in got["curve"]] == [1, 2, 3, 4]
        assert got["curve"][:2] == saved["curve"]
    for k, v in ranks[0]["state"].items():
        assert torch.equal(v, ranks[1]["state"][k]), k


def _cli(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "prune_nas", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


TRAIN = ["train", "vgg11", "--dataset", "synthetic", "--no-progress", "--batch-size", "128"]


def test_nproc_run_has_the_same_key_and_only_rank_0_writes(tmp_path):
    p = _cli([*TRAIN, "--epochs", "1", "--store", "store", "--save-weights", "--nproc", "2"], tmp_path)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    records = list((tmp_path / "store" / "runs").glob("*.json"))
    assert len(records) == 1 and list((tmp_path / "store" / "weights").glob("*.pt"))
    rec = json.loads(records[0].read_text())
    assert rec["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert out.count("vgg11 seed 0: top-1") == 1  # rank 1 printed nothing
    # The key does not depend on the number of processes: a single-process command reuses the record.
    p = _cli([*TRAIN, "--epochs", "1", "--store", "store"], tmp_path)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0 and "reused" in out, err
    files = sorted(q.relative_to(tmp_path) for q in tmp_path.rglob("*") if q.is_file())
    assert files == sorted(Path("store") / d / f"{rec['key']}.{ext}" for d, ext in (("runs", "json"),
                                                                                    ("weights", "pt")))


def test_killing_one_rank_fails_the_run_cleanly_and_keeps_the_store(tmp_path, rank_pid):
    p = _cli([*TRAIN, "--epochs", "1", "--store", "store"], tmp_path)
    assert p.wait(timeout=600) == 0
    kept = {q: q.read_bytes() for q in (tmp_path / "store" / "runs").glob("*.json")}
    p = _cli([*TRAIN, "--epochs", "200", "--seed", "1", "--store", "store", "--nproc", "2"], tmp_path)
    deadline, pid = time.time() + 300, None
    while pid is None and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
        pid = rank_pid(p.pid, 1)
    assert pid is not None, p.communicate()[1]
    time.sleep(5)  # into training
    os.kill(pid, signal.SIGKILL)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("prune-nas: error: distributed run failed: rank 1 was killed by SIGKILL"), err
    # no traceback
    assert all(line.startswith("prune-nas: error: ") for line in err.strip().splitlines()), err
    assert {q: q.read_bytes() for q in (tmp_path / "store" / "runs").glob("*.json")} == kept


def test_a_rank_that_lost_its_peer_says_so_in_one_line(monkeypatch):
    from prune_nas.training.distributed import peer_lost

    lost = RuntimeError("[gloo/pair.cc:561] Connection closed by peer [127.0.0.1]:23210. "
                        "This is typically...")
    assert peer_lost(lost) is None  # not a launched rank: the traceback stays
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert peer_lost(lost) == ("rank 0 stopped: another rank went away "
                               "(Connection closed by peer [127.0.0.1]:23210)")
    assert peer_lost(RuntimeError("shape mismatch")) is None  # a bug of ours keeps its traceback
