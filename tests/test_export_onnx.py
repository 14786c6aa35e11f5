"""`prune-nas genome export G --onnx`: onnxruntime's logits match torch's on every registered model (narrow,
small inputs, to stay fast), with and without weights, and bad inputs are one-line errors."""

from __future__ import annotations

import pytest
import torch

from prune_nas.cli import main
from prune_nas.core.arch import MODELS
from prune_nas.core.builder import build
from prune_nas.core.export import export_onnx
from prune_nas.core.genome import base_genome, save_genome
from prune_nas.core.library import resolve_genome
from prune_nas.methods.baselines import uniform_sparsity_genome

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def small(model: str):
    """A narrow version of ``model`` at a small input (ImageNet models too)."""
    blocks = MODELS[model].default_blocks
    if blocks and len(blocks) == 4:  # ImageNet ResNets: one block per stage keeps every block kind
        blocks = (1, 1, 1, 1)
    # ImageNet VGGs pool to 7x7 before their classifier: the TorchScript exporter needs the last feature map
    # to be a multiple of 7, so they keep 224 px.
    size = 16 if MODELS[model].input_size != 224 else 224 if model.startswith("vgg") else 32
    return base_genome(model, width_mult=0.25, input_size=size, blocks=blocks)


# The ImageNet VGGs with the classic head carry a 25088 x 4096 Linear at any width (seconds to export): slow.
# Their family and their convolutions are covered by vgg16-imagenet-gap.
FC_HEADS = {"vgg11-imagenet", "vgg16-imagenet"}


@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.slow) if m in FC_HEADS else m
                                   for m in sorted(MODELS)])
def test_onnxruntime_matches_torch_on_every_model(model, tmp_path):
    genome = small(model)
    out = export_onnx(genome, tmp_path / f"{model}.onnx")
    assert out["max_rel_error"] < 1e-4, out
    assert (tmp_path / f"{model}.onnx").stat().st_size > 0


def test_pruned_and_sparse_genomes_export(tmp_path):
    for genome in (resolve_genome("resnet56-b"), uniform_sparsity_genome(small("vgg11"), 0.3)):
        out = export_onnx(genome, tmp_path / "m.onnx")
        assert out["max_rel_error"] < 1e-4, out


def test_weights_are_the_ones_exported(tmp_path):
    genome = small("resnet20")
    torch.manual_seed(123)
    trained = build(genome).eval()
    with torch.no_grad():  # BN statistics away from their initial values, so loading them matters
        for m in trained.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    export_onnx(genome, tmp_path / "m.onnx", weights=tmp_path / "w.pt")
    x = torch.randn(4, genome.in_channels, genome.input_size, genome.input_size)
    (got,) = ort.InferenceSession(str(tmp_path / "m.onnx")).run(["logits"], {"input": x.numpy()})
    with torch.no_grad():
        want = trained(x).numpy()
    assert abs(got - want).max() <= 1e-4 * max(abs(want).max(), 1.0)


def test_cli_export_onnx_and_errors(tmp_path, capsys):
    g = small("vgg11")
    save_genome(g, tmp_path / "g.json")
    assert main(["genome", "export", str(tmp_path / "g.json"), "--onnx", str(tmp_path / "g.onnx")]) == 0
    assert "onnxruntime matches torch" in capsys.readouterr().out
    assert (tmp_path / "g.onnx").exists()
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    torch.save(build(small("vgg13")).state_dict(), tmp_path / "other.pt")
    for argv, msg in [
        ([], "give --out"),
        (["--onnx", str(tmp_path / "x.onnx"), "--weights", str(tmp_path / "bad.pt")],
         "not a torch state dict"),
        (["--onnx", str(tmp_path / "x.onnx"), "--weights", str(tmp_path / "other.pt")], "does not fit"),
        (["--onnx", str(tmp_path / "x.onnx"), "--weights", str(tmp_path / "none.pt")], "not found"),
        (["--out", str(tmp_path / "x.json"), "--weights", str(tmp_path / "other.pt")], "goes with --onnx"),
    ]:
        assert main(["genome", "export", str(tmp_path / "g.json"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err


@pytest.mark.slow  # the torch.export-based exporter takes 5-20 s even on a ResNet-20
def test_dynamo_exporter(tmp_path):
    pytest.importorskip("onnxscript")
    out = export_onnx(small("resnet20"), tmp_path / "d.onnx", dynamo=True)
    assert out["exporter"] == "dynamo" and out["max_rel_error"] < 1e-4


def test_an_operator_the_exporter_cannot_translate_is_one_line(tmp_path, capsys):
    save_genome(base_genome("vgg11-imagenet", width_mult=0.125, input_size=32), tmp_path / "g.json")
    assert main(["genome", "export", str(tmp_path / "g.json"), "--onnx", str(tmp_path / "g.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "ONNX export failed" in err and "--dynamo" in err and len(err.splitlines()) == 1
