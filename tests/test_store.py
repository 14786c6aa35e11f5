"""Run specs, the results store, reuse of finished runs, fine-tuning and the `train` / `budget` commands."""

from __future__ import annotations

import json

import pytest
import torch

import prune_nas.training.runs as train_mod
from prune_nas.core.builder import build
from prune_nas.core.genome import _hash, base_genome, save_genome
from prune_nas.training.data import synthetic
from prune_nas.training.protocol import Budget, Protocol
from prune_nas.training.runs import RunSpec, attach_weights, init_model, run
from prune_nas.training.store import Store


@pytest.fixture(scope="module")
def data16():
    return synthetic(train_size=128, test_size=64, input_size=16)


def tiny(width_mult: float = 0.125, **kw):
    return base_genome("vgg11", input_size=16, width_mult=width_mult, **kw)


P1 = Protocol(epochs=1)


# ---- store -------------------------------------------------------------------------------------------------
def test_store_roundtrip_atomic_and_strict_json(tmp_path):
    s = Store(tmp_path)
    path = s.put({"key": "abc", "loss": float("nan"), "curve": [{"loss": float("inf")}], "top1": 0.5})
    assert path == s.path_for("abc") == tmp_path / "runs" / "abc.json"
    assert s.get("abc") == {"key": "abc", "loss": None, "curve": [{"loss": None}], "top1": 0.5}
    json.loads(path.read_text())  # strict JSON (no NaN tokens) so other tools can read it
    assert [p.name for p in path.parent.iterdir()] == ["abc.json"]  # no temp files left behind
    assert "abc" in s and s.keys() == ["abc"] and s.get("missing") is None
    path.write_text("{half a rec")
    assert s.get("abc") is None  # unreadable counts as absent: the run is redone


def test_default_root_follows_prune_nas_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNE_NAS_HOME", str(tmp_path))
    assert Store().root == tmp_path / "store"
    monkeypatch.delenv("PRUNE_NAS_HOME")
    assert str(Store().root) == "artifacts/store"


# ---- run specs ---------------------------------------------------------------------------------------------
def test_spec_key_is_pinned_and_canonical():
    g = tiny()
    spec = RunSpec(g, "digits", Protocol.for_dataset("digits"), Budget("epochs", 3), seed=0)
    # Pinned: a change to the key's content (defaults included) must be deliberate, as it orphans stored runs.
    assert spec.key == PINNED_KEY
    # The key before BN scale init was recorded: a CIFAR VGG starts at 0.5 (as the reference), so only its
    # init entry changed.
    assert spec.key_dict()["init"] == {"kind": "scratch", "bn_init": 0.5}
    assert _hash({**spec.key_dict(), "init": {"kind": "scratch"}}) == "061271a21b59525b"
    renamed = RunSpec(g.replace(name="renamed"), "digits", Protocol.for_dataset("digits"),
                      Budget("epochs", 3))
    assert renamed.key == spec.key  # the name is not the architecture
    assert spec.effective_protocol().epochs == 3
    others = [RunSpec(g, "digits", Protocol.for_dataset("digits"), Budget("epochs", 3), seed=1),
              RunSpec(g, "synthetic", Protocol.for_dataset("digits"), Budget("epochs", 3)),
              RunSpec(g, "digits", Protocol.for_dataset("digits", lr=0.05), Budget("epochs", 3)),
              RunSpec(g, "digits", Protocol.for_dataset("digits"), Budget("epochs", 4)),
              RunSpec(tiny(width_mult=0.25), "digits", Protocol.for_dataset("digits"), Budget("epochs", 3))]
    assert len({spec.key} | {o.key for o in others}) == 6


PINNED_KEY = "b65779c56ae37d8d"


def test_flops_budget_resolves_scratch_b():
    ref = base_genome("vgg16-l1")
    a = ref.replace(widths={**ref.widths, **{f"conv{i}": 256 for i in range(8, 14)}, "conv1": 32})
    spec = RunSpec(a, "cifar10", Protocol(), Budget("flops", reference=ref))
    b = spec.resolved_budget()
    assert b["kind"] == "flops" and b["base_epochs"] == 160 and b["epochs"] > 160
    assert b["epochs"] == 160 * b["reference_flops"] // b["candidate_flops"]
    assert spec.effective_protocol().lr_milestones() == [b["epochs"] // 2, int(0.75 * b["epochs"])]
    capped = RunSpec(a, "cifar10", Protocol(), Budget("flops", reference=ref, cap=1.1))
    assert capped.resolved_budget()["epochs"] == 176
    with pytest.raises(Exception, match="reference"):
        Budget("flops")


# ---- run and reuse -----------------------------------------------------------------------------------------
def test_run_writes_a_complete_record_and_reuses_it(tmp_path, data16, monkeypatch):
    store = Store(tmp_path)
    spec = RunSpec(tiny(), "synthetic", P1, seed=0)
    rec = run(spec, store, dataset=data16, progress=False)
    assert rec["status"] == "ok" and rec["key"] == spec.key and store.get(spec.key) == json.loads(
        store.path_for(spec.key).read_text())
    for field in ("spec", "protocol", "epochs", "params", "flops", "curve", "final_top1", "best_top1",
                  "wall_time_s", "device", "torch", "prune_nas", "dataset"):
        assert field in rec, field
    assert "final_top5" not in rec  # 10 classes
    assert rec["curve"][0].keys() >= {"epoch", "lr", "loss", "train_top1", "test_top1"}
    assert rec["spec"]["genome"]["widths"] == dict(spec.genome.widths) and rec["protocol"]["epochs"] == 1

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_mod, "train_model", no_training)
    assert run(spec, store, dataset=data16, progress=False) == store.get(spec.key)


