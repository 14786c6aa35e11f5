"""Non-structured magnitude pruning (Han, Pool, Tran & Dally, NIPS 2015): one global threshold over all conv
weights.

Exactly ``round(ratio * N)`` of the N conv weights of the model are pruned (``ratio`` is the requested
sparsity): all conv weights are ordered by ``|w|`` and the smallest go. Ties are broken deterministically by
position: layers in layout order, then the weight's flat (C-order) index within its layer, earlier first.
A layer must keep at least one weight: if the cut would empty a layer, its largest weight stays and the next
weight in the global order is pruned instead, so the sparsity stays exact (``notes`` says which layers).
Linear layers (classifier heads) are not pruned, as in the paper's CIFAR and ImageNet conv-only setting.

The result is a sparse genome with the same widths: per-layer ``density``, per-stage ``kernel_keep`` (for each
of the nine 3x3 positions, the fraction of the stage's 3x3 kernels that keep it, pooled over every 3x3 conv of
the stage), and the exact masks (``PruneResult.masks``; ``discover`` writes them to the ``.masks.npz`` file
the genome names). The inherited weights are the trained weights times the mask; scratch training reuses the
mask with a fresh init (``prune_nas.core.masks.apply_masks``).
"""

from __future__ import annotations

import numpy as np
import torch

from prune_nas.core.genome import Sparsity
from prune_nas.methods._base import Method, Param, PruneResult, check_ratio, register
from prune_nas.methods.surgery import state_of


def conv_layers(genome):
    from prune_nas.core.geometry import ops_of

    return [op for op in ops_of(genome) if op.kind == "conv"]


def global_masks(weights: dict[str, np.ndarray], ratio: float) -> tuple[dict[str, np.ndarray], list[str]]:
    """Boolean keep masks pruning exactly ``round(ratio * N)`` of all weights by global magnitude (see the
    module doc for ties and the one-weight floor). ``weights`` is ordered (layout order).

    >>> m, _ = global_masks({"a": np.array([3.0, -1.0]), "b": np.array([1.0, 2.0])}, 0.5)
    >>> m["a"].tolist(), m["b"].tolist()
    ([True, False], [False, True])
    """
    names = list(weights)
    flat = [np.abs(np.asarray(weights[n], dtype=np.float64)).reshape(-1) for n in names]
    sizes = np.array([f.size for f in flat])
    values = np.concatenate(flat)
    layer = np.repeat(np.arange(len(names)), sizes)
    total = values.size
    n_prune = round(ratio * total)
    if n_prune > total - len(names):
        raise ValueError(f"cannot prune {n_prune} of {total} weights and keep one per layer")
    order = np.argsort(values, kind="stable")  # ascending |w|; stable keeps layout order among ties
    pruned = np.zeros(total, dtype=bool)
    pruned[order[:n_prune]] = True
    notes = []
    kept_per_layer = np.bincount(layer[~pruned], minlength=len(names))
    empty = np.flatnonzero(kept_per_layer == 0)
    if empty.size:
        for li in empty:
            within = order[layer[order] == li]
            pruned[within[-1]] = False  # the layer's largest weight: the last of it in the global order
            kept_per_layer[li] = 1
            notes.append(f"{names[li]}: kept 1 of {sizes[li]} weights (the threshold would empty the layer)")
        # prune as many more, next in the global order, from layers that keep more than one weight
        extra, cursor = len(empty), n_prune
        while extra:
            idx = order[cursor]
            cursor += 1
            if pruned[idx] or kept_per_layer[layer[idx]] <= 1:
                continue
            pruned[idx] = True
            kept_per_layer[layer[idx]] -= 1
            extra -= 1
    out, start = {}, 0
    for n, size in zip(names, sizes, strict=True):
        out[n] = ~pruned[start:start + size].reshape(np.shape(weights[n]))
        start += size
    return out, notes


def kernel_keep(genome, masks: dict[str, np.ndarray]) -> dict[str, list]:
    """Per stage (as a string), the 3x3 keep probability of each kernel position over all 3x3 kernels of the
    stage's 3x3 convs."""
    acc: dict[int, list] = {}
    for op in conv_layers(genome):
        if op.k != 3 or op.name not in masks:
            continue
        m = masks[op.name].reshape(-1, 3, 3)
        a = acc.setdefault(op.stage, [np.zeros((3, 3)), 0])
        a[0] += m.sum(0)
        a[1] += m.shape[0]
    return {str(s): np.round(a[0] / a[1], 6).tolist() for s, a in sorted(acc.items())}


def densities(masks: dict[str, np.ndarray]) -> dict[str, float]:
    return {n: float(m.mean()) for n, m in masks.items()}


def masked_state(genome, model, ratio: float) -> tuple[dict[str, np.ndarray], dict, list[str]]:
    """One global magnitude threshold over every conv weight of ``model`` (the genome's conv layers):
    the masks, the state dict with the pruned weights zeroed (any old masks dropped), and notes saying how
    many weights went. Shared by the built-in and the generic-model method."""
    state = state_of(model)
    weights = {op.name: state[f"{op.name}.weight"].numpy() for op in conv_layers(genome)}
    masks, notes = global_masks(weights, ratio)
    new_state = {k: v for k, v in state.items() if not k.endswith("weight_mask")}
    for n, m in masks.items():
        w = new_state[f"{n}.weight"]
        new_state[f"{n}.weight"] = w * torch.as_tensor(m, dtype=w.dtype)
    total = sum(m.size for m in masks.values())
    pruned = total - sum(int(m.sum()) for m in masks.values())
    notes.insert(0, f"pruned {pruned} of {total} conv weights ({pruned / total:.2%})")
    return masks, new_state, notes


@register
class Magnitude(Method):
    name = "magnitude"
    summary = "non-structured: one global magnitude threshold over all conv weights; exact mask file, " \
              "per-layer densities and per-stage 3x3 kernel keep maps"
    citation = ("Han, Pool, Tran & Dally, Learning both Weights and Connections for Efficient Neural "
                "Networks, NIPS 2015")
    target = "automatic"
    structured = False
    families = ("vgg", "resnet", "preresnet", "densenet")
    params = (Param("ratio", 0.5,
                    "sparsity: fraction of all conv weights removed (exactly round(ratio * N))"),)

    def check(self, genome, ratio=0.5, **kwargs) -> None:
        super().check(genome)
        check_ratio(0.5 if ratio is None else ratio)

    def prune(self, genome, model, *, ratio=0.5, **_) -> PruneResult:
        ratio = 0.5 if ratio is None else float(ratio)
        self.check(genome, ratio=ratio)
        if model is None:
            raise ValueError("magnitude pruning needs trained weights")
        if genome.sparsity is not None:
            raise ValueError("magnitude pruning starts from a dense genome")
        masks, new_state, notes = masked_state(genome, model, ratio)
        sparsity = Sparsity(density=densities(masks), kernel_keep=kernel_keep(genome, masks))
        provenance = {**genome.provenance, "method": self.name, "params": {"ratio": ratio}}
        small = genome.replace(name=f"{genome.name or genome.model}-{self.name}", sparsity=sparsity,
                               provenance=provenance)
        return PruneResult(small, new_state, masks=masks, notes=notes)
