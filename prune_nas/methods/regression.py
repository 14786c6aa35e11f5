"""Regression-based feature reconstruction (He, Zhang & Sun, ICCV 2017, "channel pruning").

For each prunable width group (see ``_activations.links``), on sampled (image, position, output channel) rows
of the consumer layer with per-input-channel contributions ``x_c``, solve the LASSO

    min_beta ||y - sum_c beta_c x_c||^2 + alpha |beta|_1

with scikit-learn's ``Lasso`` down a warm-started path (alpha decreasing geometrically from the value where
every beta is zero, as ``lasso_path`` does), stopping at the first alpha where more than the target number of
betas are non-zero; alpha is then bisected between that point and the one before it (at most the target)
until exactly the target remain. If no alpha gives exactly the target (ties, channels that contribute
nothing), the channels non-zero at the larger alpha are kept and the rest are filled by ``|beta|`` at the
smaller alpha, then by contribution energy. The consumer's
weights on the kept channels are then refitted by least squares (``np.linalg.lstsq``) to reconstruct the
original model's output at sampled positions, all output channels at once.

Target widths are predefined: a uniform ``ratio`` of channels removed per prunable layer, or the named config
``vgg16-5x`` (He et al.'s VGG-16 widths; see ``prune_nas.core.library``).
"""

from __future__ import annotations

import warnings

import numpy as np

from prune_nas.methods._activations import COMMON_PARAMS, LayerSample, ReconstructionMethod, ridge_lstsq
from prune_nas.methods._base import Param, register

CONFIGS = {"vgg16-5x": "vgg16-5x"}
BISECTIONS = 30
MAX_ITER, TOL = 5000, 1e-5


def _lasso(Z: np.ndarray, y: np.ndarray, alpha: float, warm: np.ndarray) -> np.ndarray:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    model = Lasso(alpha=alpha, fit_intercept=False, max_iter=MAX_ITER, tol=TOL, warm_start=True)
    model.coef_ = warm.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(Z, y).coef_


def lasso_select(Z: np.ndarray, y: np.ndarray, keep: int, n_alphas: int = 50) -> np.ndarray:
    """Indices (sorted) of the ``keep`` channels LASSO keeps; see the module docstring for ties.

    >>> rng = np.random.default_rng(0)
    >>> Z = rng.normal(size=(200, 6)); Z[:, [1, 4]] *= 0.01
    >>> lasso_select(Z, Z.sum(1), 4).tolist()
    [0, 2, 3, 5]
    """
    C = Z.shape[1]
    if keep >= C:
        return np.arange(C)
    scale = float(np.sqrt((y ** 2).mean())) or 1.0  # the problem is scale-free; this keeps alpha near 1
    Z, y = Z / scale, y / scale
    alpha_max = float(np.abs(Z.T @ y).max()) / len(y)  # the smallest alpha at which every beta is zero
    hi, hi_beta = alpha_max, np.zeros(C)
    if alpha_max == 0.0:
        return np.sort(_fill([], hi_beta, Z, keep))
    for alpha in alpha_max * np.logspace(0, -4, n_alphas)[1:]:  # down the path, warm-started
        beta = _lasso(Z, y, alpha, hi_beta)
        n = int((beta != 0).sum())
        if n == keep:
            return np.sort(np.nonzero(beta)[0])
        if n > keep:
            lo, lo_beta = alpha, beta
            break
        hi, hi_beta = alpha, beta
    else:  # even a tiny alpha leaves fewer than `keep` channels (e.g. channels that contribute nothing)
        return np.sort(_fill(np.nonzero(hi_beta)[0].tolist(), hi_beta, Z, keep))
    for _ in range(BISECTIONS):
        mid = float(np.sqrt(lo * hi))
        beta = _lasso(Z, y, mid, hi_beta)
        n = int((beta != 0).sum())
        if n == keep:
            return np.sort(np.nonzero(beta)[0])
        if n < keep:
            hi, hi_beta = mid, beta
        else:
            lo, lo_beta = mid, beta
    return np.sort(_fill(np.nonzero(hi_beta)[0].tolist(), lo_beta, Z, keep))


def _fill(chosen: list[int], beta: np.ndarray, Z: np.ndarray, keep: int) -> np.ndarray:
    """``chosen`` topped up to ``keep`` channels by |beta|, then by contribution energy."""
    rest = [c for c in range(Z.shape[1]) if c not in set(chosen)]
    energy = (Z ** 2).sum(0)
    rest.sort(key=lambda c: (-abs(beta[c]), -energy[c], c))
    return np.array(chosen + rest[: keep - len(chosen)], dtype=int)


def lstsq_refit(sample: LayerSample, kept: np.ndarray, ridge: float) -> np.ndarray:
    """Least-squares weights of the consumer on the kept channels (all outputs at once); the rest zero."""
    m, window = len(sample.patches), sample.W.shape[2]
    A = sample.patches[:, kept].reshape(m, -1)
    x0 = sample.W[:, kept].reshape(len(sample.W), -1).T  # (kept * window, outputs)
    W = np.zeros_like(sample.W)
    W[:, kept] = ridge_lstsq(A, sample.Y, x0, ridge).T.reshape(len(sample.W), len(kept), window)
    return W


def regression_select(sample: LayerSample, keep: int, ridge: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    kept = lasso_select(sample.Z, sample.y, keep)
    return kept, lstsq_refit(sample, kept, ridge)


@register
class Regression(ReconstructionMethod):
    name = "regression"
    summary = "LASSO channel selection reconstructing the next layer's output, then a least-squares refit"
    citation = "He, Zhang & Sun, Channel Pruning for Accelerating Very Deep Neural Networks, ICCV 2017"
    configs = CONFIGS
    params = COMMON_PARAMS[:1] + (
        Param("config", None, "named widths instead of a ratio: " + ", ".join(CONFIGS)),
        Param("positions", None, "sampled (image, position) pairs for the refit (default: max(samples, "
                                 "2 x unknowns per output), capped by what the images hold)"),
    ) + COMMON_PARAMS[1:]

    def selector(self, ridge=1e-3, **_):
        return lambda sample, keep: regression_select(sample, keep, ridge)

    def refit_positions(self, samples, positions=None, **_):
        return lambda k, window: int(positions) if positions else max(samples, 2 * k * window)
