"""Grouped MMD estimators: the batch term of a minibatch over pairs of groups, in one pass.

``z`` ``(..., n, d)`` (a leading sample dimension is allowed), ``groups`` the code of each cell
in ``[0, n_groups)`` (``(n,)`` or ``(n, 1)``), ``partners`` a pairing (:mod:`._pairings`;
default :func:`sequential_pairs`), ``gamma`` as in :func:`gaussian_kernel`. Shapes are fixed
by ``n`` and the number of groups: no loop over groups, no host synchronisation. Each returns
``(...)``, 0 when fewer than two groups are present.
"""

from __future__ import annotations

import torch

from ._kernels import GammaLike, _neg_sq_distances, _paired_kernel, weighted_kernel_sum
from ._pairings import PAIRINGS, group_counts, kept_pair_weights, n_pairs, sequential_pairs

__all__ = ["grouped_mmd_exact", "grouped_mmd_linear", "grouped_mmd", "grouped_mmd_conditional"]


def _check_grouped_inputs(z: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    if z.dim() < 2:
        raise ValueError(f"`z` must have shape (..., n_cells, n_latent), got {tuple(z.shape)}.")
    groups = groups.reshape(-1).long()
    if groups.shape[0] != z.shape[-2]:
        raise ValueError(f"`groups` has {groups.shape[0]} entries but `z` has {z.shape[-2]} "
                         "cells.")
    return groups


def grouped_mmd_exact(z: torch.Tensor, groups: torch.Tensor, n_groups: int, gamma: GammaLike = 1.0,
                      partners: torch.Tensor | None = None, unbiased: bool = False,
                      keep: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over pairs of exact MMD^2: :func:`mmd_exact`, or :func:`mmd_unbiased` if ``unbiased``.

    The minibatch's kernel is built once: ``sum_ij K_ij W_ij`` with ``W`` from
    :func:`kept_pair_weights`. Bias as the two-sample estimator (unbiased: a pair with a
    group of one cell adds 0). Cost ``O(n^2 d)`` time, ``O(n^2)`` memory, whatever the number
    of groups. ``keep``: ``(n, n_groups)`` weights of the kept cells of each pair, or a
    function of the detached ``-||z_i - z_j||^2`` returning them (the guard: no second
    distance matrix).
    """
    groups = _check_grouped_inputs(z, groups)
    neg_sq = _neg_sq_distances(z)
    if callable(keep):
        keep = keep(neg_sq)
    if partners is None:
        partners = sequential_pairs(group_counts(groups, n_groups, torch.long))
    cell_weights = kept_pair_weights(groups, n_groups, partners, keep, unbiased, z.dtype)
    return weighted_kernel_sum(z, cell_weights, gamma, neg_sq=neg_sq, symmetric=True)


def grouped_mmd_linear(z: torch.Tensor, groups: torch.Tensor, n_groups: int,
                       gamma: GammaLike = 1.0,
                       partners: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over pairs of linear-time MMD^2 (:func:`mmd_linear`).

    For a pair with ``c_k``, ``c_l`` cells, ``h = min(c_k, c_l) // 2``; the ``i``-th cell of
    group ``k`` (``i < h``, in ``z``'s order) is the ``x1`` of Lemma 14's ``i``-th term, its
    ``x2``, ``y1``, ``y2`` found by rank arithmetic on a stable sort of the codes. Unbiased;
    ``O(n d)`` per partner column, no ``n x n`` matrix; ``h = 0`` adds 0.
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


REDUCTIONS = ("sum", "mean")


def grouped_mmd(z: torch.Tensor, groups: torch.Tensor, n_groups: int, mode: str = "normal",
                gamma: GammaLike = 1.0, partners: torch.Tensor | str | None = None,
                block: torch.Tensor | None = None, reduction: str = "sum",
                keep: torch.Tensor | None = None) -> torch.Tensor:
    """Sum (or mean) over pairs of MMD^2, the estimator named by ``mode``.

    ``mode``: ``"normal"`` (V-statistic), ``"unbiased"`` (U-statistic) or ``"fast"``
    (linear). ``partners``: a pairing, or ``"sequential"`` (default), ``"random"`` or ``"all"``
    (with ``block`` per group). ``reduction``: ``"sum"`` (the original design; grows with the
    number of pairs) or ``"mean"`` over the pairs present (the pull on each cell then scales
    as ``1 / n`` like its share of the ELBO, for 2 or 20 batches). ``keep``: as in
    :func:`grouped_mmd_exact` (not with ``"fast"``).
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


def grouped_mmd_conditional(z: torch.Tensor, batches: torch.Tensor, n_batches: int,
                            labels: torch.Tensor, n_labels: int, unlabeled: int | None = None,
                            mode: str = "normal", gamma: GammaLike = 1.0,
                            pairing: str = "sequential",
                            reduction: str = "label_mean") -> torch.Tensor:
    """Class-conditional MMD: batches compared within each label, averaged over labels.

    The groups are the label-batch combinations; pairs (``pairing``) form among the batches
    present within a label; cells of label ``unlabeled`` are ignored; a label in one batch
    adds nothing. ``reduction``: ``"label_mean"``, the mean over labels with a pair of the
    sum over their pairs (the original design), or ``"mean"`` over all (label, batch pair)
    pairs. Estimators and costs as :func:`grouped_mmd`.
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
