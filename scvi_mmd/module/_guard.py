"""A label-free guard against over-correction: the MMD compares only mutually matched cells.

Matching whole distributions moves a type one batch lacks onto other types. The guard keeps
only cells with a *mutual nearest neighbour* in the other batch(es) of the minibatch
(Haghverdi et al., 2018, Nature Biotechnology 36:421-427): a cell of a type the other batch
lacks has nearest neighbours there, but they have closer partners of their own type, so it
is left out and nothing pulls it; shared types match and are aligned. Matches come from the
detached codes of each minibatch, on the ``n x n`` distances the exact MMD already has.
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


def kth_nearest_per_group(dist: torch.Tensor, groups: torch.Tensor, member: torch.Tensor,
                          k: int) -> torch.Tensor:
    """``(n, G)`` distance from each cell to its ``k``-th nearest cell of each group (``inf``
    if fewer), from one ``(n, G, largest group)`` gather: about ``n x n`` reads for any ``G``.
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


def mutual_neighbours(z: torch.Tensor, groups: torch.Tensor, n_groups: int, n_neighbors: int,
                      neg_sq: torch.Tensor | None = None) -> torch.Tensor:
    """``keep`` ``(n, n_groups)``: whether cell ``i`` has a mutual neighbour in group ``h``.

    ``i`` (group ``g``) and ``j`` (group ``h != g``) are mutual when each is among the
    ``n_neighbors`` cells of the other's group nearest to it. ``z`` ``(n, d)`` (or ``(s, n, d)``,
    first sample); ``neg_sq``: ``-||z_i - z_j||^2`` if the caller has it.
    """
    z = z.detach().reshape(-1, *z.shape[-2:])[0]
    groups = groups.reshape(-1).long()
    n = z.shape[0]
    if neg_sq is None:
        dist = squared_distances(z, z)
    else:  # (a new tensor: the caller's is not changed below)
        dist = -neg_sq.detach().reshape(-1, *neg_sq.shape[-2:])[0]
    dist.fill_diagonal_(float("inf"))
    # (not one_hot: it checks the codes' range on the host, a sync on GPUs)
    member = groups[:, None] == torch.arange(n_groups, device=groups.device)  # (n, G)
    kth = kth_nearest_per_group(dist, groups, member, n_neighbors)
    near = dist <= kth.gather(1, groups[None, :].expand(n, n))  # j among i's k nearest of g_j
    mutual = near & near.T & (groups[:, None] != groups[None, :])
    return (mutual.to(z.dtype) @ member.to(z.dtype)) > 0


class MutualNeighbourGuard:
    """The guard: ``k = n_neighbors`` mutual nearest neighbours within a minibatch (small is
    strict; large lets more cells in, up to the plain MMD).
    """

    def __init__(self, n_neighbors: int = 3):
        self.n_neighbors = validate_guard_neighbors(n_neighbors)

    def keep_pooled(self, groups: torch.Tensor, neg_sq: torch.Tensor) -> torch.Tensor:
        """Whether each cell has a mutual neighbour in the other batches, pooled (``O(n^2)``)."""
        return mutual_neighbours_pooled(groups, neg_sq, self.n_neighbors)

    def keep(self, z: torch.Tensor, groups: torch.Tensor, n_groups: int,
             neg_sq: torch.Tensor | None = None) -> torch.Tensor:
        """``(n, n_groups)`` 0/1 weights: the cells each batch pair's MMD compares."""
        return mutual_neighbours(z, groups, n_groups, self.n_neighbors, neg_sq).to(z.dtype)

    def __repr__(self) -> str:
        return f"MutualNeighbourGuard(n_neighbors={self.n_neighbors})"


def mutual_neighbours_pooled(groups: torch.Tensor, neg_sq: torch.Tensor,
                             n_neighbors: int) -> torch.Tensor:
    """``(n,)``: whether each cell has a mutual ``n_neighbors``-nearest neighbour among the
    cells of all other batches, pooled; ``neg_sq`` ``(n, n)`` (or ``(s, n, n)``, first sample).
    Cells as far as the ``n_neighbors``-th nearest are all near (ties included, as in
    :func:`mutual_neighbours`). Cost ``O(n_neighbors n^2)``.
    """
    neg_sq, groups = neg_sq.detach().reshape(-1, *neg_sq.shape[-2:])[0], groups.reshape(-1)
    n = groups.shape[0]
    same = groups[:, None] == groups[None, :]
    k = min(n_neighbors, n - 1)
    if k < 1:
        return torch.zeros(n, dtype=torch.bool, device=groups.device)
    # the k-th largest score of each row: k - 1 rounds of removing one maximum
    score = neg_sq.masked_fill(same, float("-inf"))  # (cheaper than topk on small rows)
    for _ in range(k - 1):
        score.scatter_(1, score.argmax(1, keepdim=True), float("-inf"))
    # (a row with fewer than k cells of other batches: its k-th is -inf, all of them near)
    near = (neg_sq >= score.amax(1, keepdim=True)) & ~same
    return (near & near.T).any(dim=1)
