"""`discover` end to end (tiny, 1 epoch), the large-model cache, and the CLI's errors and tables."""

import json

import pytest
import torch

from prune_nas.cli import main
from prune_nas.core.genome import load_genome
from prune_nas.design.discover import discover, large_key, protocol_for, regularizer, run_name
from prune_nas.methods import get_method

QUIET = {"progress": False, "log": lambda s: None}


def test_slimming_end_to_end_and_cache_reuse(tmp_path):
    from prune_nas.training.runs import RunSpec, init_model

    logs = []
    kw = {"dataset": "digits", "epochs": 1, "out_dir": tmp_path / "out", "store_root": tmp_path / "store",
              "progress": False, "log": logs.append}
    first = discover("slimming", ratio=0.5, **kw)
    # 1 epoch, not digits' default 20
    assert first.path.name == "vgg11-x0.25-digits-slimming-r0.5-s0-1ep.json"
    g = load_genome(first.path)  # validates
    prov = g.provenance
    assert prov["method"] == "slimming" and prov["dataset"] == "digits" and prov["seed"] == 0
    assert prov["pruned_from"]["large_model"]["epochs"] == 1
    assert 0 <= prov["pruned_from"]["large_model"]["test_top1"] <= 1
    assert prov["weights"]["file"] == first.weights.name and "torch_version" in prov
    # the effective s (schedule-scaled: 1 epoch of 23 steps) and how it was derived
    training = prov["pruned_from"]["large_model"]["training"]
    assert training["rule"] == "schedule" and training["s"] > 1e-4 and training["steps_per_epoch"] == 23
    assert prov["notes"][0] == f"slimming: {training['text']}" and first.notes[0] == prov["notes"][0]
    assert "s" not in prov["params"]  # the user gave none
    assert sum(g.widths.values()) < sum(first.base.widths.values())
    # the inherited weights load into the pruned model (the fine-tune baseline's start)
    model = init_model(RunSpec(g, "digits", init="finetune"))
    assert model(torch.randn(2, 3, g.input_size, g.input_size)).shape == (2, 10)
    # the reference (the narrow large model) is written next to it, so reductions are measured against it
    assert (tmp_path / "out" / "vgg11-x0.25-digits.json").exists()
    assert not first.large["reused"]

    second = discover("slimming", ratio=0.7, **kw)
    assert second.large["reused"] and second.large["key"] == first.large["key"]
    assert any(line.startswith("reusing the trained large model") for line in logs)
    assert sum(second.genome.widths.values()) < sum(g.widths.values())


def test_magnitude_writes_the_exact_mask_file(tmp_path):
    d = discover("magnitude", ratio=0.8, dataset="synthetic", epochs=1, out_dir=tmp_path,
                 store_root=tmp_path / "s", **QUIET)
    g = load_genome(d.path)  # checks the mask file's hash and shapes
    assert d.masks.exists() and g.sparsity.mask.file == d.masks.name
    from prune_nas.core.masks import load_masks

    masks = load_masks(g)
    total = sum(m.size for m in masks.values())
    assert total - sum(int(m.sum()) for m in masks.values()) == round(0.8 * total)
    assert set(g.sparsity.kernel_keep) == {"1", "2", "3", "4", "5"}


def test_methods_without_training_write_only_the_genome(tmp_path):
    d = discover("uniform", ratio=0.5, dataset="synthetic", out_dir=tmp_path, store_root=tmp_path / "s",
                 **QUIET)
    assert d.large is None and d.weights is None
    assert not (tmp_path / "s").exists()  # nothing trained, nothing cached
    assert load_genome(d.path).widths["conv1"] == d.base.widths["conv1"] // 2


