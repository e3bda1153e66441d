"""The textbook two-sample MMD estimators of Gretton et al. (2012), JMLR 13:723-773.

On tensors ``x`` of shape ``(..., m, d)`` and ``y`` of shape ``(..., n, d)``:
:func:`mmd_exact` (eq. 5, the biased V-statistic of MMD^2, ``O((m + n)^2)``),
:func:`mmd_unbiased` (eq. 3, the U-statistic, ``O((m + n)^2)``) and :func:`mmd_linear`
(Lemma 14, the linear-time unbiased estimate, ``O(m + n)``). Each function's docstring gives
its equation, bias and cost.
"""

from __future__ import annotations

import torch

from ._kernels import GammaLike, _paired_kernel, gaussian_kernel

__all__ = ["mmd_exact", "mmd_unbiased", "mmd_linear"]


def mmd_exact(x: torch.Tensor, y: torch.Tensor, gamma: GammaLike = 1.0) -> torch.Tensor:
    """Exact quadratic-time MMD^2 between two samples (biased V-statistic).

    The square of eq. (5) of Gretton et al. (2012)::

        MMD_b^2 = mean(K_xx) + mean(K_yy) - 2 mean(K_xy)

    with the Gaussian kernel (diagonal terms included).

    Bias: biased upwards by ``O(1/m + 1/n)`` (the diagonal ``k(x, x) = 1`` terms), so it is
    ``>= 0`` and exactly 0 only for identical samples. Cost: ``O((m + n)^2 d)`` time and
    ``O((m + n)^2)`` memory.

    Parameters
    ----------
    x
        Tensor of shape ``(..., m, d)``, ``m >= 1``.
    y
        Tensor of shape ``(..., n, d)``, ``n >= 1``.
    gamma
        Inverse bandwidth of the Gaussian kernel: a number, or ``G`` values (shape ``(G,)``
        or ``(..., G)``) for a multi-scale kernel, the mean over the scales.

    Returns
    -------
    Tensor of shape ``(...)``.
    """
    k_xx = gaussian_kernel(x, x, gamma).mean((-1, -2))
    k_yy = gaussian_kernel(y, y, gamma).mean((-1, -2))
    k_xy = gaussian_kernel(x, y, gamma).mean((-1, -2))
    return k_xx + k_yy - 2.0 * k_xy


def mmd_unbiased(x: torch.Tensor, y: torch.Tensor, gamma: GammaLike = 1.0) -> torch.Tensor:
    """Quadratic-time unbiased MMD^2 between two samples (U-statistic).

    Eq. (3) of Gretton et al. (2012)::

        MMD_u^2 = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
                  - 2 mean(K_xy)

    Bias: unbiased (its expectation is the population MMD^2), so it can be negative and has
    no ``O(1/m + 1/n)`` floor; its gradient has no pull towards small within-sample spread,
    which matters for small samples (e.g. label-batch groups of a few cells). Cost:
    ``O((m + n)^2 d)`` time and ``O((m + n)^2)`` memory, as :func:`mmd_exact`.

    Parameters
    ----------
    x
        Tensor of shape ``(..., m, d)``, ``m >= 2``.
    y
        Tensor of shape ``(..., n, d)``, ``n >= 2``.
    gamma
        Inverse bandwidth of the Gaussian kernel: a number, or ``G`` values (shape ``(G,)``
        or ``(..., G)``) for a multi-scale kernel, the mean over the scales.

    Returns
    -------
    Tensor of shape ``(...)``.
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
    """Linear-time MMD^2 estimate between two samples (Lemma 14 of Gretton et al., 2012).

    Both samples are truncated to an even common size ``2h = min(m, n)`` (rounded down); cell
    ``i`` is paired with cell ``i + h`` (``i < h``) and::

        MMD_l^2 = 1/h sum_i h((x_i, y_i), (x_{i+h}, y_{i+h}))
        h((x1, y1), (x2, y2)) = k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)

    Bias: unbiased (its expectation is the population MMD^2); it can be negative and has a
    larger variance than :func:`mmd_exact`. Cost: ``O(min(m, n) d)`` time and memory, no
    ``m x n`` matrix. Samples with fewer than 2 points give 0.

    Parameters
    ----------
    x
        Tensor of shape ``(..., m, d)``.
    y
        Tensor of shape ``(..., n, d)``.
    gamma
        Inverse bandwidth of the Gaussian kernel: a number, or ``G`` values (shape ``(G,)``
        or ``(..., G)``) for a multi-scale kernel, the mean over the scales.

    Returns
    -------
    Tensor of shape ``(...)``.
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
