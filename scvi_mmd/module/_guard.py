"""A label-free guard against over-correction: the MMD compares only mutually matched cells.

The plain MMD matches the whole latent distributions of two batches. When one batch holds a
cell type the other lacks, the only way to match them is to move that type onto other types:
over-correction. The guard keeps, for each pair of batches ``(k, l)`` in a minibatch, only the
cells of ``k`` that are *mutual nearest neighbours* of some cell of ``l`` and vice versa
(Haghverdi et al., 2018, "Batch effects in single-cell RNA-sequencing data are corrected by
matching mutual nearest neighbors", Nature Biotechnology 36:421-427), and the MMD of the pair
compares those cells only (a weighted MMD, :func:`scvi_mmd.mmd.kept_pair_weights`).

Why this guards: a cell of a type that batch ``l`` lacks has nearest neighbours in ``l`` (cells
of the most similar type), but those cells have closer partners in ``k`` (their own type), so
the match is not mutual and the cell is left out of the pair: nothing pulls it. Cells of
shared types find each other and are aligned as by the plain MMD. The matches are right
before the batches are aligned when the batch effect is small next to the distances between
types (the assumption of Haghverdi et al.; a shift of one batch does change which cells of the
other batch are nearest), and they get cleaner as the alignment proceeds. The matches are
recomputed on every minibatch from the detached latent codes (no gradient flows through
them): one ``k``-smallest selection per batch over the ``n x n`` distances, which the exact
MMD computes anyway and hands over (``O(n^2 d)`` only when called on its own).
"""

from __future__ import annotations

import math
import numbers

import torch

from scvi_mmd.mmd import squared_distances


