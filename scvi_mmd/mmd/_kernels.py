"""Gaussian kernels, and the fused kernel sum of the exact estimators.

``gamma`` is a number, or several: a multi-scale kernel, the mean of the Gaussian kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["squared_distances", "gaussian_kernel", "weighted_kernel_sum"]


GammaLike = float | Sequence[float] | torch.Tensor


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``||x_i - y_j||^2``, shape ``(..., m, n)``, clamped at 0; centred on the mean of ``x``
    first, which keeps the matrix-product form accurate far from the origin.
    """
    shift = x.detach().mean(dim=-2, keepdim=True)
    x = x - shift
    y = y - shift
    x_sq = (x * x).sum(-1, keepdim=True)
    y_sq = (y * y).sum(-1, keepdim=True)
    d2 = x_sq + y_sq.transpose(-1, -2) - 2.0 * x @ y.transpose(-1, -2)
    return d2.clamp_min(0.0)


def _neg_scaled_sq_distances(x: torch.Tensor, y: torch.Tensor, gamma: float,
                             clamp: bool = True) -> torch.Tensor:
    """``-gamma ||x_i - y_j||^2`` as one matrix product of ``[x, |x|^2, 1]`` and
    ``[2 gamma y, -gamma, -gamma |y|^2]``, centred first; absolute error about
    ``eps * gamma * max |x|^2``; exact zeros on the diagonal of ``x`` with itself.
    """
    same = y is x
    shift = x.detach().mean(dim=-2, keepdim=True)
    x = x - shift
    x_sq = (x * x).sum(-1, keepdim=True)  # (x * x, not x.square(): pow is slow on CPU)
    if same:  # 2 g x.x' - g |x|^2 - g |x'|^2, with exact zeros on the diagonal
        neg_sq = (x @ x.transpose(-1, -2)).mul_(2.0 * gamma).sub_(gamma * x_sq)
        neg_sq.sub_(gamma * x_sq.transpose(-1, -2))  # (in place: one n x n buffer)
        neg_sq.diagonal(dim1=-2, dim2=-1).zero_()  # (the Gram form leaves ~eps ||x||^2)
    else:
        y = y - shift
        y_sq = (y * y).sum(-1, keepdim=True)
        left = torch.cat([x, x_sq, torch.ones_like(x_sq)], dim=-1)
        right = torch.cat([(2.0 * gamma) * y, torch.full_like(y_sq, -gamma), -gamma * y_sq],
                          dim=-1)
        neg_sq = left @ right.transpose(-1, -2)
    return neg_sq.clamp_(max=0.0) if clamp else neg_sq


def _expand_to(gamma: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A per-sample gamma, reshaped to broadcast over ``target``."""
    return gamma.reshape(gamma.shape + (1,) * (target.dim() - gamma.dim()))


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor, gamma: GammaLike = 1.0) -> torch.Tensor:
    """``exp(-gamma ||x_i - y_j||^2)``, shape ``(..., m, n)``, averaged over the ``G`` values of
    a multi-scale ``gamma`` (shape ``(..., G)`` or a list).
    """
    if isinstance(gamma, int | float):  # gamma folded into the matrix product
        return torch.exp(_neg_scaled_sq_distances(x, y, float(gamma)))
    neg_sq = _neg_scaled_sq_distances(x, y, 1.0)
    gamma = torch.as_tensor(gamma, dtype=neg_sq.dtype, device=neg_sq.device)
    scales = gamma.unbind(-1) if gamma.dim() else [gamma]
    return sum(torch.exp(neg_sq * _expand_to(g, neg_sq)) for g in scales) / len(scales)


def _scale_ladder(gamma: torch.Tensor) -> list[int] | None:
    """Exponents ``k_s`` with ``g_s = g_0 2^k_s`` (rising) for ``gamma`` ``(..., S)``, or ``None``.

    Then every scale's kernel follows from one ``exp`` by squaring, ``exp(2a) = exp(a)^2``
    (relative rounding ``2^k`` ulp). The ratios are read on the host: CPU tensors only.
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
    """``mean_s exp(g_s N)`` and ``grad_scale * mean_s g_s exp(g_s N)`` (unless ``None``) for
    a block ``N``; with a ``ladder``, ``gammas`` holds ``g_0`` alone.
    """
    need_grad = grad_scale is not None
    n_scales = len(gammas) if ladder is None else len(ladder)
    scale = 1.0 / n_scales
    if ladder is not None:
        g0 = gammas[0]
        # N <= 0, so k <= 1; rounding of the Gram form can give N slightly > 0. The clamp is
        # on k (in place) and, unlike clamping N, passes the gradient through.
        power = torch.mul(neg_sq, g0).exp_().clamp_(max=1.0)
        grad = power * (grad_scale * scale) if need_grad else None
        kernel = current = power  # (in place from here: fresh n x n buffers cost time)
        for previous, k in zip(ladder, ladder[1:]):
            for _ in range(k - previous):  # exp(2 a) = exp(a)^2 (a plain product: faster)
                current = current * current if current is power else current.mul_(current)
            kernel = kernel + current if kernel is current else kernel.add_(current)
            if need_grad:
                grad.add_(current, alpha=grad_scale * scale * 2.0**k)
        return kernel.mul_(scale), (grad.mul_(g0) if need_grad else None)
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
    """The gammas of :func:`_kernel_and_grad`, broadcasting over ``like``, and the ladder."""
    if isinstance(gamma, int | float):
        return [float(gamma)], None
    gamma = torch.as_tensor(gamma, dtype=like.dtype, device=like.device).detach()
    ladder = _scale_ladder(gamma)
    scales = [gamma[..., 0]] if ladder else gamma.unbind(-1) if gamma.dim() else [gamma]
    return [_expand_to(g, like) for g in scales], ladder


class _KernelOfSquaredDistances(torch.autograd.Function):
    """``mean_s exp(-g_s D)`` with its gradient kept from the forward pass: one node."""

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
    """``-||z_i - z_j||^2`` of ``z`` with itself, detached and not clamped."""
    with torch.no_grad():
        z = z.detach()
        return _neg_scaled_sq_distances(z, z, 1.0, clamp=False)


class _WeightedKernelSum(torch.autograd.Function):
    """``sum_ij W_ij mean_s exp(-g_s D_ij)`` and its gradient in ``z``, in one pass.

    With ``B_ij = W_ij mean_s g_s exp(-g_s D_ij)`` (``W`` symmetric, ``g`` without gradient),
    ``d/dz_i = -4 (rowsum(B)_i z_i - (B z)_i)``, accumulated by row blocks of ~1 MB (cache
    sized) and kept for the backward pass: an ``n x d`` matrix, not autograd's ``n x n`` ones.
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
                        neg_sq: torch.Tensor | None = None, symmetric: bool = False,
                        extra_weights: torch.Tensor | None = None):
    """``sum_ij W_ij k(z_i, z_j)``, ``k`` the (multi-scale) Gaussian kernel, fused.

    Equals ``(gaussian_kernel(z, z, gamma) * W).sum((-1, -2))`` for ``z`` ``(..., n, d)``
    (gradients in closed form; none to ``W`` or ``gamma``). ``neg_sq``: the detached
    ``-||z_i - z_j||^2`` if the caller has it. ``symmetric=False`` uses ``(W + W^T) / 2``.
    ``extra_weights``: a second ``(n, n)`` weighting summed in the same pass without gradient
    (the permutation null), returned as a pair ``(value, extra)``.
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
