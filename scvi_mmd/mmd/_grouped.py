"""Grouped MMD estimators: the batch MMD term of a minibatch in one pass.

:func:`grouped_mmd_exact` and :func:`grouped_mmd_linear` take one tensor ``z`` of shape
``(..., n, d)``, an integer group code per cell (the batch) and a pairing of groups
(:mod:`._pairings`), and return MMD^2 per pair, reduced by sum or mean. They use only tensor
operations of shapes fixed by ``n`` and the number of groups: no Python loop over groups, no
data-dependent shapes and no host-device synchronisation, so they run the same on a GPU.
:func:`grouped_mmd` dispatches by estimator; :func:`grouped_mmd_conditional` compares batches
within each label (the class-conditional MMD) and averages over labels.
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
        raise ValueError(
            f"`groups` has {groups.shape[0]} entries but `z` has {z.shape[-2]} cells."
        )
    return groups


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


REDUCTIONS = ("sum", "mean")


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
