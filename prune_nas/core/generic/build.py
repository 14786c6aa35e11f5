"""Generic genome -> ``nn.Module``: the reference model built fresh with its own initialisation, narrowed to
the genome's widths with Torch-Pruning, and re-initialised by the model's own ``init_weights`` /
``_init_weights`` / ``reset_parameters`` when it has one (a from-scratch architecture, not trained weights).

The narrowed model keeps the reference model's module paths, so a state dict pruned by Torch-Pruning (or by
a method here) from the same reference loads into it strictly. Without an init method of the model's own, the
kept weights are the first channels of the fresh initialisation (same distribution, the base layer's scale).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from prune_nas.core.errors import GenomeError
from prune_nas.core.generic.analysis import analysis_of, dependency_graph, writers_of

if TYPE_CHECKING:
    from torch import nn

    from prune_nas.core.arch import ModelSpec


def narrow(net: nn.Module, spec: ModelSpec, widths: Mapping[str, int],
           keep: Mapping[str, Sequence[int]] | None = None, device: str = "cpu") -> nn.Module:
    """Narrow ``net`` (the reference model of ``spec``, any weights) in place to ``widths`` (group -> width).

    ``keep``: group -> the channel indices to keep (of the group's channels in ``net``, in the order
    Torch-Pruning numbers them); groups not in it keep their first ``width`` channels."""
    import torch
    from torch import nn

    analysis = analysis_of(spec)
    by_writers = {g.writers: g for g in analysis.groups}
    module_name = {m: n for n, m in net.named_modules()}
    order = {n: i for i, n in enumerate(module_name.values())}
    named = dict(net.named_modules())
    example = torch.zeros(1, spec.in_channels, spec.input_size, spec.input_size, device=device)
    was_training = net.training
    net.eval()
    dg = dependency_graph(net, example)
    layer_types = [nn.modules.conv._ConvNd, nn.Linear]
    todo = []
    for group in dg.get_all_groups(ignored_layers=[named[n] for n in analysis.fixed],
                                   root_module_types=layer_types):
        info = by_writers.get(writers_of(group, dg, module_name, order))
        if info is None:
            continue  # a group the analysis fixed
        root = group[0].dep.target.module
        current = int(dg.get_out_channels(root))  # the base width, or less for a model narrowed before
        width = int(widths[info.name])
        kept = list(keep[info.name]) if keep is not None and info.name in keep else list(range(width))
        if len(kept) != width or len(set(kept)) != width or not all(0 <= k < current for k in kept):
            raise GenomeError(f"widths.{info.name}", f"keeps {len(kept)} of {current} channels, the genome "
                                                     f"says {width}")
        drop = sorted(set(range(current)) - set(kept))
        if drop:
            todo.append((root, drop))
    for root, drop in todo:
        group = dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels, drop)
        group.prune()
    net.train(was_training)
    return net


def reinit(net: nn.Module) -> bool:
    """Run the model's own initialisation if it has one (returns whether it did)."""
    for attr in ("init_weights", "_init_weights", "reset_parameters"):
        fn = getattr(net, attr, None)
        if callable(fn):
            try:
                fn()
                return True
            except TypeError:
                continue  # takes arguments (a per-module init helper): not a whole-model init
    return False


def fresh(spec: ModelSpec, device: str = "cpu") -> nn.Module:
    """The reference model, built fresh with its own initialisation on ``device``."""
    import torch

    from prune_nas.core.generic.refs import instantiate

    with torch.device(device):
        return instantiate(spec.name, spec.config["kwargs"], spec.num_classes)


def narrowed(spec: ModelSpec, widths: Mapping[str, int], device: str = "cpu") -> nn.Module:
    """The reference model built fresh on ``device`` and narrowed to ``widths``, re-initialised."""
    net = fresh(spec, device)
    narrow(net, spec, widths, device=device)
    if device != "meta":
        reinit(net)
    return net
