"""Label-free strata of the latent space: mini-batch k-means updated as training goes.

The pooled MMD compares batches within each stratum (:func:`~scvi_mmd.mmd.pooled_weights`),
so that batches whose cell-type mixes differ are not pulled onto each other: the share of a
cluster in a batch is not a discrepancy, only a shift of the batches within it is.
"""

from __future__ import annotations

import torch
from torch import nn


class OnlineKMeans(nn.Module):
    """Mini-batch k-means of the latent codes (Sculley, 2010, "Web-scale k-means clustering").

    Each training step moves every centroid towards the mean of the codes assigned to it with
    the step size ``n_assigned / count`` (a running mean), with ``count`` capped at
    ``memory`` so that the centroids keep following the latent space as it changes. All on
    the device, without host synchronisation. The centroids are buffers, saved with the model.

    Parameters
    ----------
    n_clusters
        Number of clusters ``C``.
    n_latent
        Dimension of the codes.
    memory
        Cap of each centroid's count: about how many past cells a centroid averages over.
    """

    def __init__(self, n_clusters: int, n_latent: int, memory: int = 2000):
        super().__init__()
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 1:
            raise ValueError(f"`mmd_clusters` must be an integer >= 1, got {n_clusters!r}.")
        self.n_clusters, self.memory = n_clusters, float(memory)
        self.register_buffer("centroids", torch.zeros(n_clusters, n_latent))
        self.register_buffer("counts", torch.zeros(n_clusters))
        self.register_buffer("filled", torch.zeros(n_clusters, dtype=torch.bool))
        self._generator = None  # its own random stream: the global one stays scVI's

    @torch.no_grad()
    def assign(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest centroid of each code, shape ``(n,)`` (unfilled centroids are skipped)."""
        z = z.detach().to(self.centroids.dtype)
        d2 = torch.cdist(z, self.centroids).square()
        return d2.masked_fill(~self.filled[None, :], float("inf")).argmin(dim=1)

    @torch.no_grad()
    def update(self, z: torch.Tensor) -> None:
        """One mini-batch k-means step with codes ``z`` of shape ``(n, d)``."""
        z = z.detach().to(self.centroids.dtype)
        n = z.shape[0]
        # fill empty centroids with codes of this minibatch (the first step fills them all)
        empty = ~self.filled
        if self._generator is None:
            from scvi import settings

            self._generator = torch.Generator().manual_seed(settings.seed or 0)
        pick = torch.randperm(n, generator=self._generator)[: self.n_clusters].to(z.device)
        seeds = z[pick[torch.arange(self.n_clusters, device=z.device) % pick.numel()]]
        self.centroids.copy_(torch.where(empty[:, None], seeds, self.centroids))
        self.filled.fill_(True)
        label = self.assign(z)
        assigned = torch.zeros_like(self.counts).scatter_add_(0, label, torch.ones_like(
            label, dtype=self.counts.dtype))
        sums = torch.zeros_like(self.centroids).index_add_(0, label, z)
        counts = (self.counts + assigned).clamp_max(self.memory)
        step = (assigned / counts.clamp_min(1.0))[:, None]
        means = sums / assigned.clamp_min(1.0)[:, None]
        self.centroids.add_(step * (means - self.centroids))
        self.counts.copy_(counts)

    def extra_repr(self) -> str:
        return f"n_clusters={self.n_clusters}, memory={self.memory:g}"
