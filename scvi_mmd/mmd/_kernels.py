"""Gaussian kernels on latent codes, and the fused kernel sum the exact estimators use.

``gamma`` is a number, or several (a multi-scale kernel: the mean of the Gaussian kernels at
each ``gamma``). :func:`weighted_kernel_sum` reduces the ``n x n`` kernel of a minibatch with
one autograd node whose gradient in ``z`` has a closed form (it keeps an ``n x d`` matrix for
the backward pass), in cache-sized row blocks, with one ``exp`` for scales that are powers of
two apart, so the multi-scale kernel costs about what a single ``gamma`` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["squared_distances", "gaussian_kernel", "weighted_kernel_sum"]


GammaLike = float | Sequence[float] | torch.Tensor


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
    over a tensor with the dimensions of ``like``, and the ladder (or ``None``).
    """
    if isinstance(gamma, int | float):
        return [float(gamma)], None
    gamma = torch.as_tensor(gamma, dtype=like.dtype, device=like.device).detach()
    ladder = _scale_ladder(gamma)
    scales = [gamma[..., 0]] if ladder else gamma.unbind(-1) if gamma.dim() else [gamma]
    return [_expand_to(g, like) for g in scales], ladder


class _KernelOfSquaredDistances(torch.autograd.Function):
    """Elementwise ``mean_s exp(-g_s D)`` with the gradient ``-mean_s g_s exp(-g_s D)`` kept
    from the forward pass: one node, and one ``exp`` for a ladder of scales.
    """

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
    :func:`_neg_scaled_sq_distances`; not clamped: the kernel is clamped instead).
    """
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
    def forward(ctx, z, weights, neg_sq, gammas, ladder, extra):
        # gradient of sum_ij W_ij k(N_ij) in N, times 4: see the closed form above
        grad_scale = 4.0 if ctx.needs_input_grad[0] else None
        n = neg_sq.shape[-2]
        rows = max(1, _BLOCK_ELEMENTS // max(neg_sq.shape[-1], 1))
        values, extras, grads = [], [], []
        for start in range(0, n, rows):  # one block up to 512 cells
            block = slice(start, start + rows)
            kernel, b = _kernel_and_grad(neg_sq[..., block, :], gammas, ladder, grad_scale)
            if extra is not None:  # a second weighting of the same kernel (no gradient)
                extras.append((kernel * extra[block]).sum((-1, -2)))
            w = weights[block]
            values.append(kernel.mul_(w).sum((-1, -2)))
            if grad_scale is not None:
                b = b.mul_(w)
                grads.append(torch.matmul(b, z).sub_(b.sum(-1, keepdim=True) * z[..., block, :]))
        if grads:
            ctx.save_for_backward(grads[0] if len(grads) == 1 else torch.cat(grads, dim=-2))
        value = values[0] if len(values) == 1 else torch.stack(values).sum(0)
        second = torch.stack(extras).sum(0) if extras else torch.zeros_like(value)
        ctx.mark_non_differentiable(second)
        return value, second

    @staticmethod
    def backward(ctx, grad_output, _grad_extra):
        (grad,) = ctx.saved_tensors
        return grad * grad_output[..., None, None], None, None, None, None, None


def weighted_kernel_sum(z: torch.Tensor, weights: torch.Tensor, gamma: GammaLike,
                        neg_sq: torch.Tensor | None = None,
                        symmetric: bool = False,
                        extra_weights: torch.Tensor | None = None):
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
    extra_weights
        Optional second ``(n, n)`` weighting of the same kernel, summed in the same pass
        without gradient (e.g. the permutation null: one more multiply-add per entry instead
        of a second kernel evaluation).

    Returns
    -------
    Tensor of shape ``(...)``, equal to ``(gaussian_kernel(z, z, gamma) * W).sum((-1, -2))``;
    with ``extra_weights``, a pair ``(that, the same sum with extra_weights)``.
    """
    gammas, ladder = _kernel_scales(gamma, z[..., :1])
    weights = weights.detach().to(z.dtype)
    if not symmetric:
        weights = 0.5 * (weights + weights.T)
    if neg_sq is None:
        neg_sq = _neg_sq_distances(z)
    if extra_weights is not None:
        extra_weights = extra_weights.detach().to(z.dtype)
    value, extra = _WeightedKernelSum.apply(z, weights, neg_sq.detach(), gammas, ladder,
                                            extra_weights)
    return value if extra_weights is None else (value, extra)


def _paired_kernel(a: torch.Tensor, b: torch.Tensor, gamma: GammaLike) -> torch.Tensor:
    """Kernel between rows of ``a`` and ``b`` matched one to one: ``(..., d) -> (...)``."""
    diff = a - b
    sq = (diff * diff).sum(-1)
    if isinstance(gamma, int | float):
        return torch.exp(-float(gamma) * sq)
    gammas, ladder = _kernel_scales(gamma, sq)
    return _KernelOfSquaredDistances.apply(sq, gammas, ladder)
