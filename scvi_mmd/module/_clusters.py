"""Label-free strata of the latent space: mini-batch k-means updated as training goes.

The pooled MMD compares batches within the clusters several batches share, so a cluster's
share in a batch is not a discrepancy, only a shift of the batches within it.
"""

from __future__ import annotations

import torch
from torch import nn


class OnlineKMeans(nn.Module):
    """Mini-batch k-means of the latent codes (Sculley, 2010), on the device, no host sync.

    Each step moves each of ``n_clusters`` centroids towards its codes' mean by ``n_assigned
    / count``, the count capped at ``memory`` (about how many past cells a centroid averages)
    so the centroids follow the changing latent space. Buffers: saved with the model.
    """

    def __init__(self, n_clusters: int, n_latent: int, memory: int = 2000):
        super().__init__()
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 1:
            raise ValueError(f"`mmd_clusters` must be an integer >= 1, got {n_clusters!r}.")
        self.n_clusters, self.memory = n_clusters, float(memory)
        self.register_buffer("centroids", torch.zeros(n_clusters, n_latent))
        self.register_buffer("counts", torch.zeros(n_clusters))
        self.register_buffer("filled", torch.zeros(n_clusters, dtype=torch.bool))
        # whether the clusters are shared by the batches (decided early in training, then kept)
        self.register_buffer("shared", torch.ones((), dtype=torch.bool))
        self.register_buffer("pure_share", torch.zeros(()))
        self._decide_at, self._steps, self._pure, self._seen = 0, 0, 0.0, 0.0
        self._seeded, self._shared = False, None  # host copies: no device read per step
        self._generator = None  # its own random stream: the global one stays scVI's

    @torch.no_grad()
    def assign(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest centroid of each code, shape ``(n,)`` (unfilled centroids are skipped)."""
        z = z.detach().to(self.centroids.dtype)
        centroids = self.centroids
        # ||z - c||^2 less ||z||^2 (the same for every centroid of a code): one matrix product
        d2 = torch.addmm((centroids * centroids).sum(1), z, centroids.T, alpha=-2.0)
        return d2.masked_fill(~self.filled[None, :], float("inf")).argmin(dim=1)

    @torch.no_grad()
    def update(self, z: torch.Tensor) -> torch.Tensor:
        """One k-means step on codes ``(n, d)``; returns the assignment it used."""
        z = z.detach().to(self.centroids.dtype)
        if not self._seeded:  # the first step: k-means++ seeding (once, on the host)
            self._seeded = bool(self.filled.all())  # (a loaded model has its centroids)
            if not self._seeded:
                self._seed(z)
                self._seeded = True
        label = self.assign(z)
        assigned = torch.zeros_like(self.counts).scatter_add_(0, label, torch.ones_like(
            label, dtype=self.counts.dtype))
        sums = torch.zeros_like(self.centroids).index_add_(0, label, z)
        counts = (self.counts + assigned).clamp_max(self.memory)
        step = (assigned / counts.clamp_min(1.0))[:, None]
        means = sums / assigned.clamp_min(1.0)[:, None]
        self.centroids.add_(step * (means - self.centroids))
        self.counts.copy_(counts)
        return label

    def start(self, decide_at: int) -> None:
        """A training starts: :meth:`observe_purity` decides after ``decide_at`` steps."""
        self._decide_at, self._steps, self._pure, self._seen = int(decide_at), 0, 0.0, 0.0
        self.shared.fill_(True)
        self._shared = True

    def observe_purity(self, pure: torch.Tensor) -> None:
        """Count the step's cells whose cluster holds no other batch; if that is most cells
        over the first ``decide_at`` steps, the clusters split the batches (an effect larger
        than the differences between types) and ``shared`` becomes ``False`` for the training.
        """
        if self._steps >= self._decide_at:
            return
        self._pure = self._pure + pure.sum()
        self._seen += pure.numel()
        self._steps += 1
        if self._steps == self._decide_at:
            share = float(self._pure) / max(self._seen, 1.0)
            self.pure_share.fill_(share)
            self.shared.fill_(share < 0.5)
            self._shared = share < 0.5

    def _load_from_state_dict(self, *args, **kwargs):  # (host copies: read again when needed)
        super()._load_from_state_dict(*args, **kwargs)
        self._seeded, self._shared = False, None

    @property
    def is_shared(self) -> bool:
        """``shared`` as a Python bool (read from the device once)."""
        if self._shared is None:
            self._shared = bool(self.shared)
        return self._shared

    def _seed(self, z: torch.Tensor) -> None:
        """k-means++ seeds (Arthur & Vassilvitskii, 2007) from the codes of a minibatch."""
        if self._generator is None:
            from scvi import settings

            self._generator = torch.Generator().manual_seed(settings.seed or 0)
        codes = z.detach().cpu().double()
        chosen = [int(torch.randint(codes.shape[0], (1,), generator=self._generator))]
        nearest = (codes - codes[chosen[0]]).square().sum(1)
        for _ in range(1, self.n_clusters):
            if float(nearest.sum()) <= 0:  # fewer distinct codes than clusters
                chosen.append(chosen[-1])
                continue
            pick = int(torch.multinomial(nearest, 1, generator=self._generator))
            chosen.append(pick)
            nearest = torch.minimum(nearest, (codes - codes[pick]).square().sum(1))
        self.centroids.copy_(z.detach()[chosen].to(self.centroids.dtype))
        self.filled.fill_(True)

    def extra_repr(self) -> str:
        return f"n_clusters={self.n_clusters}, memory={self.memory:g}"


def shared_strata(groups: torch.Tensor, clusters: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """Strata of the pooled MMD: clusters with cells of two batches or more in the minibatch,
    and stratum ``n_clusters`` for the other cells.

    A cluster one batch alone has is a type only it has, or a type the batch effect split;
    its cells are compared with such cells of other batches: the second is corrected, the
    first left alone. ``O(n)``: shared when its cells' lowest and highest batch differ.
    """
    groups, clusters = groups.reshape(-1), clusters.reshape(-1).long()
    lowest = groups.new_full((n_clusters,), torch.iinfo(groups.dtype).max)
    lowest = lowest.scatter_reduce_(0, clusters, groups, "amin")
    highest = groups.new_full((n_clusters,), -1).scatter_reduce_(0, clusters, groups, "amax")
    return torch.where((lowest != highest)[clusters], clusters, n_clusters)
