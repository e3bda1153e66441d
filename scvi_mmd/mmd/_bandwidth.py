"""The median heuristic for the kernel bandwidth of a minibatch."""

from __future__ import annotations

import torch

__all__ = ["median_heuristic_gamma"]


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
