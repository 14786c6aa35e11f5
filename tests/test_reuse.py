"""Reuse that must not silently fail: inherited weights are keyed by their tensors (not the zip's bytes), two
identical ``discover`` commands train the large model once, and a failed ``search`` leaves no empty study."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from prune_nas.cli import main
from prune_nas.core.genome import base_genome
from prune_nas.core.masks import file_sha256
from prune_nas.training.runs import RunSpec, attach_weights, inherited_weights, tensors_sha256

REPO = Path(__file__).resolve().parent.parent


def test_identical_weights_hash_the_same_whatever_the_file(tmp_path):
    genome = base_genome("vgg11", width_mult=0.125, input_size=16, num_classes=10)
    torch.manual_seed(0)
    state = {"a.weight": torch.randn(3, 4), "b.bias": torch.arange(5), "c": torch.tensor(1.5)}
    g1 = attach_weights(genome, state, tmp_path / "one" / "x.pt")
    g2 = attach_weights(genome, state, tmp_path / "two" / "y.pt")
    assert g1.provenance["weights"]["sha256"] == g2.provenance["weights"]["sha256"] == tensors_sha256(state)
    k1 = RunSpec(g1, "synthetic", init="finetune").key
    k2 = RunSpec(g2, "synthetic", init="finetune").key
    assert k1 == k2  # the fine-tune run is reused
    other = {**state, "c": torch.tensor(2.5)}
    assert tensors_sha256(other) != tensors_sha256(state)
    assert tensors_sha256({**state, "c": torch.tensor(1.5, dtype=torch.float64)}) != tensors_sha256(state)
    # a genome written before content hashing records the file's hash: still accepted, keyed by content
    old = g1.replace(
        provenance={
            **g1.provenance,
            "weights": {"file": "x.pt", "sha256": file_sha256(tmp_path / "one" / "x.pt")},
        }
    )
    assert inherited_weights(old)[1] == tensors_sha256(state)


def test_weights_that_are_not_a_regular_file_are_refused(tmp_path):
    from prune_nas.core.errors import UserError

    genome = base_genome("vgg11", width_mult=0.125, input_size=16, num_classes=10)
    for target, match in (("/dev/zero", "not a regular file"), (str(tmp_path), "folder")):
        g = genome.replace(provenance={"weights": {"file": target}}, source_dir=tmp_path)
        with pytest.raises(UserError, match=match):
            inherited_weights(g)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    g = genome.replace(provenance={"weights": {"file": "junk.pt"}}, source_dir=tmp_path)
    with pytest.raises(UserError, match="cannot read inherited weights"):
        inherited_weights(g)


@pytest.mark.slow
def test_two_identical_discovers_train_the_large_model_once(tmp_path):
    env = dict(os.environ, PRUNE_NAS_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "prune_nas",
        "discover",
        "--method",
        "slimming",
        "--epochs",
        "2",
        "--no-progress",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    trained = [o for o in outs if "training the large model" in o]
    reused = [o for o in outs if "reusing the trained large model" in o]
    assert len(trained) == 1 and len(reused) == 1, outs
    genomes = sorted((tmp_path / "home" / "genomes" / "discovered").glob("*slimming*.json"))
    assert genomes


def test_file_lock_serialises(tmp_path):
    """The lock discover takes: a second holder waits until the first lets go."""
    from prune_nas.core.atomic import file_lock

    lock = tmp_path / "x.lock"
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[2]); from prune_nas.core.atomic import file_lock\n"
        "with file_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(1.0)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(lock), str(REPO)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "held"
    waited = []
    with file_lock(lock, on_wait=lambda: waited.append(1)):
        assert child.poll() is not None or child.wait(timeout=10) == 0  # we got it only after the child
    child.stdout.close()
    assert waited == [1]


def test_failed_search_leaves_no_empty_study(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space = {
        "name": "empty-fail",
        "model": "vgg11",
        "width": 0.125,
        "input_size": 16,
        "dataset": "synthetic",
        "budget": {"kind": "epochs", "epochs": 1},
        "early_stopping": False,
        "objective": {"maximize": "accuracy"},
        "seed_genomes": ["no-such-genome-anywhere"],
        "parameters": {"stage_multiplier": {"range": [0.25, 1.0], "step": 0.25}},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(space))
    assert main(["search", "--space", str(path), "--trials", "1", "--no-progress", "--device", "cpu"]) == 2
    assert "no-such-genome-anywhere" in capsys.readouterr().err
    assert not (Path(os.environ["PRUNE_NAS_HOME"]) / "studies" / "empty-fail.db").exists()
