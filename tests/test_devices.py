"""Every device of a machine: ``--devices`` slots (CPU stand-ins here), workers pinned to them, a spec's
independent runs spread over them with one consistent manifest, and a study shared by device workers."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml

from prune_nas.cli import main
from prune_nas.core.errors import UserError
from prune_nas.repro.experiments import _merge_manifest, load_manifest, load_spec, run_experiment
from prune_nas.repro.spread import groups_of, waves
from prune_nas.training.parallel import map_on_devices, parse_devices

ROOT = Path(__file__).resolve().parent.parent


def test_devices_parse_to_one_slot_per_worker():
    assert parse_devices("cpu,cpu") == ["cpu", "cpu"]
    assert parse_devices("cpu", per_device=3) == ["cpu"] * 3
    for bad, msg in [("x", "not a GPU index"), ("", "names no device"), ("cuda:x", "not a GPU index")]:
        with pytest.raises(UserError, match=msg):
            parse_devices(bad)
    with pytest.raises(UserError, match="per-device"):
        parse_devices("cpu", per_device=0)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="GPU 0 does not exist"):
            parse_devices("0,1")


def _where(item: int, device: str) -> tuple:
    return item, device, os.getpid(), torch.get_num_threads()


def test_each_pool_process_keeps_its_device_slot():
    devices = ["cpu", "cpu"]
    results, mps = map_on_devices(_where, list(range(6)), devices)
    assert [r[0] for r in results] == list(range(6))  # order kept
    assert {r[1] for r in results} == {"cpu"} and mps == "not used"
    pids = {r[2] for r in results}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids
    assert {r[3] for r in results} == {max(1, (os.cpu_count() or 1) // 2)}  # the cores are shared out


def test_manifest_merge_keeps_every_process_runs():
    spec = {"sha256": "s"}
    a = {"spec": spec, "scale": "smoke", "progress": {"done": 1, "total": 3}, "patterns": [],
         "runs": [{"role": "prune", "row": 0, "seed": 0, "key": "k0", "reused": False}]}
    b = {**a, "runs": [{"role": "prune", "row": 0, "seed": 1, "key": "k1", "reused": True}]}
    merged = _merge_manifest(a, b)
    assert [r["seed"] for r in merged["runs"]] == [0, 1] and merged["progress"]["done"] == 2
    assert merged["progress"]["reused"] == 1 and merged["status"] == "running"
    again = _merge_manifest(merged, b)  # the same unit saved twice counts once
    assert again["progress"]["done"] == 2
    other = _merge_manifest({**a, "spec": {"sha256": "other"}}, b)  # another spec's manifest is not merged
    assert other["progress"]["done"] == 1


def test_groups_and_waves_of_a_comparison_spec():
    plan = load_spec(ROOT / "experiments" / "table4_slimming.yaml").plan("smoke")
    seeds = plan.rows[0].seeds
    assert groups_of(plan) == [(0, s) for s in seeds]
    assert waves(plan) == [[(0, s) for s in seeds]]  # each seed prunes its own large model: one wave


def test_run_spread_over_cpu_stand_ins_writes_the_single_process_manifest(tmp_path, capsys):
    argv = ["run", "table4_slimming", "--scale", "smoke", "--no-progress",
            "--runs-dir", str(tmp_path / "runs"), "--store", str(tmp_path / "store")]
    assert main([*argv, "--devices", "cpu,cpu"]) == 0
    assert "spread over cpu, cpu" in capsys.readouterr().out
    folder = tmp_path / "runs" / "table4_slimming" / "smoke"
    spread = load_manifest(folder)
    assert spread["status"] == "complete" and spread["progress"]["done"] == spread["progress"]["total"] == 10
    assert spread["progress"]["reused"] == 0 and spread["hardware"]["devices"] == ["cpu", "cpu"]
    assert not list(folder.glob("*.lock"))
    # A single process now reuses every run and writes the same entries in the same order.
    alone = load_manifest(run_experiment(load_spec("table4_slimming"), "smoke", runs_root=tmp_path / "runs",
                                         store=tmp_path / "store", progress=False, log=lambda s: None))
    keys = [(r["role"], r["seed"], r["key"]) for r in alone["runs"]]
    assert keys == [(r["role"], r["seed"], r["key"]) for r in spread["runs"]]
    assert alone["progress"]["reused"] == 10


def test_worker_on_device_slots_shares_one_study(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space = {"name": None, "model": "vgg11", "width": 0.125, "input_size": 16, "dataset": "synthetic",
             "budget": {"kind": "epochs", "epochs": 1}, "early_stopping": False,
             "objective": {"maximize": "accuracy"}, "sampler": {"kind": "random", "seed": 0},
             "parameters": {"stage_multiplier": {"range": [0.25, 1.0], "step": 0.25}}}
    path = tmp_path / "tiny-dev.yaml"
    path.write_text(yaml.safe_dump(space))
    assert main(["search", "--space", str(path), "--trials", "3", "--no-progress", "--devices", "cpu",
                 "--per-device", "2"]) == 0
    out = capsys.readouterr().out
    # Two workers may each finish the trial that reached the target: 3 or 4 complete, never fewer.
    complete = [int(m) for m in re.findall(r"(\d+) complete", out)]
    assert complete and max(complete) >= 3, out
    assert main(["results", "tiny-dev", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["settled"] >= 3  # two workers may each finish the trial that reached the target


@pytest.mark.parametrize("argv, msg", [
    (["worker", "--study", "x", "--devices", "7"], "GPU 7 does not exist"),
    (["worker", "--study", "x", "--per-device", "2"], "--per-device needs --devices"),
    (["train", "vgg11", "--nproc", "0"], "--nproc must be >= 1"),
])
def test_device_option_errors_are_one_line(argv, msg, capsys):
    if torch.cuda.is_available() and "GPU" in msg:
        pytest.skip("needs a machine with fewer GPUs")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
