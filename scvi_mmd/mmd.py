"""Maximum Mean Discrepancy (MMD) estimators, as pure :mod:`torch` functions.

Everything here follows Gretton et al. (2012), "A Kernel Two-Sample Test", JMLR 13:723-773,
and imports nothing but :mod:`torch`, so each formula can be checked against the paper.

Two families of functions:

* two-sample estimators on tensors ``x`` of shape ``(..., m, d)`` and ``y`` of shape
  ``(..., n, d)``: :func:`mmd_exact` (eq. 5, squared), :func:`mmd_unbiased` (eq. 3) and
  :func:`mmd_linear` (Lemma 14);
* grouped estimators, :func:`grouped_mmd_exact` and :func:`grouped_mmd_linear`, that take one
  tensor ``z`` of shape ``(..., n, d)``, an integer group code per cell (the batch) and a
  pairing of groups (by default :func:`sequential_pairs`: each batch present with the next
  present one, in code order) and return the sum of MMD^2 over the pairs. They use only tensor
  operations of shapes fixed by ``n`` and the number of groups: no Python loop over groups, no
  data-dependent shapes and no host-device synchronisation, so they run the same on a GPU.

A pairing is a long tensor ``partners`` of shape ``(n_groups, n_partners)``: row ``k`` lists the
groups ``l`` for which MMD^2(group k, group l) is added to the sum, padded with ``-1``
(:func:`sequential_pairs`, :func:`random_pairs`, :func:`all_pairs`).
:func:`grouped_mmd_conditional` compares batches within each label (class-conditional MMD);
:func:`kept_pair_weights` restricts each pair to chosen cells (a weighted MMD, used by the
label-free guard of :mod:`scvi_mmd.module`).

Kernel bandwidth: ``gamma`` is a number, or several (a multi-scale kernel: the mean of the
Gaussian kernels); :func:`median_heuristic_gamma` gives ``1 / (2 median d^2)`` of a minibatch.

Speed: the grouped exact estimators reduce the ``n x n`` kernel with one fused
:func:`weighted_kernel_sum` (one autograd node with a closed-form gradient in ``z``, which
keeps an ``n x d`` matrix for the backward pass; cache-sized row blocks; and one ``exp`` for
scales that are powers of two apart), so the recommended multi-scale kernel costs about what
a single fixed ``gamma`` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

GammaLike = float | Sequence[float] | torch.Tensor

__all__ = [
    "gaussian_kernel",
    "squared_distances",
    "mmd_exact",
    "mmd_unbiased",
    "mmd_linear",
    "group_counts",
    "median_heuristic_gamma",
    "sequential_pairs",
    "random_pairs",
    "all_pairs",
    "pair_weights",
    "kept_pair_weights",
    "n_pairs",
    "weighted_kernel_sum",
    "grouped_mmd_exact",
    "grouped_mmd_linear",
    "grouped_mmd",
    "grouped_mmd_conditional",
]


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances.

    Parameters
    ----------
    x
        Tensor of shape ``(..., m, d)``.
    y
        Tensor of shape ``(..., n, d)``.

    Returns
    -------
    Tensor of shape ``(..., m, n)`` with ``||x_i - y_j||^2``, clamped at 0. Both inputs are
    centred on the mean of ``x`` first (distances are shift invariant), which keeps the
    matrix-product form accurate for points far from the origin.
    """
    shift = x.detach().mean(dim=-2, keepdim=True)
    x = x - shift
    y = y - shift
    x_sq = (x * x).sum(-1, keepdim=True)
    y_sq = (y * y).sum(-1, keepdim=True)
    d2 = x_sq + y_sq.transpose(-1, -2) - 2.0 * x @ y.transpose(-1, -2)
    return d2.clamp_min(0.0)


def _neg_scaled_sq_distances(
    x: torch.Tensor, y: torch.Tensor, gamma: float, clamp: bool = True
) -> torch.Tensor:
    """``-gamma ||x_i - y_j||^2`` (clamped at 0) as one matrix product.

    ``-gamma ||x_i - y_j||^2 = 2 gamma x_i.y_j - gamma ||x_i||^2 - gamma ||y_j||^2`` is the
    product of ``[x_i, ||x_i||^2, 1]`` with ``[2 gamma y_j, -gamma, -gamma ||y_j||^2]``; inputs
    are centred first, as in :func:`squared_distances`. This Gram form has an absolute error of
    about ``eps * gamma * max ||x_i||^2`` (``eps`` of the dtype), which matters only for
    coordinates far larger than a latent space holds; the diagonal of ``x`` with itself is set
    to exactly 0.
    """
    same = y is x
    shift = x.detach().mean(dim=-2, keepdim=True)
    x = x - shift
    x_sq = (x * x).sum(-1, keepdim=True)  # (x * x, not x.square(): pow is slow on CPU)
    if same:  # 2 g x.x' - g |x|^2 - g |x'|^2, with exact zeros on the diagonal
        neg_sq = (x @ x.transpose(-1, -2)) * (2.0 * gamma) - gamma * x_sq
        neg_sq = neg_sq - gamma * x_sq.transpose(-1, -2)
        neg_sq.diagonal(dim1=-2, dim2=-1).zero_()  # (the Gram form leaves ~eps ||x||^2)
    else:
        y = y - shift
        y_sq = (y * y).sum(-1, keepdim=True)
        left = torch.cat([x, x_sq, torch.ones_like(x_sq)], dim=-1)
        right = torch.cat([(2.0 * gamma) * y, torch.full_like(y_sq, -gamma), -gamma * y_sq],
                          dim=-1)
        neg_sq = left @ right.transpose(-1, -2)
    return neg_sq.clamp_(max=0.0) if clamp else neg_sq