def validate_guard_neighbors(value) -> int:
    """Return ``value`` as an int ``>= 1``, or raise a :class:`ValueError`."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value != int(value) or value < 1):
        raise ValueError(f"`mmd_guard_neighbors` must be an integer >= 1, got {value!r}.")
    return int(value)


def kth_nearest_per_group(
    dist: torch.Tensor, groups: torch.Tensor, member: torch.Tensor, k: int
) -> torch.Tensor:
    """``(n, G)`` distance from each cell to its ``k``-th nearest cell of each group.

    ``inf`` where a group has fewer than ``k`` cells at a finite distance. The columns of
    ``dist`` are gathered group by group into one ``(n, G, width)`` block, ``width`` the size
    of the largest group (padded with ``inf``), so the selection reads about ``n x n``
    distances whatever the number of groups, not ``G`` masked copies of them.
    """
    n, n_groups = member.shape
    counts = member.sum(0)
    order = torch.argsort(groups, stable=True)  # cells sorted by group
    starts = torch.cumsum(counts, 0) - counts
    width = int(counts.max())  # one scalar to the host: the block's shape
    if width < k:
        return dist.new_full((n, n_groups), float("inf"))
    slot = torch.arange(width, device=dist.device)
    columns = order[(starts[:, None] + slot[None, :]).clamp(max=n - 1)]  # (G, width)
    block = dist[:, columns].masked_fill(~(slot[None, :] < counts[:, None])[None], float("inf"))
    return block.topk(k, dim=-1, largest=False).values[..., -1]


def mutual_neighbours(
    z: torch.Tensor,
    groups: torch.Tensor,
    n_groups: int,
    n_neighbors: int,
    neg_sq: torch.Tensor | None = None,
) -> torch.Tensor:
    """Which cells have a mutual ``n_neighbors``-nearest neighbour in each other group.

    Cell ``i`` (group ``g``) and cell ``j`` (group ``h != g``) are mutual neighbours when ``j``
    is among the ``n_neighbors`` cells of group ``h`` nearest to ``i`` and ``i`` among the
    ``n_neighbors`` cells of group ``g`` nearest to ``j``.

    Parameters
    ----------
    z
        Latent codes, shape ``(n, d)`` (or ``(s, n, d)``: the first sample is used).
    groups
        Group (batch) code of each cell in ``[0, n_groups)``, shape ``(n,)`` or ``(n, 1)``.
    n_groups
        Number of groups.
    n_neighbors
        ``k`` of the ``k``-nearest neighbours.
    neg_sq
        ``-||z_i - z_j||^2`` if the caller has it (shape ``(n, n)``, or ``(s, n, n)``: the
        first sample is used); computed from ``z`` otherwise.

    Returns
    -------
    Boolean tensor ``keep`` of shape ``(n, n_groups)``: ``keep[i, h]`` is true when cell ``i``
    has a mutual neighbour in group ``h`` (always false for its own group).
    """
    z = z.detach()
    while z.dim() > 2:
        z = z[0]
    groups = groups.reshape(-1).long()
    n = z.shape[0]
    if neg_sq is None:
        dist = squared_distances(z, z)
    else:
        while neg_sq.dim() > 2:
            neg_sq = neg_sq[0]
        dist = -neg_sq.detach()  # a new tensor: the caller's is not changed below
    dist.fill_diagonal_(float("inf"))
    # (not one_hot: it checks the codes' range on the host, a sync on GPUs)
    member = groups[:, None] == torch.arange(n_groups, device=groups.device)  # (n, G)
    kth = kth_nearest_per_group(dist, groups, member, n_neighbors)
    near = dist <= kth.gather(1, groups[None, :].expand(n, n))  # j among i's k nearest of g_j
    mutual = near & near.T & (groups[:, None] != groups[None, :])
    return (mutual.to(z.dtype) @ member.to(z.dtype)) > 0


class MutualNeighbourGuard:
    """The guard's settings and its cell weights for :func:`scvi_mmd.mmd.grouped_mmd`.

    Parameters
    ----------
    n_neighbors
        ``k`` of the mutual ``k``-nearest neighbours within a minibatch. Small ``k`` is
        strict (a cell is kept only if it is among the few closest of the other batch);
        large ``k`` lets more cells in, up to the plain MMD.
    """

    def __init__(self, n_neighbors: int = 3):
        self.n_neighbors = validate_guard_neighbors(n_neighbors)

    def keep_pooled(self, groups: torch.Tensor, neg_sq: torch.Tensor) -> torch.Tensor:
        """Whether each cell has a mutual neighbour among the cells of the *other* batches.

        The guard of the pooled discrepancy: the other batches are one pool, so the cost is
        ``O(n^2)`` whatever the number of batches (:func:`mutual_neighbours_pooled`).
        """
        return mutual_neighbours_pooled(groups, neg_sq, self.n_neighbors)

    def keep(
        self,
        z: torch.Tensor,
        groups: torch.Tensor,
        n_groups: int,
        neg_sq: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(n, n_groups)`` 0/1 weights: the cells each batch pair's MMD compares.

        ``neg_sq``: the minibatch's ``-||z_i - z_j||^2``, if already computed (as
        :func:`scvi_mmd.mmd.grouped_mmd_exact` passes it to a callable ``keep``).
        """
        return mutual_neighbours(z, groups, n_groups, self.n_neighbors, neg_sq).to(z.dtype)

    def __repr__(self) -> str:
        return f"MutualNeighbourGuard(n_neighbors={self.n_neighbors})"


def mutual_neighbours_pooled(groups: torch.Tensor, neg_sq: torch.Tensor,
                             n_neighbors: int) -> torch.Tensor:
    """Which cells have a mutual ``n_neighbors``-nearest neighbour in another batch.

    Cells ``i`` and ``j`` of different batches are mutual neighbours when ``j`` is among the
    ``n_neighbors`` cells of other batches than ``i``'s nearest to ``i``, and ``i`` among those
    nearest to ``j`` (Haghverdi et al., 2018, with all other batches pooled).

    Parameters
    ----------
    groups
        Batch code of each cell, shape ``(n,)``.
    neg_sq
        ``-||z_i - z_j||^2``, shape ``(n, n)`` (or ``(s, n, n)``: the first sample is used).
    n_neighbors
        ``k``.

    Returns
    -------
    Boolean tensor of shape ``(n,)``.
    """
    while neg_sq.dim() > 2:
        neg_sq = neg_sq[0]
    groups = groups.reshape(-1)
    n = groups.shape[0]
    other = groups[:, None] != groups[None, :]
    k = min(n_neighbors, n - 1)
    if k < 1:
        return torch.zeros(n, dtype=torch.bool, device=groups.device)
    score = neg_sq.detach().masked_fill(~other, float("-inf"))
    top = score.topk(k, dim=-1).indices  # (n, k): nearest cells of other batches
    near = torch.zeros(n, n, dtype=torch.bool, device=groups.device)
    near.scatter_(1, top, True)
    near = near & other  # a row with fewer than k other-batch cells picked some of its own
    return (near & near.T).any(dim=1)
