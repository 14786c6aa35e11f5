"""Small modules shared by the families."""

from __future__ import annotations

import torch
from torch import nn


class ChannelSelect(nn.Module):
    """Reads ``len(index)`` channels of a shared tensor (pre-activation ResNets, DenseNets).

    The index is a buffer, so inherited weights carry which channels a pruning method kept; a model built
    from a genome alone reads evenly spaced channels (at random init every choice is equivalent for a
    residual stream; for a DenseNet concatenation it spreads the reads over all earlier layers).
    """

    def __init__(self, channels: int, kept: int):
        super().__init__()
        self.channels = channels
        self.register_buffer("index", evenly_spaced(kept, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.index.numel() == self.channels:
            return x
        return x.index_select(1, self.index)

    def extra_repr(self) -> str:
        return f"{self.index.numel()} of {self.channels}"


def evenly_spaced(kept: int, channels: int) -> torch.Tensor:
    if kept >= channels:
        return torch.arange(channels)
    return torch.linspace(0, channels - 1, kept).round().long()


def init_weights(model: nn.Module, bn_scale: float = 1.0) -> None:
    """He-normal (fan-out) convs, BN at (``bn_scale``, 0), linear N(0, 0.01), as the paper's reference code.

    The reference's BN scale depends on the model (``ModelSpec.bn_init``): 0.5 in its Network Slimming models
    and its L1-norm VGG-16, 1 in the others."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.constant_(m.weight, bn_scale)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
