"""ThiNet (Luo, Wu & Lin, ICCV 2017): prune a layer's channels by how little the *next* layer needs them.

For each prunable width group (a conv's output channels read by one conv or linear layer, see
``_activations.links``), on sampled (image, output position, output channel) rows of the consumer, each input
channel contributes ``x_c`` (its kernel window times its input). ThiNet greedily builds the set ``T`` of
channels to remove, each time adding the channel that keeps ``||r + sum_{c in T} x_c||^2`` smallest, until
``|T|`` is the number to remove; the kept channels' weights are then rescaled by least squares (one factor per
channel, ``np.linalg.lstsq``), ThiNet's last step. ``r`` is the gap between the original model's output and
the current one's, zero for the first pruned layer, where the criterion is exactly ThiNet's
``||sum_T x_c||^2``; later layers see the already pruned model and so also correct the error upstream (ThiNet
fine-tunes between layers instead).

Target widths are predefined: a uniform ``ratio`` of channels removed per prunable layer, or a named config
(``vgg-conv``, ``vgg-gap``, ``vgg-tiny``, ``resnet50-30``, ``resnet50-50``, ``resnet50-70``; see
``prune_nas.core.library``). On a VGG a ratio leaves the last stage's convs (conv11-13 of VGG-16) unpruned,
as ThiNet-Conv does (Luo et al. prune conv1_1 to conv4_3: the last stage holds little of the FLOPs).
"""

from __future__ import annotations

import numpy as np

from prune_nas.methods._activations import COMMON_PARAMS, LayerSample, ReconstructionMethod, ridge_lstsq
from prune_nas.methods._base import Param, register

CONFIGS = {"vgg-conv": "thinet-vgg-conv", "vgg-gap": "thinet-vgg-gap", "vgg-tiny": "thinet-vgg-tiny",
           "resnet50-30": "thinet-resnet50-30", "resnet50-50": "thinet-resnet50-50",
           "resnet50-70": "thinet-resnet50-70"}


def greedy_remove(Z: np.ndarray, n_remove: int, offset: np.ndarray | None = None) -> list[int]:
    """ThiNet's greedy step: channels (columns of ``Z``) to remove, in the order chosen, each minimising
    ``||offset + sum of the removed columns||^2``.

    >>> Z = np.array([[1.0, 0.0, 2.0], [1.0, 0.0, -1.0]])
    >>> greedy_remove(Z, 2)
    [1, 0]
    """
    s = np.zeros(Z.shape[0]) if offset is None else offset.astype(float).copy()
    sq = (Z ** 2).sum(0)
    available = np.ones(Z.shape[1], dtype=bool)
    removed: list[int] = []
    for _ in range(n_remove):
        cost = 2.0 * (s @ Z) + sq  # ||s + z_c||^2 - ||s||^2
        cost[~available] = np.inf
        c = int(np.argmin(cost))
        removed.append(c)
        available[c] = False
        s += Z[:, c]
    return removed


def scale_refit(sample: LayerSample, kept: np.ndarray, ridge: float) -> np.ndarray:
    """ThiNet's refit: one least-squares factor per kept channel so that ``sum_c w_c x_c`` matches the target;
    returns the consumer's new weight (removed channels zero)."""
    w = ridge_lstsq(sample.Z[:, kept], sample.y, np.ones(len(kept)), ridge)
    W = np.zeros_like(sample.W)
    W[:, kept] = sample.W[:, kept] * w[None, :, None]
    return W


def thinet_select(sample: LayerSample, keep: int, ridge: float = 1e-3, refit: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Kept channels and the consumer's new weight for one layer."""
    offset = sample.y - sample.Z.sum(1)  # target minus the current output
    removed = set(greedy_remove(sample.Z, sample.channels - keep, offset))
    kept = np.array([c for c in range(sample.channels) if c not in removed])
    if refit:
        return kept, scale_refit(sample, kept, ridge)
    W = np.zeros_like(sample.W)
    W[:, kept] = sample.W[:, kept]
    return kept, W


@register
class ThiNet(ReconstructionMethod):
    name = "thinet"
    summary = ("greedy channel selection minimising the next layer's reconstruction error, then a "
               "least-squares rescale of the kept channels")
    citation = ("Luo, Wu & Lin, ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression, "
                "ICCV 2017")
    configs = CONFIGS
    params = COMMON_PARAMS[:1] + (
        Param("config", None, "named widths instead of a ratio: " + ", ".join(CONFIGS)),
    ) + COMMON_PARAMS[1:]

    def targets(self, genome, ratio, config):
        keep, notes = super().targets(genome, ratio, config)
        if config is None and genome.family == "vgg":
            groups = genome.groups
            last = groups.n_stages
            keep = {g: w for g, w in keep.items() if groups.stage(g) != last}
        return keep, notes

    def selector(self, ridge=1e-3, **_):
        return lambda sample, keep: thinet_select(sample, keep, ridge)