def _as_scales(gamma: GammaLike, like: torch.Tensor) -> list[torch.Tensor]:
    """Split a (multi-scale) gamma into one tensor per scale, each of the batch shape."""
    gamma = torch.as_tensor(gamma, dtype=like.dtype, device=like.device)
    return list(gamma.unbind(-1)) if gamma.dim() > 0 else [gamma]


def _expand_to(gamma: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Append singleton dimensions to a per-sample gamma so it broadcasts over ``target``."""
    return gamma.reshape(gamma.shape + (1,) * (target.dim() - gamma.dim()))


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor, gamma: GammaLike = 1.0) -> torch.Tensor:
    """Gaussian kernel matrix ``k(x_i, y_j) = exp(-gamma * ||x_i - y_j||^2)``.

    Parameters
    ----------
    x
        Tensor of shape ``(..., m, d)``.
    y
        Tensor of shape ``(..., n, d)``.
    gamma
        Inverse bandwidth ``> 0``: a number, or a tensor of shape ``(..., G)`` (or a list) of
        ``G`` values, in which case the kernel is the mean over the ``G`` scales (a multi-scale
        kernel). A fixed number costs three passes over the ``m x n`` matrix.

    Returns
    -------
    Tensor of shape ``(..., m, n)``.
    """
    if isinstance(gamma, int | float):  # gamma folded into the matrix product
        return torch.exp(_neg_scaled_sq_distances(x, y, float(gamma)))
    return _mean_exp(_neg_scaled_sq_distances(x, y, 1.0), gamma)


def _mean_exp(neg_sq: torch.Tensor, gamma: GammaLike) -> torch.Tensor:
    """``exp(gamma * neg_sq)``, averaged over the scales of a multi-scale ``gamma``."""
    if isinstance(gamma, int | float):
        return torch.exp(gamma * neg_sq)
    scales = _as_scales(gamma, neg_sq)
    return sum(torch.exp(neg_sq * _expand_to(g, neg_sq)) for g in scales) / len(scales)


def _scale_ladder(gamma: torch.Tensor) -> list[int] | None:
    """Exponents ``k_s`` with ``g_s = g_0 * 2^k_s`` (rising) for ``gamma`` of shape
    ``(..., S)``, or ``None`` if there are none.

    When every inverse bandwidth is the first one times a power of two (e.g. scales 0.25, 0.5,
    1, 2, 4), the kernels of all scales follow from one ``exp`` by repeated squaring,
    ``exp(2 a) = exp(a)^2``, several times cheaper than an ``exp`` per scale (the relative
    rounding error doubles with each squaring: ``2^k`` ulp, 16 for scales 0.25 ... 4). The
    ratios are read on the host, so this is done for CPU tensors only (no device sync).
    """
    if gamma.dim() == 0 or gamma.shape[-1] < 2 or gamma.device.type != "cpu":
        return None
    ratios = (gamma / gamma[..., :1]).reshape(-1, gamma.shape[-1]).tolist()
    exponents = [round(math.log2(r)) if r > 0 else -1 for r in ratios[0]]
    if exponents[0] != 0 or any(b < a for a, b in zip(exponents, exponents[1:])):
        return None
    if any(r != 2.0**k for row in ratios for r, k in zip(row, exponents)):
        return None
    return exponents


_BLOCK_ELEMENTS = 1 << 18


def _kernel_and_grad(neg_sq, gammas, ladder, grad_scale=None):
    """``mean_s exp(g_s N)`` and (unless ``grad_scale`` is ``None``) ``grad_scale`` times
    ``mean_s g_s exp(g_s N)``, for a block of ``N``.

    With a ``ladder`` (see :func:`_scale_ladder`) ``gammas`` holds ``g_0`` alone and
    ``g_s = g_0 2^k_s``; otherwise one inverse bandwidth per scale.
    """
    need_grad = grad_scale is not None
    n_scales = len(gammas) if ladder is None else len(ladder)
    scale = 1.0 / n_scales
    if ladder is not None:
        g0 = gammas[0]
        # N <= 0, so k <= 1; rounding of the Gram form can give N slightly > 0. The clamp is
        # on k (in place) and, unlike clamping N, passes the gradient through.
        power = torch.exp(neg_sq * g0).clamp_(max=1.0)
        kernel = power
        grad = power * (grad_scale * scale) if need_grad else None
        for step, (previous, k) in enumerate(zip(ladder, ladder[1:])):
            for _ in range(k - previous):  # exp(2 a) = exp(a)^2
                power = power * power  # (a plain product; Tensor.square is slower on CPU)
            kernel = kernel + power if step == 0 else kernel.add_(power)
            if need_grad:
                grad.add_(power, alpha=grad_scale * scale * 2.0**k)
        if need_grad:
            grad.mul_(g0)
        return kernel.mul_(scale), grad
    kernel = grad = None
    for i, g in enumerate(gammas):
        power = torch.exp(neg_sq if isinstance(g, float) and g == 1.0 else neg_sq * g)
        power.clamp_(max=1.0)  # (as above)
        if need_grad:
            g_scaled = g * (scale * grad_scale)
            if grad is None:
                grad = power * g_scaled
            elif isinstance(g_scaled, float):
                grad.add_(power, alpha=g_scaled)
            else:
                grad.addcmul_(power, g_scaled)
        kernel = power if kernel is None else (kernel + power if i == 1 else kernel.add_(power))
    return (kernel if n_scales == 1 else kernel.mul_(scale)), grad


def _kernel_scales(gamma: GammaLike, like: torch.Tensor) -> tuple[list, list[int] | None]:
    """Inverse bandwidths as :func:`_kernel_and_grad` takes them, each shaped to broadcast
    over a tensor with the dimensions of ``like``, and the ladder (or ``None``)."""
    if isinstance(gamma, int | float):
        return [float(gamma)], None
    gamma = torch.as_tensor(gamma, dtype=like.dtype, device=like.device).detach()
    ladder = _scale_ladder(gamma)
    scales = [gamma[..., 0]] if ladder else gamma.unbind(-1) if gamma.dim() else [gamma]
    return [_expand_to(g, like) for g in scales], ladder


class _KernelOfSquaredDistances(torch.autograd.Function):
    """Elementwise ``mean_s exp(-g_s D)`` with the gradient ``-mean_s g_s exp(-g_s D)`` kept
    from the forward pass: one node, and one ``exp`` for a ladder of scales."""

    @staticmethod
    def forward(ctx, sq, gammas, ladder):
        need_grad = ctx.needs_input_grad[0]
        kernel, grad = _kernel_and_grad(-sq, gammas, ladder, -1.0 if need_grad else None)
        if need_grad:
            ctx.save_for_backward(grad)
        return kernel

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None


def _neg_sq_distances(z: torch.Tensor) -> torch.Tensor:
    """``-||z_i - z_j||^2`` of one sample with itself, without gradient (see
    :func:`_neg_scaled_sq_distances`; not clamped: the kernel is clamped instead)."""
    with torch.no_grad():
        z = z.detach()
        return _neg_scaled_sq_distances(z, z, 1.0, clamp=False)


class _WeightedKernelSum(torch.autograd.Function):
    """``sum_ij W_ij mean_s exp(-g_s D_ij)`` and its gradient in ``z``, in one pass.

    ``D_ij = ||z_i - z_j||^2``; ``g_s`` are the kernel's inverse bandwidths (no gradient:
    fixed, or the detached median heuristic); ``W`` is symmetric. With
    ``B_ij = W_ij mean_s g_s exp(-g_s D_ij)``, the gradient is the closed form

        ``d/dz_i = -4 sum_j B_ij (z_i - z_j) = -4 (rowsum(B)_i z_i - (B z)_i)``,

    which the forward pass accumulates row block by row block (blocks of ~1 MB, so that all
    the passes over a block run in the CPU's cache) and keeps for the backward pass: an
    ``n x d`` matrix instead of autograd's ``n x n`` ones, no ``n x n`` matrix but ``D``
    itself, and a single node in the graph (at minibatch 128 the cost of a step is mostly the
    number of operations, not their size).
    """

    @staticmethod
    def forward(ctx, z, weights, neg_sq, gammas, ladder):
        # gradient of sum_ij W_ij k(N_ij) in N, times 4: see the closed form above
        grad_scale = 4.0 if ctx.needs_input_grad[0] else None
        n = neg_sq.shape[-2]
        rows = max(1, _BLOCK_ELEMENTS // max(neg_sq.shape[-1], 1))
        values, grads = [], []
        for start in range(0, n, rows):  # one block up to 512 cells
            block = slice(start, start + rows)
            kernel, b = _kernel_and_grad(neg_sq[..., block, :], gammas, ladder, grad_scale)
            w = weights[block]
            values.append(kernel.mul_(w).sum((-1, -2)))
            if grad_scale is not None:
                b = b.mul_(w)
                grads.append(torch.matmul(b, z).sub_(b.sum(-1, keepdim=True) * z[..., block, :]))
        if grads:
            ctx.save_for_backward(grads[0] if len(grads) == 1 else torch.cat(grads, dim=-2))
        return values[0] if len(values) == 1 else torch.stack(values).sum(0)

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad * grad_output[..., None, None], None, None, None, None


def weighted_kernel_sum(z: torch.Tensor, weights: torch.Tensor, gamma: GammaLike,
                        neg_sq: torch.Tensor | None = None,
                        symmetric: bool = False) -> torch.Tensor:
    """``sum_ij W_ij k(z_i, z_j)`` with ``k`` the (multi-scale) Gaussian kernel, fused.

    Parameters
    ----------
    z
        Codes, shape ``(..., n, d)`` (gradients flow to them, in closed form).
    weights
        ``W``, shape ``(n, n)``.
    gamma
        Inverse bandwidth(s) as in :func:`gaussian_kernel`; receives no gradient.
    neg_sq
        ``-||z_i - z_j||^2`` if the caller has it already (detached), shape ``(..., n, n)``.
    symmetric
        Whether ``W`` is known to be symmetric; if not, ``(W + W^T) / 2`` is used, which
        gives the same sum (the kernel is symmetric).

    Returns
    -------
    Tensor of shape ``(...)``, equal to ``(gaussian_kernel(z, z, gamma) * W).sum((-1, -2))``.
    """
    gammas, ladder = _kernel_scales(gamma, z[..., :1])
    weights = weights.detach().to(z.dtype)
    if not symmetric:
        weights = 0.5 * (weights + weights.T)
    if neg_sq is None:
        neg_sq = _neg_sq_distances(z)
    return _WeightedKernelSum.apply(z, weights, neg_sq.detach(), gammas, ladder)


def _paired_kernel(a: torch.Tensor, b: torch.Tensor, gamma: GammaLike) -> torch.Tensor:
    """Kernel between rows of ``a`` and ``b`` matched one to one: ``(..., d) -> (...)``."""
    diff = a - b
    sq = (diff * diff).sum(-1)
    if isinstance(gamma, int | float):
        return torch.exp(-float(gamma) * sq)
    gammas, ladder = _kernel_scales(gamma, sq)
    return _KernelOfSquaredDistances.apply(sq, gammas, ladder)


def median_heuristic_gamma(
    z: torch.Tensor, groups: torch.Tensor | None = None, ignore: int | None = None
) -> torch.Tensor:
    """Inverse bandwidth from the median heuristic, ``gamma = 1 / (2 median ||z_i - z_j||^2)``.

    That is ``k = exp(-d^2 / (2 sigma^2))`` with ``sigma`` the median distance (Gretton et al.,
    2012, Sec. 8). The median is taken over the ``n`` pairs ``(i, i + n // 2 mod n)`` of the
    (shuffled) minibatch, so it costs ``O(n d)``; the result is detached (no gradient).

    With ``groups`` (e.g. cell-type labels) the median is taken over pairs of cells *of the same
    group* only: cells are stably sorted by group and each is paired with the next one of its
    group (``O(n log n)``), so the bandwidth follows the within-group spread that a
    class-conditional MMD compares, not the distances between groups. Cells of group
    ``ignore`` are left out; if no pair remains, the minibatch-wide median is used.

    Parameters
    ----------
    z
        Tensor of shape ``(..., n, d)``.
    groups
        Optional group code of each cell, shape ``(n,)`` or ``(n, 1)``.
    ignore
        Optional group code whose cells form no pair.

    Returns
    -------
    Tensor of shape ``(...)``.
    """
    z = z.detach()
    n = z.shape[-2]
    if n % 2 == 0:  # the rolled pairs below are then each pair twice: same median, half the work
        diff = z[..., : n // 2, :] - z[..., n // 2:, :]
    else:
        diff = z - torch.roll(z, n // 2, dims=-2)
    sq = (diff * diff).sum(-1)
    median = sq.median(dim=-1).values
    if groups is not None:
        groups = groups.reshape(-1)
        order = torch.sort(groups, stable=True).indices
        z, groups = z[..., order, :], groups[order]
        same = groups[1:] == groups[:-1]
        if ignore is not None:
            same = same & (groups[1:] != ignore)
        step = z[..., 1:, :] - z[..., :-1, :]
        within = (step * step).sum(-1)
        # NaN marks pairs across groups; nanmedian skips them without a host synchronisation
        within = within.masked_fill(~same, float("nan")).nanmedian(dim=-1).values
        median = torch.where(within.isnan(), median, within)
    return 0.5 / median.clamp_min(torch.finfo(z.dtype).tiny ** 0.5)


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


def group_counts(groups: torch.Tensor, n_groups: int, dtype: torch.dtype) -> torch.Tensor:
    """Number of cells in each group, shape ``(n_groups,)``, without synchronisation."""
    counts = torch.zeros(n_groups, dtype=dtype, device=groups.device)
    return counts.scatter_add_(0, groups, torch.ones_like(groups, dtype=dtype))


def sequential_pairs(
    counts: torch.Tensor, rank: torch.Tensor | None = None, block: torch.Tensor | None = None
) -> torch.Tensor:
    """Pair each group present with the next present group, in code order (or ``rank`` order).

    With groups ``0, 1, 3`` present this gives the pairs ``(0, 1)`` and ``(1, 3)``; with one
    group present, no pair.

    Parameters
    ----------
    counts
        Cells per group, shape ``(n_groups,)``.
    rank
        Optional position of each group in the order to follow (a permutation of
        ``0 .. n_groups - 1``); by default the codes themselves.
    block
        Optional block of each group: groups are paired only within their block, and groups
        of a negative block never. Default: one block.

    Returns
    -------
    Long tensor ``partners`` of shape ``(n_groups, 1)``: the next present group, or ``-1``.
    """
    n_groups = counts.shape[0]
    if rank is None:
        rank = torch.arange(n_groups, device=counts.device)
    present = _present(counts, block)
    # later[k, l]: group l is present and comes after group k; the next one has the least rank
    later = (rank[None, :] > rank[:, None]) & present[None, :]
    if block is not None:
        later = later & _same_block(block)
    nxt = torch.where(later, rank[None, :], n_groups).argmin(dim=1)
    return torch.where(present & later.any(dim=1), nxt, -1)[:, None]


def _present(counts: torch.Tensor, block: torch.Tensor | None) -> torch.Tensor:
    present = counts > 0
    return present if block is None else present & (block >= 0)


def _same_block(block: torch.Tensor | None) -> torch.Tensor | bool:
    return True if block is None else block[None, :] == block[:, None]


def random_pairs(
    counts: torch.Tensor,
    generator: torch.Generator | None = None,
    block: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`sequential_pairs` in a random order of the groups (drawn anew at each call)."""
    rank = torch.randperm(counts.shape[0], generator=generator, device="cpu")
    return sequential_pairs(counts, rank.to(counts.device), block)


def all_pairs(counts: torch.Tensor, block: torch.Tensor | None = None) -> torch.Tensor:
    """Every pair ``(k, l)``, ``k < l``, of present groups: ``partners`` of shape ``(G, G)``."""
    n_groups = counts.shape[0]
    codes = torch.arange(n_groups, device=counts.device)
    present = _present(counts, block)
    keep = (codes[None, :] > codes[:, None]) & present[None, :] & present[:, None]
    return torch.where(keep & _same_block(block), codes[None, :], -1)


PAIRINGS = {"sequential": sequential_pairs, "random": random_pairs, "all": all_pairs}


def _check_grouped_inputs(z: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    if z.dim() < 2:
        raise ValueError(f"`z` must have shape (..., n_cells, n_latent), got {tuple(z.shape)}.")
    groups = groups.reshape(-1).long()
    if groups.shape[0] != z.shape[-2]:
        raise ValueError(
            f"`groups` has {groups.shape[0]} entries but `z` has {z.shape[-2]} cells."
        )
    return groups


def pair_weights(
    counts: torch.Tensor, partners: torch.Tensor, unbiased: bool = False
) -> torch.Tensor:
    """Weights ``W`` such that the sum over pairs of exact MMD^2 is ``sum_ij K_ij W[g_i, g_j]``.

    For a pair ``(k, l)``, ``MMD^2 = S_kk / c_k^2 + S_ll / c_l^2 - 2 S_kl / (c_k c_l)`` with
    ``S`` the kernel sums between groups and ``c`` the group sizes, so ``W`` holds
    ``(number of pairs of k) / c_k^2`` on its diagonal and ``-1 / (c_k c_l)`` at ``(k, l)`` and
    ``(l, k)`` for each pair. With ``unbiased`` (U-statistic, the caller leaves out ``i = j``)
    the diagonal holds ``(number of pairs of k) / (c_k (c_k - 1))`` and pairs with a group of
    fewer than two cells get weight 0.

    Parameters
    ----------
    counts
        Cells per group, shape ``(n_groups,)``, floating point.
    partners
        Pairing of groups, ``(n_groups, n_partners)`` padded with ``-1``.
    unbiased
        Weights of the U-statistic (:func:`mmd_unbiased`) instead of the V-statistic.

    Returns
    -------
    Symmetric tensor of shape ``(n_groups, n_groups)``.
    """
    second = partners.clamp_min(0)
    is_pair = (partners >= 0).to(counts.dtype)
    if unbiased:
        enough = (counts >= 2).to(counts.dtype)
        is_pair = is_pair * enough[:, None] * enough[second]
    inv = 1.0 / counts.clamp_min(1.0)
    cross = is_pair * inv[:, None] * inv[second]
    weights = torch.zeros(counts.shape[0], counts.shape[0], dtype=counts.dtype,
                          device=counts.device)
    weights = weights.scatter_add_(1, second, -cross)
    weights = weights + weights.T
    n_pairs = is_pair.sum(1).scatter_add_(0, second.flatten(), is_pair.flatten())
    within = inv / (counts - 1.0).clamp_min(1.0) if unbiased else inv * inv
    return weights + torch.diag(n_pairs * within)


def kept_pair_weights(
    groups: torch.Tensor,
    n_groups: int,
    partners: torch.Tensor,
    keep: torch.Tensor | None,
    unbiased: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Cell weights ``W`` such that ``sum_ij K_ij W_ij`` is the sum over pairs of the MMD^2
    between the *kept* cells of the two groups.

    ``keep[i, l]`` (0/1, or a weight in ``[0, 1]``) says whether cell ``i`` counts when its
    group is compared with group ``l``. For a pair ``(k, l)`` let ``a`` be ``keep[:, l]`` on
    the cells of ``k`` (0 elsewhere) and ``b`` be ``keep[:, k]`` on the cells of ``l``; the
    pair's term is the MMD^2 between the ``a``- and ``b``-weighted empirical distributions,

        ``a'Ka / |a|^2 + b'Kb / |b|^2 - 2 a'Kb / (|a| |b|) = d'Kd``,  ``d = a/|a| - b/|b|``

    (V-statistic, eq. 5), with ``|a| = sum(a)``: the weighted MMD of Yan et al. (2017), "Mind
    the Class Weight Bias: Weighted Maximum Mean Discrepancy for Unsupervised Domain
    Adaptation", CVPR, with weights per cell instead of per class. So ``W = D D'`` for the
    ``n x S`` matrix ``D`` of the pairs' ``d``: one matrix product. With ``unbiased`` the
    diagonal ``i = i'`` is left out and the within-group terms are divided by
    ``|a|^2 - sum(a^2)`` (``c (c - 1)`` for 0/1 weights, eq. 3). A pair whose groups keep no
    cell (fewer than two, unbiased) adds 0. ``keep=None`` (every cell) gives
    ``pair_weights(counts, partners, unbiased)[g_i, g_j]``.

    Cost: ``O(n^2 S)`` for ``S = n_groups * n_partners`` pair slots (``n_groups`` for
    sequential pairs).

    Parameters
    ----------
    groups
        Group code of each cell, shape ``(n,)``.
    n_groups
        Number of groups.
    partners
        Pairing of groups, ``(n_groups, n_partners)`` padded with ``-1``.
    keep
        Shape ``(n, n_groups)``; no gradient flows through it. ``None``: every cell.
    unbiased
        Weights of the U-statistic (the caller's kernel diagonal is left out here).
    dtype
        Floating point type of ``W``; by default that of a floating ``keep``, else the
        default dtype.

    Returns
    -------
    Symmetric tensor of shape ``(n, n)``.
    """
    if dtype is None:
        dtype = keep.dtype if keep is not None and keep.is_floating_point() \
            else torch.get_default_dtype()
    second = partners.reshape(-1)
    valid = second >= 0
    second = second.clamp_min(0)
    codes = torch.arange(n_groups, device=groups.device)
    member = (groups[:, None] == codes).to(dtype)  # (n, G)
    if partners.shape[1] == 1:  # one partner per group: slot k is group k and its partner
        first = None
        a, b = member, member[:, second]
    else:
        first = codes.repeat_interleave(partners.shape[1])
        a, b = member[:, first], member[:, second]
    if keep is not None:
        keep = keep.detach().to(dtype)
        a = a * keep[:, second]  # kept cells of each pair's first group
        b = b * (keep if first is None else keep[:, first])  # and of its second group
    size_a, size_b = a.sum(0), b.sum(0)
    if not unbiased:
        ok = (valid & (size_a > 0) & (size_b > 0)).to(dtype)
        diff = a * (ok / size_a.clamp_min(1e-12)) - b * (ok / size_b.clamp_min(1e-12))
        return diff @ diff.T
    within_a = size_a * size_a - (a * a).sum(0)
    within_b = size_b * size_b - (b * b).sum(0)
    ok = valid & (within_a > 0) & (within_b > 0)
    inv_a = torch.where(ok, 1.0 / within_a.clamp_min(1e-12), 0.0)
    inv_b = torch.where(ok, 1.0 / within_b.clamp_min(1e-12), 0.0)
    cross = torch.where(ok, 1.0 / (size_a * size_b).clamp_min(1e-12), 0.0)
    ab = (a * cross) @ b.T
    weights = (a * inv_a) @ a.T + (b * inv_b) @ b.T - ab - ab.T
    return weights.fill_diagonal_(0.0)


def grouped_mmd_exact(
    z: torch.Tensor,
    groups: torch.Tensor,
    n_groups: int,
    gamma: GammaLike = 1.0,
    partners: torch.Tensor | None = None,
    unbiased: bool = False,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum of exact MMD^2 (:func:`mmd_exact`, or :func:`mmd_unbiased`) over pairs of groups.

    The kernel matrix ``K`` of the whole minibatch is built once and the sum over pairs is
    ``sum_ij K_ij W_ij`` (see :func:`kept_pair_weights`, equal to :func:`pair_weights`
    ``[g_i, g_j]`` without ``keep``; ``i = j`` left out if ``unbiased``).

    Bias and cost as :func:`mmd_exact` (biased, ``>= 0``) or :func:`mmd_unbiased` (unbiased;
    a pair with a group of fewer than two cells adds 0); ``O(n^2 d)`` time and ``O(n^2)``
    memory for ``n`` cells, independent of the number of groups.

    Parameters
    ----------
    z
        Latent codes, shape ``(..., n, d)`` (a leading sample dimension is allowed).
    groups
        Group code of each cell in ``[0, n_groups)``, shape ``(n,)`` or ``(n, 1)``.
    n_groups
        Number of groups (batches) known in advance.
    gamma
        Inverse bandwidth of the Gaussian kernel: a number, or ``G`` values (shape ``(G,)``
        or ``(..., G)``) for a multi-scale kernel, the mean over the scales.
    partners
        Pairing of groups, ``(n_groups, n_partners)`` padded with ``-1``. Defaults to
        :func:`sequential_pairs`.
    unbiased
        The U-statistic of :func:`mmd_unbiased` instead of the V-statistic.
    keep
        Optional ``(n, n_groups)`` weights: only the kept cells of each pair's groups are
        compared (:func:`kept_pair_weights`); or a function that returns them from
        ``-||z_i - z_j||^2`` (detached, shape ``(..., n, n)``), so that a caller who selects
        cells by distance (the guard) does not compute the distances a second time.
        ``None``: every cell.

    Returns
    -------
    Tensor of shape ``(...)``; 0 when fewer than two groups are present.
    """
    groups = _check_grouped_inputs(z, groups)
    neg_sq = _neg_sq_distances(z)
    if callable(keep):
        keep = keep(neg_sq)
    if partners is None:
        partners = sequential_pairs(group_counts(groups, n_groups, torch.long))
    cell_weights = kept_pair_weights(groups, n_groups, partners, keep, unbiased, z.dtype)
    return weighted_kernel_sum(z, cell_weights, gamma, neg_sq=neg_sq, symmetric=True)


def grouped_mmd_linear(
    z: torch.Tensor,
    groups: torch.Tensor,
    n_groups: int,
    gamma: GammaLike = 1.0,
    partners: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum of linear-time MMD^2 (:func:`mmd_linear`) over pairs of groups of cells.

    Within each group, cells keep their order in ``z``. For a pair ``(k, l)`` with ``c_k`` and
    ``c_l`` cells, ``h = min(c_k, c_l) // 2`` and the ``i``-th cell of group ``k`` (``i < h``)
    is the ``x1`` of the ``i``-th term of Lemma 14; its ``x2``, ``y1`` and ``y2`` are found by
    rank arithmetic on a stable sort of the group codes. A pair with ``h = 0`` (a group with
    fewer than 2 cells) contributes 0.

    Bias and cost as :func:`mmd_linear`: unbiased; ``O(n d)`` time and memory per partner
    column (one column for sequential pairs), no ``n x n`` matrix.

    Parameters
    ----------
    z
        Latent codes, shape ``(..., n, d)`` (a leading sample dimension is allowed).
    groups
        Group code of each cell in ``[0, n_groups)``, shape ``(n,)`` or ``(n, 1)``.
    n_groups
        Number of groups (batches) known in advance.
    gamma
        Inverse bandwidth of the Gaussian kernel: a number, or ``G`` values (shape ``(G,)``
        or ``(..., G)``) for a multi-scale kernel, the mean over the scales.
    partners
        Pairing of groups, ``(n_groups, n_partners)`` padded with ``-1``. Defaults to
        :func:`sequential_pairs`.

    Returns
    -------
    Tensor of shape ``(...)``; 0 when fewer than two groups are present.
    """
    groups = _check_grouped_inputs(z, groups)
    n = groups.shape[0]
    counts = group_counts(groups, n_groups, torch.long)
    if partners is None:
        partners = sequential_pairs(counts)
    # Work in the order of cells sorted by group (stable): position p holds cell order[p], of
    # group sorted_groups[p] and rank p - start[group] within it.
    sorted_groups, order = torch.sort(groups, stable=True)
    start = torch.cumsum(counts, 0) - counts
    position = torch.arange(n, device=z.device)[:, None]
    rank = position - start[sorted_groups][:, None]
    partner = partners[sorted_groups]  # (n, P): the groups paired with each cell's group
    is_pair = partner >= 0
    partner = partner.clamp_min(0)
    half = torch.minimum(counts[sorted_groups][:, None], counts[partner]) // 2
    # x1 = this cell, x2 = h cells later in its group, y1 / y2 = same ranks in the partner
    partner_position = start[partner] + rank
    positions = torch.stack(
        [position.expand_as(half), position + half, partner_position, partner_position + half]
    )
    x1, x2, y1, y2 = order[positions.clamp_(max=n - 1)]
    # the four kernel terms of h((x1, y1), (x2, y2)), with signs + + - -, in one gather
    first, second = torch.stack([x1, y1, x1, x2]), torch.stack([x2, y2, y2, y1])
    left, right = z[..., torch.stack([first, second]), :].unbind(-5)  # one gather
    kernels = _paired_kernel(left, right, gamma)  # (..., 4, n, P)
    weight = torch.where(is_pair & (rank < half), 1.0 / half.clamp_min(1).to(z.dtype), 0.0)
    sign = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=z.dtype, device=z.device)
    return (kernels * (sign[:, None, None] * weight)).sum((-1, -2, -3))


def grouped_mmd(
    z: torch.Tensor,
    groups: torch.Tensor,
    n_groups: int,
    mode: str = "normal",
    gamma: GammaLike = 1.0,
    partners: torch.Tensor | str | None = None,
    block: torch.Tensor | None = None,
    reduction: str = "sum",
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum (or mean) of MMD^2 over pairs of groups, with the estimator named by ``mode``.

    Parameters
    ----------
    z
        Latent codes, shape ``(..., n, d)``.
    groups
        Group code of each cell, shape ``(n,)`` or ``(n, 1)``.
    n_groups
        Number of groups.
    mode
        ``"normal"``: :func:`grouped_mmd_exact`; ``"unbiased"``: the same with
        ``unbiased=True``; ``"fast"``: :func:`grouped_mmd_linear`.
    gamma
        Inverse bandwidth of the Gaussian kernel: a number, or ``G`` values (shape ``(G,)``
        or ``(..., G)``) for a multi-scale kernel, the mean over the scales.
    partners
        Pairing of groups, or the name of a pairing: ``"sequential"`` (the default,
        :func:`sequential_pairs`), ``"random"`` (:func:`random_pairs`) or ``"all"``
        (:func:`all_pairs`).
    block
        With a named pairing: the block of each group (pairs only within a block; groups of a
        negative block, e.g. padding, are never paired).
    reduction
        ``"sum"`` over the pairs (the original design, whose size grows with the number of
        pairs: ``K - 1`` sequential pairs, ``K (K - 1) / 2`` for ``"all"``, for ``K``
        batches present) or ``"mean"`` over the pairs present (see :func:`n_pairs`): the
        size of one pair's MMD^2 whatever the number of batches or the pairing. With the mean,
        the pull on each cell is about the same for 2 or 20 batches: each cell is in about
        ``2 P / K`` of the ``P`` pairs and its group holds about ``n / K`` of the ``n``
        cells, so its share of the term scales as ``1 / n`` like its share of the ELBO.
    keep
        Optional ``(n, n_groups)`` cell weights of the exact estimators: each pair compares
        only its kept cells (:func:`kept_pair_weights`), or a function that returns them
        from the distances (see :func:`grouped_mmd_exact`). Not with ``"fast"``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}.")
    if partners is None:
        partners = "sequential"
    if isinstance(partners, str):
        if partners not in PAIRINGS:
            raise ValueError(f"`partners` must be one of {tuple(PAIRINGS)}, got {partners!r}.")
        groups = _check_grouped_inputs(z, groups)
        counts = group_counts(groups, n_groups, torch.long)
        partners = PAIRINGS[partners](counts, block=block)
    if mode in ("normal", "unbiased"):
        value = grouped_mmd_exact(z, groups, n_groups, gamma, partners, mode == "unbiased",
                                  keep=keep)
    elif mode == "fast":
        if keep is not None:
            raise ValueError("`keep` needs an exact estimator (mode 'normal' or 'unbiased').")
        value = grouped_mmd_linear(z, groups, n_groups, gamma, partners)
    else:
        raise ValueError(f"`mode` must be 'normal', 'unbiased' or 'fast', got {mode!r}.")
    return value / n_pairs(partners).to(value.dtype).clamp_min(1) if reduction == "mean" else value


REDUCTIONS = ("sum", "mean")


def n_pairs(partners: torch.Tensor) -> torch.Tensor:
    """Number of pairs in a pairing (a 0-d long tensor; no host synchronisation)."""
    return (partners >= 0).sum()


def grouped_mmd_conditional(
    z: torch.Tensor,
    batches: torch.Tensor,
    n_batches: int,
    labels: torch.Tensor,
    n_labels: int,
    unlabeled: int | None = None,
    mode: str = "normal",
    gamma: GammaLike = 1.0,
    pairing: str = "sequential",
    reduction: str = "label_mean",
) -> torch.Tensor:
    """Class-conditional MMD: batches compared within each label, averaged over labels.

    Cells of label ``t`` in batch ``k`` are compared with cells of label ``t`` in the paired
    batch (pairs of :func:`grouped_mmd`, formed among the batches present *within* the label).
    The result is the mean, over the labels that have at least one pair, of the sum over their
    pairs; cells whose label is ``unlabeled`` are ignored. A label present in one batch only
    contributes nothing. Same estimators, costs and synchronisation-free operations as
    :func:`grouped_mmd` (the groups are the ``n_labels * n_batches`` label-batch combinations).

    Parameters
    ----------
    z
        Latent codes, shape ``(..., n, d)``.
    batches
        Batch code of each cell in ``[0, n_batches)``, shape ``(n,)`` or ``(n, 1)``.
    n_batches
        Number of batches.
    labels
        Label code of each cell in ``[0, n_labels)``, shape ``(n,)`` or ``(n, 1)``.
    n_labels
        Number of label codes (the unlabeled one included, if any).
    unlabeled
        Code of the unlabeled category, or ``None``.
    mode
        ``"normal"`` (exact), ``"unbiased"`` (exact U-statistic) or ``"fast"`` (linear-time).
    gamma
        Inverse bandwidth(s) of the Gaussian kernel.
    pairing
        ``"sequential"``, ``"random"`` or ``"all"``.
    reduction
        ``"label_mean"``: the mean over labels of each label's sum over its pairs (the
        original design); ``"mean"``: the mean over all (label, batch pair) pairs present,
        whose size does not grow with the number of batches (as in :func:`grouped_mmd`).

    Returns
    -------
    Tensor of shape ``(...)``; 0 when no label is present in two batches.
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"`pairing` must be one of {tuple(PAIRINGS)}, got {pairing!r}.")
    batches = _check_grouped_inputs(z, batches)
    labels = _check_grouped_inputs(z, labels)
    n_groups = n_labels * n_batches + 1  # the last group holds unlabeled cells, never paired
    groups = labels * n_batches + batches
    if unlabeled is not None:
        groups = torch.where(labels == unlabeled, n_groups - 1, groups)
    block = torch.arange(n_groups, device=z.device) // n_batches
    block[-1] = -1
    counts = group_counts(groups, n_groups, torch.long)
    partners = PAIRINGS[pairing](counts, block=block)
    if reduction not in ("label_mean", "mean"):
        raise ValueError(f"`reduction` must be 'label_mean' or 'mean', got {reduction!r}.")
    value = grouped_mmd(z, groups, n_groups, mode=mode, gamma=gamma, partners=partners)
    if reduction == "mean":
        return value / n_pairs(partners).to(value.dtype).clamp_min(1)
    has_pair = (partners >= 0).any(dim=1).to(z.dtype)
    per_label = torch.zeros(n_labels + 1, dtype=z.dtype, device=z.device)
    per_label = per_label.scatter_add_(0, block.clamp_min(0), has_pair)
    return value / (per_label > 0).sum().clamp_min(1).to(z.dtype)
