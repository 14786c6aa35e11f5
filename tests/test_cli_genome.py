"""`prune-nas genome ...` as a user runs it: exit codes, one-line errors, JSON output."""

import json
import subprocess
import sys

import pytest

from prune_nas.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "prune_nas", *args], capture_output=True, text=True)


def test_info_json_has_params_and_flops(capsys):
    assert main(["genome", "info", "vgg16-a", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 5_397_034 and info["flops"] == 206_279_680
    assert info["reduction"]["params"] == pytest.approx(0.640, abs=0.001)


def test_list_shows_library_and_models(capsys):
    assert main(["genome", "list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "vgg16-a" in {x["name"] for x in out["library"]}
    assert "densenet40" in {x["name"] for x in out["models"]}


def test_validate_good_and_bad(tmp_path):
    good = tmp_path / "good.json"
    assert main(["genome", "export", "resnet56-b", "--out", str(good)]) == 0
    r = run_cli("genome", "validate", str(good))
    assert r.returncode == 0 and "valid" in r.stdout
    bad = json.loads(good.read_text())
    bad["widths"]["stage2"] = 0
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    r = run_cli("genome", "validate", str(tmp_path / "bad.json"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "widths.stage2" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("content,needle", [("{not json", "not valid JSON"),
                                             ('{"format": "prune-nas.genome", "version": 1, "model": "vgg16",'
                                              ' "family": "alexnet", "num_classes": 10, "input": '
                                              '{"channels": 3, "size": 32}, "widths": {}}', "family")])
def test_malformed_files_exit_2_with_one_line(tmp_path, content, needle):
    f = tmp_path / "x.json"
    f.write_text(content)
    r = run_cli("genome", "validate", str(f))
    assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1


def test_unknown_genome_name_suggests(capsys):
    assert main(["genome", "info", "resnet57"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_export_then_load_in_python(tmp_path):
    import prune_nas

    out = tmp_path / "a.json"
    assert main(["genome", "export", "vgg16-a", "--out", str(out)]) == 0
    g = prune_nas.load_genome(out)
    model = prune_nas.build(g)
    assert sum(p.numel() for p in model.parameters()) == 5_397_034
