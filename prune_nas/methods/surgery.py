"""Channel surgery: from a large genome, its weights and the channels to keep, the small genome and its
inherited weights.

Everything here is driven by the layer metadata every family declares (``Op.in_slots`` / ``Op.out_slot``,
``Slot.reads``), so one function serves every family and no method slices weights by hand.

Kept channels are given per *width group* (coupled slots share one index set):

* ``conv`` and ``stream`` groups: indices of the group's output channels in the large model;
* ``select`` groups: indices into the tensor the selection reads (the concatenation named by
  ``Slot.reads``), which must be channels the large model's selection already reads. For a base model
  (full selections) these are simply the BN channel positions.

A group absent from ``keep`` keeps all its channels (a selection: all it reads that its producers keep). The
small model's ``ChannelSelect.index`` buffers are rewritten so that it reads exactly the kept channels of the
(possibly narrower) small tensor.

>>> import torch
>>> from prune_nas import base_genome, build
>>> g = base_genome("vgg11", width_mult=0.125, input_size=16)
>>> small, state = shrink(g, build(g), {"conv1": [0, 3, 5]})
>>> small.widths["conv1"], tuple(state["features.conv1.weight"].shape)
(3, (3, 3, 3, 3))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from prune_nas.core.arch._base import Op

if TYPE_CHECKING:
    from torch import nn

    from prune_nas.core.genome import Genome

__all__ = [
    "bn_ops",
    "channel_ids",
    "consumers",
    "group_scores",
    "keep_largest",
    "producers",
    "shrink",
    "state_of",
]

_PER_OUT = ("weight", "bias", "running_mean", "running_var", "weight_mask")


def state_of(model: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached CPU state dict from a module or a state dict."""
    sd = model.state_dict() if hasattr(model, "state_dict") else model
    return {k: v.detach().cpu() for k, v in sd.items()}


def keep_largest(scores: Sequence[float] | np.ndarray, k: int) -> np.ndarray:
    """Ascending indices of the ``k`` largest scores (at least 1, at most all). Ties go to the lower index,
    so the choice is deterministic.

    >>> keep_largest([0.5, 2.0, 0.5, 1.0], 2).tolist()
    [1, 3]
    >>> keep_largest([1.0, 1.0, 1.0], 2).tolist()
    [0, 1]
    """
    s = np.asarray(scores, dtype=np.float64)
    k = int(min(max(k, 1), len(s)))
    order = np.lexsort((np.arange(len(s)), -s))  # by score descending, then index ascending
    return np.sort(order[:k])


def channel_ids(genome: Genome, model: nn.Module | Mapping[str, torch.Tensor], group: str) -> np.ndarray:
    """What ``shrink`` expects as indices for ``group``, position by position of the large model's channels:
    ``arange(width)`` for conv/stream groups; for a selection, the channels of the shared tensor it reads
    (its ``index`` buffer). A method that scores positions (e.g. BN scales) keeps ``channel_ids(...)[pos]``.
    """
    groups = genome.groups
    if groups.kind(group) != "select":
        return np.arange(genome.widths[group])
    (slot,) = groups.members[group]
    index = model.get_submodule(slot).index if hasattr(model, "get_submodule") else model[f"{slot}.index"]
    return index.detach().cpu().numpy().astype(np.int64)


