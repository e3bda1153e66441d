"""The two-sample MMD estimators of Gretton et al. (2012), JMLR 13:723-773.

``x`` has shape ``(..., m, d)``, ``y`` shape ``(..., n, d)``; ``gamma`` is an inverse bandwidth
or several (a multi-scale kernel, :func:`~scvi_mmd.mmd.gaussian_kernel`); each returns ``(...)``.
"""

from __future__ import annotations

import torch

from ._kernels import GammaLike, _paired_kernel, gaussian_kernel

__all__ = ["mmd_exact", "mmd_unbiased", "mmd_linear"]


def mmd_exact(x: torch.Tensor, y: torch.Tensor, gamma: GammaLike = 1.0) -> torch.Tensor:
    """MMD^2 as the biased V-statistic, the square of eq. (5) of Gretton et al. (2012).

    ``mean(K_xx) + mean(K_yy) - 2 mean(K_xy)``, diagonals included. Bias: upwards by
    ``O(1/m + 1/n)``, so ``>= 0`` and 0 only for identical samples. Cost: ``O((m + n)^2 d)``
    time, ``O((m + n)^2)`` memory.
    """
    k_xx = gaussian_kernel(x, x, gamma).mean((-1, -2))
    k_yy = gaussian_kernel(y, y, gamma).mean((-1, -2))
    k_xy = gaussian_kernel(x, y, gamma).mean((-1, -2))
    return k_xx + k_yy - 2.0 * k_xy


def mmd_unbiased(x: torch.Tensor, y: torch.Tensor, gamma: GammaLike = 1.0) -> torch.Tensor:
    """MMD^2 as the unbiased U-statistic, eq. (3) of Gretton et al. (2012).

    The within-sample means leave out ``i = j``. Bias: none, so it can be negative and has no
    ``O(1/m + 1/n)`` floor (no pull towards a small within-sample spread). Cost as
    :func:`mmd_exact`. Needs ``m, n >= 2``.
    """
    m, n = x.shape[-2], y.shape[-2]
    if m < 2 or n < 2:
        raise ValueError(f"The unbiased MMD needs >= 2 cells per sample, got {m} and {n}.")
    # k(x, x) = 1 exactly (the kernel's diagonal distances are exact zeros)
    k_xx = (gaussian_kernel(x, x, gamma).sum((-1, -2)) - m) / (m * (m - 1))
    k_yy = (gaussian_kernel(y, y, gamma).sum((-1, -2)) - n) / (n * (n - 1))
    k_xy = gaussian_kernel(x, y, gamma).mean((-1, -2))
    return k_xx + k_yy - 2.0 * k_xy


def mmd_linear(x: torch.Tensor, y: torch.Tensor, gamma: GammaLike = 1.0) -> torch.Tensor:
    """Linear-time MMD^2, Lemma 14 of Gretton et al. (2012).

    With ``h = min(m, n) // 2``, ``1/h sum_{i<h} k(x_i, x_{i+h}) + k(y_i, y_{i+h}) -
    k(x_i, y_{i+h}) - k(x_{i+h}, y_i)``. Bias: none; variance larger than :func:`mmd_exact`'s.
    Cost: ``O(min(m, n) d)``, no ``m x n`` matrix. 0 when a sample has fewer than 2 points.
    """
    h = min(x.shape[-2], y.shape[-2]) // 2
    if h == 0:
        return x.new_zeros(x.shape[:-2])
    x1, x2 = x[..., :h, :], x[..., h : 2 * h, :]
    y1, y2 = y[..., :h, :], y[..., h : 2 * h, :]
    terms = (
        _paired_kernel(x1, x2, gamma)
        + _paired_kernel(y1, y2, gamma)
        - _paired_kernel(x1, y2, gamma)
        - _paired_kernel(x2, y1, gamma)
    )
    return terms.mean(-1)
