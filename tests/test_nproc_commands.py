"""``--nproc`` beyond ``train``: ``run`` and ``evaluate`` train every run as one DDP job over N processes
(gloo on CPU here) and write what one process writes, once; ``search`` / ``worker`` refuse it in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize("command", [["search", "--space", "x"], ["worker", "--study", "x"]])
def test_search_and_worker_refuse_nproc_in_one_line(command, capsys):
    from prune_nas.cli import main

    assert main([*command, "--nproc", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--nproc is not supported" in err[0] and "--devices" in err[0], err


def test_run_refuses_devices_with_nproc(capsys):
    from prune_nas.cli import main

    assert main(["run", "table4_slimming", "--devices", "cpu,cpu", "--nproc", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--devices and --nproc do not combine" in err[0], err
