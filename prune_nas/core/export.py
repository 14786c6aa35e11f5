"""A genome's model as an ONNX file, for deployment runtimes (``prune-nas genome export G --onnx m.onnx``).

The model is built from the genome (physically smaller, masks applied to the weights of sparse genomes),
optionally loaded with a state dict, put in eval mode and exported with a dynamic batch dimension (input
``input``, output ``logits``). Two exporters exist in torch 2.14: the TorchScript-based one
(``torch.onnx.export(..., dynamo=False)``, deprecated but fast and dependency-free; the default here) and the
``torch.export``-based one (``dynamo=True``, torch's default, which needs ``onnxscript``). Every export is
checked: onnxruntime runs the file on a batch of two random inputs and its logits are compared with torch's.
Needs the ``onnx`` extra (``pip install 'prune-nas[onnx]'``).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from prune_nas.core.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from prune_nas.core.genome import Genome

LEGACY_OPSET = 17
CHECK_BATCH = 2


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a ``.pt`` state dict into ``model``, keeping the genome's masks (masked weights stay zero)."""
    import torch

    from prune_nas.core.userfiles import read_state_dict

    state = read_state_dict(path, "weights")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        lines = str(e).strip().splitlines()
        first = lines[1].strip() if len(lines) > 1 else lines[0]
        raise UserError(f"{path} does not fit the genome: {first}") from None
    missing = [k for k in missing if not k.endswith("weight_mask")]  # masks come from the genome
    if missing or unexpected:
        raise UserError(f"{path} does not fit the genome: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "weight_mask"):
                m.weight.mul_(m.weight_mask)


def export_onnx(genome: Genome, path: str | Path, *, weights: str | Path | None = None,
                dynamo: bool = False) -> dict:
    """Write ``genome``'s model to ``path`` as ONNX and check it with onnxruntime; returns what was written
    (path, exporter, opset, the largest difference of the logits relative to their largest magnitude)."""
    import torch

    from prune_nas.core.atomic import atomic_write
    from prune_nas.core.builder import build

    ort = _onnxruntime()
    torch.manual_seed(0)
    model = build(genome).eval()
    if weights is not None:
        load_weights(model, weights)
    shape = (genome.in_channels, genome.input_size, genome.input_size)
    example = torch.randn(CHECK_BATCH, *shape)
    path = Path(path)
    with warnings.catch_warnings(), _export_errors(dynamo):
        # The TorchScript exporter's deprecation notice and constant-folding notes are not the user's concern.
        warnings.simplefilter("ignore")
        if dynamo:
            program = _dynamo_export(model, example)
            atomic_write(path, lambda tmp: program.save(tmp), ".onnx")
            opset = program.model.opset_imports.get("", None)
        else:
            atomic_write(path, lambda tmp: torch.onnx.export(
                model, (example,), tmp, dynamo=False, input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=LEGACY_OPSET),
                ".onnx")
            opset = LEGACY_OPSET
    x = torch.randn(CHECK_BATCH + 1, *shape)  # another batch size: the batch dimension must be dynamic
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"input": x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    scale = max(float(abs(want).max()), 1e-6)
    return {"path": str(path), "exporter": "dynamo" if dynamo else "torchscript", "opset": opset,
            "max_rel_error": float(abs(got - want).max()) / scale, "input": [None, *shape]}


@contextlib.contextmanager
def _export_errors(dynamo: bool):
    """An operator the exporter cannot translate (e.g. the TorchScript exporter's adaptive pooling to a size
    that does not divide the input) is one line for the user, not a graph dump."""
    import torch

    try:
        yield
    except torch.onnx.errors.OnnxExporterError as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        hint = "" if dynamo else "; try --dynamo (torch.export-based exporter)"
        raise UserError(f"ONNX export failed: {first}{hint}") from None


def _onnxruntime():
    try:
        import onnx  # noqa: F401  (the exporters need it)
        import onnxruntime
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxruntime: pip install 'prune-nas[onnx]'") from None
    return onnxruntime


def _dynamo_export(model, example):
    import torch

    try:
        import onnxscript  # noqa: F401
    except ImportError:
        raise UserError("the torch.export-based exporter (--dynamo) needs onnxscript: "
                        "pip install 'prune-nas[onnx]'") from None
    batch = torch.export.Dim("batch", min=1)
    return torch.onnx.export(model, (example,), dynamo=True, input_names=["input"], output_names=["logits"],
                             dynamic_shapes=({0: batch},), verbose=False)
