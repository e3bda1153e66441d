"""Which groups (batches) are compared, and the cell weights that express a pair's MMD.

A pairing is a long tensor ``partners`` of shape ``(n_groups, n_partners)``: row ``k`` lists
the groups ``l`` for which MMD^2(group k, group l) is added, padded with ``-1``
(:func:`sequential_pairs`, :func:`random_pairs`, :func:`all_pairs`). :func:`pair_weights`
writes every pair's MMD^2 as ``w^T K w`` with one weight vector per pair;
:func:`kept_pair_weights` restricts each pair to chosen cells (a weighted MMD, used by the
label-free guard of :mod:`scvi_mmd.module`).
"""

from __future__ import annotations

import torch

__all__ = [
    "group_counts",
    "sequential_pairs",
    "random_pairs",
    "all_pairs",
    "n_pairs",
    "pair_weights",
    "kept_pair_weights",
    "pooled_weights",
]


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


def n_pairs(partners: torch.Tensor) -> torch.Tensor:
    """Number of pairs in a pairing (a 0-d long tensor; no host synchronisation)."""
    return (partners >= 0).sum()


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


def pooled_weights(
    groups: torch.Tensor,
    strata: torch.Tensor | None = None,
    ignore: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    unbiased: bool = True,
) -> torch.Tensor:
    """Cell-pair weights ``W`` of the pooled MMD: every pair of batches, in one pass.

    ``sum_ij K_ij W_ij = sum_{k<l} c_k c_l MMD_u^2(k, l) / sum_{k<l} c_k c_l``: the mean of the
    unbiased MMD^2 (eq. 3 of Gretton et al., 2012) over all pairs of batches present, each
    weighted by its number of cell pairs ``c_k c_l``, so that every pair of cells of different
    batches counts once. Unbiased for that weighted mean of the population MMD^2, so ``>= 0``
    in expectation and 0 when the batches do not differ. In closed form,

        ``W_ij = (n - c_k) / (Z (c_k - 1))`` for ``i != j`` both of batch ``k``,
        ``W_ij = -1 / Z`` for ``i, j`` of different batches, ``W_ii = 0``,

    with ``n`` the cells used and ``Z = sum_{k<l} c_k c_l``. Batches with fewer than two cells
    (whose within-batch term has no estimate) are left out. With ``unbiased=False`` the pairs
    are V-statistics (eq. 5; biased, ``>= 0``): ``W_ij = (n - c_k) / (Z c_k)`` within batch
    ``k``, the diagonal included, and a batch of one cell counts. The counts come from the
    ``n x n`` comparison of codes, so the cost is ``O(n^2)`` whatever the number of batches (no
    ``B x B`` or ``n x B`` tensor), and every batch of two or more cells in the minibatch
    counts, which keeps the term well estimated when a minibatch holds a few cells of each of
    many batches.

    With ``strata`` (e.g. clusters of the latent space), batches are compared within each
    stratum only: the same sum over the (stratum, batch pair) combinations, each weighted by
    its cell pairs, so different mixes of strata across batches are not a discrepancy.

    Parameters
    ----------
    groups
        Batch code of each cell, shape ``(n,)``.
    strata
        Optional stratum code (``>= 0``) of each cell, shape ``(n,)``.
    ignore
        Optional boolean per cell: cells left out (e.g. unmatched by a guard).
    dtype
        Floating point type of ``W`` (default: the default dtype).
    unbiased
        U-statistics (default) or V-statistics.

    Returns
    -------
    Symmetric tensor of shape ``(n, n)``; all zeros when no stratum has two batches of two
    cells.
    """
    dtype = dtype or torch.get_default_dtype()
    groups = groups.reshape(-1)
    n = groups.shape[0]
    together = None  # same stratum; a left-out cell is a stratum of its own (it pairs with none)
    if strata is not None or ignore is not None:
        key = groups.new_zeros(n) if strata is None else strata.reshape(-1).to(groups.dtype)
        if ignore is not None:
            alone = -1 - torch.arange(n, device=groups.device, dtype=groups.dtype)
            key = torch.where(ignore.reshape(-1), alone, key)
        together = key[:, None] == key[None, :]
    same = groups[:, None] == groups[None, :]
    if together is not None:
        same = same & together
    # cells of my batch (and stratum), myself included: with the U-statistic a batch of one
    # cell has no within-batch estimate and is left out; a left-out cell, alone in its stratum,
    # has no other batch there and so weight 0 with either statistic
    count = same.sum(1).to(dtype)
    used_dt = (count >= 2 if unbiased else count >= 1).to(dtype)
    in_stratum = used_dt.sum().expand(n) if together is None else together.to(dtype) @ used_dt
    others = (in_stratum - count) * used_dt  # used cells of other batches in my stratum
    z = 0.5 * others.sum()
    within = others / (count - 1 if unbiased else count).clamp_min(1.0)
    pair = used_dt[:, None] * used_dt[None, :]
    if together is not None:
        pair = pair * together
    weights = torch.where(same, within[:, None], -1.0) * pair
    if unbiased:
        weights.fill_diagonal_(0.0)
    return weights / z.clamp_min(1.0)
