"""Which groups (batches) are compared, and the cell weights that express their MMD^2.

A pairing is a long tensor ``partners`` ``(n_groups, n_partners)``: row ``k`` lists the groups
``l`` whose MMD^2 with ``k`` is added, padded with ``-1``. ``block`` (optional, per group):
pairs only within a block, never for a negative block.
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


def sequential_pairs(counts: torch.Tensor, rank: torch.Tensor | None = None,
                     block: torch.Tensor | None = None) -> torch.Tensor:
    """Each present group with the next present one in code (or ``rank``) order, ``(G, 1)``."""
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


def random_pairs(counts: torch.Tensor, generator: torch.Generator | None = None,
                 block: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`sequential_pairs` in a random order of the groups (drawn anew at each call)."""
    rank = torch.randperm(counts.shape[0], generator=generator, device="cpu")
    return sequential_pairs(counts, rank.to(counts.device), block)


def all_pairs(counts: torch.Tensor, block: torch.Tensor | None = None) -> torch.Tensor:
    """Every pair ``(k, l)``, ``k < l``, of present groups: ``partners`` ``(G, G)``."""
    n_groups = counts.shape[0]
    codes = torch.arange(n_groups, device=counts.device)
    present = _present(counts, block)
    keep = (codes[None, :] > codes[:, None]) & present[None, :] & present[:, None]
    return torch.where(keep & _same_block(block), codes[None, :], -1)


PAIRINGS = {"sequential": sequential_pairs, "random": random_pairs, "all": all_pairs}


def n_pairs(partners: torch.Tensor) -> torch.Tensor:
    """Number of pairs (a 0-d tensor; no host synchronisation)."""
    return (partners >= 0).sum()


def pair_weights(counts: torch.Tensor, partners: torch.Tensor,
                 unbiased: bool = False) -> torch.Tensor:
    """``W`` ``(G, G)`` with the sum over pairs of exact MMD^2 ``= sum_ij K_ij W[g_i, g_j]``.

    Per pair ``(k, l)``: ``-1 / (c_k c_l)`` at ``(k, l)`` and ``(l, k)``; the diagonal holds
    ``n_pairs(k) / c_k^2``, or ``n_pairs(k) / (c_k (c_k - 1))`` with ``unbiased`` (the caller
    leaves out ``i = j``; a pair with a group of fewer than two cells gets 0).
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


def kept_pair_weights(groups: torch.Tensor, n_groups: int, partners: torch.Tensor,
                      keep: torch.Tensor | None, unbiased: bool = False,
                      dtype: torch.dtype | None = None) -> torch.Tensor:
    """Cell weights ``W`` ``(n, n)``: ``sum_ij K_ij W_ij`` is the sum over pairs of the MMD^2
    between the *kept* cells of the two groups.

    ``keep[i, l]`` in ``[0, 1]`` (``(n, G)``, no gradient; ``None``: all) weighs cell ``i`` when
    its group meets group ``l``. With ``a``, ``b`` the kept weights of a pair's two groups,
    the pair's term is ``d'Kd``, ``d = a/|a| - b/|b|`` (eq. 5), the weighted MMD of Yan et al.
    (2017, CVPR) with weights per cell; so ``W = D D'``, one matrix product. ``unbiased``
    leaves out ``i = i'`` and divides the within terms by ``|a|^2 - sum(a^2)`` (eq. 3). A pair
    keeping no cell adds 0. Cost ``O(n^2 S)``, ``S = n_groups * n_partners``.
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


def pooled_weights(groups: torch.Tensor, strata: torch.Tensor | None = None,
                   ignore: torch.Tensor | None = None, dtype: torch.dtype | None = None,
                   unbiased: bool = True) -> torch.Tensor:
    """Cell-pair weights ``W`` ``(n, n)`` of the pooled MMD: every pair of batches in one pass.

    ``sum_ij K_ij W_ij = sum_{k<l} c_k c_l MMD_u^2(k, l) / Z``, ``Z = sum_{k<l} c_k c_l``: the
    mean of the unbiased MMD^2 (eq. 3) over the pairs of batches, each weighted by its cell
    pairs. Unbiased for that mean of the population MMD^2 (0 when batches do not differ).
    In closed form ``W_ij = (n - c_k) / (Z (c_k - 1))`` within batch ``k`` (``i != j``),
    ``-1 / Z`` across batches; batches of one cell are left out. ``unbiased=False``: the
    V-statistics (eq. 5), ``(n - c_k) / (Z c_k)`` within, diagonal included. The counts come
    from the ``n x n`` comparison of codes: ``O(n^2)`` whatever the number of batches, and
    every batch of two cells in the minibatch counts (well estimated with many batches).

    ``strata`` (e.g. latent clusters, codes ``>= 0``): batches compared within each stratum
    only, each (stratum, batch pair) weighted by its cell pairs. ``ignore``: cells left out
    (e.g. unmatched by the guard). All zeros when no stratum has two batches of two cells.
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
        same &= together
    # cells of my batch (and stratum), myself included: with the U-statistic a batch of one
    # cell has no within-batch estimate and is left out; a left-out cell, alone in its stratum,
    # has no other batch there and so weight 0 with either statistic
    count = same.sum(1).to(dtype)
    used = count >= 2 if unbiased else count >= 1
    used_dt = used.to(dtype)
    in_stratum = used_dt.sum().expand(n) if together is None else (together & used).sum(1)
    others = (in_stratum - count) * used_dt  # used cells of other batches in my stratum
    z = 0.5 * others.sum()
    within = others / (count - 1 if unbiased else count).clamp_min(1.0)
    pair = used_dt[:, None] * used_dt[None, :]
    if together is not None:
        pair.mul_(together)
    weights = torch.where(same, within[:, None], -1.0).mul_(pair)  # (in place: fewer buffers)
    if unbiased:
        weights.fill_diagonal_(0.0)
    return weights.div_(z.clamp_min(1.0))
