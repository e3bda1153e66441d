"""The median heuristic for the kernel bandwidth of a minibatch."""

from __future__ import annotations

import torch

__all__ = ["median_heuristic_gamma"]


def median_heuristic_gamma(z: torch.Tensor, groups: torch.Tensor | None = None,
                           ignore: int | None = None) -> torch.Tensor:
    """The median heuristic ``1 / (2 median ||z_i - z_j||^2)`` (Gretton et al., 2012, Sec. 8).

    The median is over the ``n`` pairs ``(i, i + n // 2 mod n)`` of the shuffled minibatch
    (``O(n d)``, detached). With ``groups`` (shape ``(n,)`` or ``(n, 1)``), over consecutive
    cells of the same group after a stable sort (the within-group spread a class-conditional
    MMD compares), leaving out group ``ignore``; the minibatch-wide median if no pair remains.
    Returns shape ``(...)`` for ``z`` of shape ``(..., n, d)``.
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
        groups, order = torch.sort(groups.reshape(-1), stable=True)
        z = z[..., order, :]
        across = groups[1:] != groups[:-1]
        if ignore is not None:
            across |= groups[1:] == ignore
        step = z[..., 1:, :] - z[..., :-1, :]
        within = (step * step).sum(-1)
        # NaN marks pairs across groups; nanmedian skips them without a host synchronisation
        within = within.masked_fill_(across, float("nan")).nanmedian(dim=-1).values
        median = torch.where(within.isnan(), median, within)
    return 0.5 / median.clamp_min(torch.finfo(z.dtype).tiny ** 0.5)
