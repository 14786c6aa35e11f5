"""Import what other tools pruned: a pruned model (a state dict, or a whole pickled module when the user
trusts the file) becomes a genome of its reference model plus the weights it inherits.

Widths are read from the tensor shapes: for a generic model, the output channels of the first conv / linear
writing each width group; for a built-in model, of every conv whose output is a width group (so CIFAR ResNets
with zero-padding "option A" shortcuts, which Torch-Pruning cannot trace, import from their state dicts too).
The genome is then built and must load the state dict strictly, or the import fails with the first mismatch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prune_nas.core.errors import UserError

if TYPE_CHECKING:
    from prune_nas.core.genome import Genome


def load_pruned(path: str | os.PathLike, trust_pickle: bool = False) -> dict:
    """A state dict from a ``.pt`` file: tensors only (``weights_only=True``), unless ``trust_pickle`` lets a
    whole pickled module (arbitrary code) load."""
    import pickle

    import torch
    from torch import nn

    from prune_nas.core.userfiles import checked_file

    path = checked_file(path, "pruned model")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError:
        raise UserError(f"{path} holds more than tensors (a pickled module?); load it only if you trust it: "
                        "--trust-pickle") from None
    except Exception as e:  # noqa: BLE001 - a hostile or damaged file: one line
        raise UserError(f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} is not a state dict (a mapping of names to tensors) or a module")
    return {str(k): v for k, v in obj.items()}


def widths_from_state(base: Genome, state: Mapping[str, Any]) -> dict[str, int]:
    """Each width group's width as the pruned tensors show it."""
    widths: dict[str, int] = {}
    if base.family == "generic":
        from prune_nas.core.generic.analysis import analysis_of

        for g in analysis_of(base.spec).groups:
            key = f"{g.writers[0]}.weight"
            if key not in state:
                raise UserError(f"the pruned model has no {key!r}: not pruned from {base.model}?")
            widths[g.name] = int(state[key].shape[0])
        return widths
    from prune_nas.core.geometry import ops_of

    for op in ops_of(base):
        key = f"{op.name}.weight"
        if op.kind == "conv" and op.out_slot is not None and key in state:
            group = base.groups.slot_group[op.out_slot]
            widths.setdefault(group, int(state[key].shape[0]))
    missing = [g for g in base.groups.names if g not in widths]
    if missing:
        raise UserError(f"cannot read the width of {missing[0]} from the pruned model: not pruned from "
                        f"{base.model}?")
    return widths


def genome_from_state(base: Genome, state: Mapping[str, Any], source: str = "") -> Genome:
    """The genome of a pruned state dict of ``base``'s model, checked by loading it strictly."""
    from prune_nas.core.builder import build
    from prune_nas.core.errors import GenomeError

    try:
        genome = base.replace(widths=widths_from_state(base, state), name=None, sparsity=None,
                              provenance={"method": "imported", "source": source, "reference": base.model})
    except GenomeError as e:
        raise UserError(f"the pruned model does not fit {base.model}: {e}") from None
    model = build(genome)
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as e:
        first = [line.strip() for line in str(e).splitlines() if line.strip()][1:2] or [str(e)]
        raise UserError(f"the pruned model does not load into the genome built from {base.model}: "
                        f"{first[0][:300]}") from None
    return genome