def test_cache_key_depends_on_the_regularizer_and_protocol():
    from prune_nas import base_genome

    g = base_genome("vgg11", width_mult=0.25, input_size=16)
    p = protocol_for("digits")
    slim, mag = get_method("slimming"), get_method("magnitude")
    k_slim, _ = large_key(g, "digits", p, regularizer(slim, g, {"ratio": 0.5, "s": None}), 0)
    assert large_key(g, "digits", p, regularizer(slim, g, {"ratio": 0.9, "s": None}), 0)[0] == k_slim
    assert large_key(g, "digits", p, regularizer(slim, g, {"ratio": 0.5, "s": 1e-3}), 0)[0] != k_slim
    # the default s depends on the schedule, and so does the key; on the paper's schedule it is the paper's s
    sched = {"protocol": p, "steps_per_epoch": 23}
    assert regularizer(slim, g, {"ratio": 0.5, "s": None}, **sched)["l1_bn_scales"] > 1e-4
    assert large_key(g, "digits", p, regularizer(slim, g, {"ratio": 0.5, "s": None}, **sched), 0)[0] != k_slim
    assert regularizer(slim, g, {"s": None}, protocol=protocol_for("cifar10"), steps_per_epoch=782) == \
        {"method": "slimming", "l1_bn_scales": 1e-4}
    assert regularizer(mag, g, {"ratio": 0.5}) is None
    assert large_key(g, "digits", p, None, 0)[0] != k_slim
    assert large_key(g, "digits", p.with_epochs(3), None, 0)[0] != large_key(g, "digits", p, None, 0)[0]
    assert large_key(g, "digits", p, None, 1)[0] != large_key(g, "digits", p, None, 0)[0]
    # pinned: a change of the key's content must be deliberate (it orphans every cached model)
    assert large_key(g, "digits", p, None, 0)[0] == PINNED_PLAIN_KEY


PINNED_PLAIN_KEY = "a2912bb6b5b73be5"


def test_run_names():
    assert run_name("vgg19", 1.0, "cifar10", "slimming", {"ratio": 0.7},
                    0) == "vgg19-cifar10-slimming-r0.7-s0"
    assert run_name("resnet56", 1.0, "cifar10", "l1-norm", {"config": "B", "ratio": None}, 1) == \
        "resnet56-cifar10-l1-norm-cB-s1"
    assert run_name("vgg11", 0.25, "digits", "uniform", {"ratio": 0.5, "sparsity": True}, 0) == \
        "vgg11-x0.25-digits-uniform-sparse-r0.5-s0"


def test_run_names_tell_settings_apart():
    """What else differs from the defaults follows the documented prefix, so other settings never overwrite
    each other's files and `<model>-<dataset>-<method>-*` globs still find every run."""
    def name(**kw):
        params = {"ratio": 0.7, **kw.pop("params", {})}
        return run_name("vgg19", 1.0, "cifar10", "slimming", params, 0, **kw)

    assert name(epochs=160, input_size=32) == "vgg19-cifar10-slimming-r0.7-s0"  # the defaults: the short name
    assert name(epochs=40) == "vgg19-cifar10-slimming-r0.7-s0-40ep"
    assert name(input_size=24) == "vgg19-cifar10-slimming-r0.7-s0-24px"
    assert name(epochs=40, input_size=24,
                params={"s": 1e-3}) == "vgg19-cifar10-slimming-r0.7-s0-40ep-24px-s=0.001"
    assert name(params={"s": None}) == "vgg19-cifar10-slimming-r0.7-s0"
    assert run_name("vgg19", 1.0, "cifar10", "slimming", {"ratio": 0.7}, None, epochs=40) == \
        "vgg19-cifar10-slimming-r0.7-40ep"  # seed None: no seed part (evaluate's table folders)
    # digits defaults: 20 epochs, 16 px; methods that train nothing leave epochs out
    assert run_name("vgg11", 0.25, "digits", "slimming", {"ratio": 0.5}, 2, epochs=20, input_size=16) == \
        "vgg11-x0.25-digits-slimming-r0.5-s2"
    assert run_name("vgg11", 0.25, "digits", "uniform", {"ratio": 0.5}, 0, epochs=5, input_size=24) == \
        "vgg11-x0.25-digits-uniform-r0.5-s0-24px"
    # parameters the tag does not show, when not at their defaults; a seed parameter only when not the run's
    assert run_name("resnet56", 1.0, "cifar10", "l1-norm", {"ratio": 0.3, "skip": [16, 20]}, 1) == \
        "resnet56-cifar10-l1-norm-r0.3-s1-skip=16,20"
    assert run_name("resnet56", 1.0, "cifar10", "l1-norm", {"ratio": 0.3, "skip": ()}, 1) == \
        "resnet56-cifar10-l1-norm-r0.3-s1"
    thinet = {"ratio": 0.3, "samples": 1000, "images": 64, "ridge": 1e-3}
    assert run_name("vgg16", 1.0, "cifar10", "thinet", {**thinet, "seed": 1},
                    1) == "vgg16-cifar10-thinet-r0.3-s1"
    assert run_name("vgg16", 1.0, "cifar10", "thinet", {**thinet, "samples": 200, "seed": 3}, 1) == \
        "vgg16-cifar10-thinet-r0.3-s1-samples=200-seed=3"