def test_same_spec_same_record_accuracy(tmp_path, data16):
    spec = RunSpec(tiny(), "synthetic", Protocol(epochs=2), seed=3)
    a = run(spec, Store(tmp_path / "a"), dataset=data16, progress=False)
    b = run(spec, Store(tmp_path / "b"), dataset=data16, progress=False)
    assert a["final_top1"] == b["final_top1"]
    assert [c["loss"] for c in a["curve"]] == [c["loss"] for c in b["curve"]]


def test_failed_run_is_recorded_and_others_unaffected(tmp_path, data16):
    store = Store(tmp_path)
    bad = RunSpec(tiny(), "synthetic", Protocol(epochs=2, lr=1e30), seed=0)
    rec = run(bad, store, dataset=data16, progress=False)
    assert rec["status"] == "failed" and "non-finite" in rec["reason"]
    assert store.get(bad.key)["status"] == "failed" and store.get(bad.key)["curve"][0]["loss"] is None
    good = run(RunSpec(tiny(), "synthetic", P1, seed=0), store, dataset=data16, progress=False)
    assert good["status"] == "ok" and len(store.keys()) == 2


def test_num_classes_must_match(tmp_path, data16):
    with pytest.raises(Exception, match="classes"):
        run(RunSpec(tiny(num_classes=100), "synthetic", P1), Store(tmp_path), dataset=data16, progress=False)


# ---- fine-tuning -------------------------------------------------------------------------------------------
def test_finetune_starts_from_inherited_weights(tmp_path, data16):
    g = tiny()
    torch.manual_seed(123)
    trained = build(g)
    g = attach_weights(g, trained.state_dict(), tmp_path / "g.pt")
    save_genome(g, tmp_path / "g.json")
    from prune_nas.core.genome import load_genome

    g = load_genome(tmp_path / "g.json")
    spec = RunSpec(g, "synthetic", Protocol.finetune(epochs=1), init="finetune")
    model = init_model(spec)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())
    assert spec.key_dict()["init"]["weights_sha256"] == g.provenance["weights"]["sha256"]
    assert spec.key != RunSpec(g, "synthetic", Protocol.finetune(epochs=1)).key
    rec = run(spec, Store(tmp_path / "s"), dataset=data16, progress=False)
    assert rec["status"] == "ok" and rec["protocol"]["lr"] == 0.001
    assert rec["spec"]["init"]["kind"] == "finetune"
    (tmp_path / "g.pt").write_bytes(b"tampered")
    with pytest.raises(Exception, match="sha256"):
        _ = RunSpec(g, "synthetic", Protocol.finetune(epochs=1), init="finetune").key


def test_finetune_without_weights_is_a_user_error():
    from prune_nas.core.errors import UserError

    with pytest.raises(UserError, match="inherited weights"):
        _ = RunSpec(tiny(), "digits", init="finetune").key


# ---- command line ------------------------------------------------------------------------------------------
def test_cli_train_seeds_summary_and_reuse(tmp_path, capsys):
    from prune_nas.cli import main

    genome = save_genome(tiny().replace(name="tiny"), tmp_path / "tiny.json")
    argv = ["train", str(genome), "--dataset", "synthetic", "--epochs", "1", "--seeds", "2", "--store",
            str(tmp_path / "store"), "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("trained in") == 2 and "±" in out and "Scratch-E" in out and "2/2" in out
    assert main(argv) == 0
    assert capsys.readouterr().out.count("reused") == 2
    assert len(Store(tmp_path / "store").keys()) == 2


def test_cli_budget_prints_ratio_and_epochs(capsys):
    from prune_nas.cli import main

    assert main(["budget", "vgg16-a"]) == 0
    out = capsys.readouterr().out
    assert "1.5196" in out and "Scratch-B  243 epochs" in out and "121, 182" in out
    assert main(["budget", "vgg16-a", "--epochs", "90", "--cap", "imagenet"]) == 0
    assert "136 epochs" in capsys.readouterr().out
    assert main(["budget", "vgg16-a", "--cap", "lots"]) == 2
