"""Concurrent candidates: spawned processes train distinct specs into one store, and reuse works after."""

from prune_nas.core.genome import base_genome
from prune_nas.training.parallel import start_mps, train_concurrently
from prune_nas.training.protocol import Protocol
from prune_nas.training.runs import RunSpec
from prune_nas.training.store import Store


def test_two_processes_train_two_candidates_into_one_store(tmp_path):
    store = Store(tmp_path / "store")
    specs = [RunSpec(base_genome("vgg11", width_mult=w, input_size=16), "synthetic", Protocol(epochs=1),
                     seed=0)
             for w in (0.125, 0.25)]
    records, mps = train_concurrently(specs, store, procs=2, device="cpu", engine="fast")
    assert [r["key"] for r in records] == [s.key for s in specs]
    assert all(r["status"] == "ok" for r in records)
    assert sorted(store.keys()) == sorted(s.key for s in specs)
    assert mps == "not used"
    again, _ = train_concurrently(specs, store, procs=1, device="cpu")
    assert [r["finished_at"] for r in again] == [r["finished_at"] for r in records]  # reused, not retrained


def test_mps_status_is_a_reason_not_an_exception():
    status = start_mps()
    assert status in ("started", "running") or status.startswith(("unavailable", "not started"))