def test_other_epochs_write_another_file(tmp_path):
    kw = {"dataset": "digits", "out_dir": tmp_path / "out", "store_root": tmp_path / "store", **QUIET}
    one = discover("slimming", ratio=0.5, width=0.125, epochs=1, **kw)
    two = discover("slimming", ratio=0.5, width=0.125, epochs=2, **kw)
    assert (one.path.name, two.path.name) == ("vgg11-x0.125-digits-slimming-r0.5-s0-1ep.json",
                                              "vgg11-x0.125-digits-slimming-r0.5-s0-2ep.json")
    assert load_genome(one.path).provenance["pruned_from"]["large_model"]["epochs"] == 1  # not overwritten


@pytest.mark.parametrize("argv, message", [
    (["discover", "--method", "slimmming"], "unknown method 'slimmming'"),
    (["discover", "--method", "slimming", "--model", "vgg17"], "unknown model 'vgg17'"),
    (["discover", "--method", "slimming", "--ratio", "1.5"], "must be in (0, 1)"),
    (["discover", "--method", "magnitude", "--ratio", "0"], "must be in (0, 1)"),
    (["discover", "--method", "sss", "--model", "vgg16"], "does not apply to vgg"),
    (["discover", "--method", "l1-norm", "--model", "densenet40"], "does not apply to densenet"),
    (["discover", "--method", "l1-norm", "--model", "vgg11", "--config", "A"], "no config 'A'"),
    (["discover", "--method", "slimming", "--config", "A"], "has no parameter 'config'"),
    (["discover", "--method", "slimming", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["discover", "--method", "l1-norm", "--skip", "a,b"], "--skip takes"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path), "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("prune-nas: error:") and "\n" not in err
    assert not any(tmp_path.iterdir())  # failed before training or writing anything


def test_cli_prints_the_path_and_the_width_table(capsys, tmp_path):
    assert main(["discover", "--method", "uniform", "--dataset", "synthetic", "--ratio", "0.25", "--out",
                 str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "width group" in out and "conv8" in out and "genome: " in out
    assert "params 579.10K -> " in out and "FLOPs" in out
    assert main(["discover", "--method", "uniform", "--sparsity", "--ratio", "0.5", "--dataset", "synthetic",
                 "--out", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["masks"].endswith(".masks.npz") and info["reduction"]["params"] > 0.4


def test_methods_command(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("l1-norm", "slimming", "magnitude", "uniform", "random"):
        assert name in out
    assert "automatic" in out and "predefined" in out and "cite: Li, Kadav" in out
    assert main(["methods", "--json"]) == 0
    data = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert data["slimming"]["target"] == "automatic"
    assert {p["name"]: p["default"] for p in data["slimming"]["params"]} == {"ratio": 0.5, "s": None}


def test_discover_and_evaluate_take_the_same_method_options():
    from prune_nas.cli import build_parser
    from prune_nas.cli.discover import method_args

    opts = ["--config", "B", "--skip", "16,20", "--s", "0.003", "--sparsity", "--like", "vgg16-a",
            "--param", "samples=200", "--param", "ridge=1e-3"]
    want = {"config": "B", "skip": (16, 20), "s": 0.003, "sparsity": True, "like": "vgg16-a", "samples": 200,
            "ridge": 1e-3}
    parser = build_parser()
    assert method_args(parser.parse_args(["discover", "--method", "l1-norm", *opts])) == want
    assert method_args(parser.parse_args(["evaluate", "--method", "l1-norm", *opts])) == want
    assert method_args(parser.parse_args(["evaluate"])) == {}