def group_scores(genome: Genome, slot_scores: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-group importance from per-slot importance: coupled slots share one index set, so their scores
    add up (e.g. the stem and the first residual stream of a CIFAR ResNet)."""
    out: dict[str, np.ndarray] = {}
    for slot, s in slot_scores.items():
        g = genome.groups.slot_group[slot]
        s = np.asarray(s, dtype=np.float64)
        out[g] = out[g] + s if g in out else s.copy()
    return out


def producers(genome: Genome, group: str) -> list[Op]:
    """Conv / linear layers whose output channels belong to ``group``."""
    members = set(genome.groups.members[group])
    from prune_nas.core.geometry import ops_of

    return [op for op in ops_of(genome) if op.kind != "bn" and op.out_slot in members]


def consumers(genome: Genome, group: str) -> list[Op]:
    """Conv / linear layers that read the channels of ``group`` (directly, or through a selection's
    concatenation for conv groups of a DenseNet)."""
    from prune_nas.core.geometry import ops_of

    groups = genome.groups
    members = set(groups.members[group])
    readers = {s for s, slot in groups.slots.items() if slot.kind == "select" and members & set(slot.reads)}
    return [op for op in ops_of(genome) if op.kind != "bn" and (members | readers) & set(op.in_slots)]


def bn_ops(genome: Genome, group: str) -> list[Op]:
    """BatchNorm layers normalising the channels of ``group``."""
    from prune_nas.core.geometry import ops_of

    members = set(genome.groups.members[group])
    return [op for op in ops_of(genome) if op.kind == "bn" and op.out_slot in members]


# ---- the surgery -------------------------------------------------------------------------------------------
def shrink(genome: Genome, model: nn.Module | Mapping[str, torch.Tensor],
           keep: Mapping[str, Sequence[int]]) -> tuple[Genome, dict[str, torch.Tensor]]:
    """The pruned genome and the state dict of ``build(pruned)`` holding the large model's kept weights.

    ``keep`` maps width groups to the channels to keep (see the module docstring for select groups); indices
    are sorted and de-duplicated here. Raises ``ValueError`` for an unknown group, an empty or out-of-range
    index set, a selection of a channel that is pruned or that the large model does not read, or a sparse
    genome (masks are per weight of the large layer shapes: prune channels before sparsifying).

    The returned genome has no name and the large genome's provenance plus ``kept_channels``: the cleaned
    ``keep`` (group -> sorted ids), so the same slicing can be applied to other weights of the large model,
    e.g. its initialisation for a winning-ticket run (``prune_nas.design.ticket``); the caller names it.
    Exactness: with every group kept whole the small model computes exactly what the large one does.
    When a residual stream is narrowed, the kept channels are exact wherever shortcuts are convolutions
    (ImageNet ResNets, PreResNets); a CIFAR ResNet's zero-padding shortcut maps channel i of one stage to
    channel i of the next, which only stays exact if the kept sets line up.
    """
    if genome.sparsity is not None:
        raise ValueError("channel surgery needs a dense genome; prune channels before sparsifying")
    groups = genome.groups
    state = state_of(model)
    unknown = [g for g in keep if g not in groups.members]
    if unknown:
        raise ValueError(f"unknown width groups for {genome.model}: {unknown[:4]}")
    slot_w = genome.slot_widths()

    # Kept output channels of every conv/stream slot (large-model indices).
    kept: dict[str, np.ndarray] = {}
    for g in groups.names:
        if groups.kind(g) == "select":
            continue
        idx = _clean(keep[g], genome.widths[g], g) if g in keep else np.arange(genome.widths[g])
        for slot in groups.members[g]:
            kept[slot] = idx

    # Selections: BN positions kept (in the large selection) and the small model's index buffer.
    sel_pos: dict[str, np.ndarray] = {}
    sel_index: dict[str, torch.Tensor] = {}
    for slot, info in groups.slots.items():
        if info.kind != "select":
            continue
        large_index = state[f"{slot}.index"].numpy().astype(np.int64)
        tensor = sum(slot_w[r] for r in info.reads)
        g = groups.slot_group[slot]
        new_pos = _concat_map(info.reads, slot_w, kept)  # large channel -> small channel (or -1)
        if g in keep:
            want = _clean(keep[g], tensor, g)
        else:  # keeps what it reads, less what the producers prune
            want = large_index[new_pos[large_index] >= 0]
            if want.size == 0:
                raise ValueError(f"{g}: every channel it reads is pruned; give it a keep set")
        pos = np.flatnonzero(np.isin(large_index, want))
        if len(pos) != len(want):
            missing = sorted(set(want.tolist()) - set(large_index.tolist()))
            raise ValueError(f"{g}: channels {missing[:5]} are not read by the large model's selection")
        small_index = new_pos[large_index[pos]]
        if (small_index < 0).any():
            lost = large_index[pos][small_index < 0]
            raise ValueError(f"{g}: selects channels {lost[:5].tolist()} of a tensor whose producer prunes "
                             "them")
        sel_pos[slot] = pos
        sel_index[slot] = torch.as_tensor(small_index, dtype=torch.long)

    def out_positions(op: Op) -> np.ndarray | None:
        if op.out_slot is None:
            return None
        return sel_pos[op.out_slot] if op.out_slot in sel_pos else kept[op.out_slot]

    def in_positions(op: Op) -> np.ndarray | None:
        if not op.in_slots:
            return None
        if len(op.in_slots) == 1 and op.in_slots[0] in sel_pos:
            pos = sel_pos[op.in_slots[0]]
            channels = len(state[f"{op.in_slots[0]}.index"])
        else:
            offsets = np.cumsum([0] + [slot_w[s] for s in op.in_slots])
            pos = np.concatenate([offsets[i] + kept[s] for i, s in enumerate(op.in_slots)])
            channels = int(offsets[-1])
        per = op.cin // channels  # a Linear over a flattened c x h x w map reads h*w features per channel
        return (pos[:, None] * per + np.arange(per)[None, :]).reshape(-1) if per > 1 else pos

    new = dict(state)
    for op in _ops(genome):
        out_p, in_p = out_positions(op), in_positions(op)
        for key in _PER_OUT:
            full = f"{op.name}.{key}"
            if full not in state:
                continue
            t = state[full]
            if out_p is not None:
                t = t.index_select(0, torch.as_tensor(out_p, dtype=torch.long))
            if in_p is not None and key in ("weight", "weight_mask") and op.kind != "bn":
                t = t.index_select(1, torch.as_tensor(in_p, dtype=torch.long))
            new[full] = t.contiguous()
    for slot, idx in sel_index.items():
        new[f"{slot}.index"] = idx

    widths = {g: len((sel_pos if groups.kind(g) == "select" else kept)[groups.members[g][0]]) for g
              in groups.names}
    kept_ids = {g: np.unique(np.asarray(list(ids), dtype=np.int64)).tolist() for g, ids in keep.items()}
    small = genome.replace(widths=widths, name=None,
                           provenance={**genome.provenance, "kept_channels": kept_ids})
    _check_shapes(small, new)
    return small, new


def _clean(idx: Sequence[int], size: int, group: str) -> np.ndarray:
    arr = np.unique(np.asarray(list(idx), dtype=np.int64))
    if arr.size == 0:
        raise ValueError(f"{group}: cannot keep zero channels")
    if arr[0] < 0 or arr[-1] >= size:
        raise ValueError(f"{group}: channel indices must be in [0, {size}), got {arr[0]}..{arr[-1]}")
    return arr


def _concat_map(reads: tuple[str, ...], slot_w: Mapping[str, int],
                kept: Mapping[str, np.ndarray]) -> np.ndarray:
    """For the concatenation of ``reads``: large channel -> its channel in the small model (-1 if pruned)."""
    out, small = [], 0
    for r in reads:
        m = np.full(slot_w[r], -1, dtype=np.int64)
        m[kept[r]] = small + np.arange(len(kept[r]))
        out.append(m)
        small += len(kept[r])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _ops(genome: Genome) -> list[Op]:
    from prune_nas.core.geometry import ops_of

    return ops_of(genome)


def _check_shapes(small: Genome, state: Mapping[str, torch.Tensor]) -> None:
    """Every sliced tensor has the shape ``build(small)`` expects (checked from the layer geometry)."""
    for op in _ops(small):
        w = state.get(f"{op.name}.weight")
        if w is None:
            raise ValueError(f"no weights for layer {op.name!r} in the state dict")
        want = {"conv": (op.cout, op.cin, op.k, op.k), "linear": (op.cout, op.cin), "bn": (op.cout,)}[op.kind]
        if tuple(w.shape) != want:
            raise ValueError(f"{op.name}: sliced weight has shape {tuple(w.shape)}, the pruned layer needs "
                             f"{want}")
    sw = small.slot_widths()
    for slot, info in small.groups.slots.items():
        if info.kind == "select" and len(state[f"{slot}.index"]) != sw[slot]:
            raise ValueError(f"{slot}: index has {len(state[f'{slot}.index'])} entries, width is {sw[slot]}")
