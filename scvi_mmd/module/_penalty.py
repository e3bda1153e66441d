"""The MMD penalty ``L_mmd`` of a minibatch: which codes, kernel, estimator, pairs and cells."""

from __future__ import annotations

import math

import torch
from torch import nn

from scvi_mmd._compat import QZ_KEY, Z_KEY
from scvi_mmd.mmd import (
    PAIRINGS,
    grouped_mmd,
    grouped_mmd_conditional,
    median_heuristic_gamma,
    pooled_weights,
    weighted_kernel_sum,
)
from scvi_mmd.mmd._kernels import _neg_sq_distances
from scvi_mmd.module._clusters import OnlineKMeans, shared_strata
from scvi_mmd.module._guard import MutualNeighbourGuard, validate_guard_neighbors

#: The choices of each setting, defined once (the command line reads them from here).
MMD_MODES = ("normal", "unbiased", "fast")
MMD_PAIRS = (*PAIRINGS, "pooled")
PAIR_REDUCTIONS = ("mean", "sum")
MMD_LATENTS = ("mean", "sample")


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}.")


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_padded(z: torch.Tensor, codes: torch.Tensor, pad_code: int):
    """All-gather ``z`` (with gradients) and codes, each process padded to the largest
    minibatch with zeros in group ``pad_code``.
    """
    from torch.distributed.nn.functional import all_gather

    dist = torch.distributed
    size = torch.tensor([z.shape[-2]], device=z.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    pad = int(max(s.item() for s in sizes)) - z.shape[-2]
    if pad:
        z = torch.cat([z, z.new_zeros(z.shape[:-2] + (pad, z.shape[-1]))], dim=-2)
        codes = torch.cat([codes, codes.new_full((pad,), pad_code)])
    all_codes = [torch.empty_like(codes) for _ in sizes]
    dist.all_gather(all_codes, codes)
    return torch.cat(all_gather(z), dim=-2), torch.cat(all_codes)


class MMDPenalty(nn.Module):
    """The batch MMD term ``L_mmd`` of a minibatch; each setting is checked here, once.

    The arguments are :class:`~scvi_mmd.module.MMDVAE`'s ``mmd_*`` settings (``mode`` is
    ``mmd_mode``, ...); ``n_batch``, ``n_labels`` and ``n_latent`` are the module's.
    """

    def __init__(self, n_batch: int, n_labels: int = 0, mode: str = "unbiased",
                 kernel_gamma: float | str = "median", kernel_scales=None,
                 pairs: str | None = None, pair_reduction: str = "mean", latent: str = "mean",
                 conditional: bool = False, unlabeled_code: int | None = None,
                 guard: bool | None = None, guard_neighbors: int = 3, ddp_gather: bool = False,
                 clusters: int | None = 0, n_latent: int = 10):
        super().__init__()
        _check_choice("mmd_mode", mode, MMD_MODES)
        if pairs is None:  # pooled where it applies: an exact estimator, no labels
            pairs = "pooled" if mode != "fast" and not conditional else "sequential"
        _check_choice("mmd_pairs", pairs, MMD_PAIRS)
        if clusters is None:
            from scvi_mmd._defaults import DEFAULT_CLUSTERS

            clusters = DEFAULT_CLUSTERS if pairs == "pooled" else 0
        _check_choice("mmd_pair_reduction", pair_reduction, PAIR_REDUCTIONS)
        _check_choice("mmd_latent", latent, MMD_LATENTS)
        if kernel_gamma != "median" and not (
                _is_number(kernel_gamma) and math.isfinite(kernel_gamma) and kernel_gamma > 0):
            raise ValueError("`mmd_kernel_gamma` must be a finite number > 0 or 'median', got "
                             f"{kernel_gamma!r}.")
        if kernel_scales is not None and not (
                isinstance(kernel_scales, list | tuple) and kernel_scales
                and all(_is_number(v) and math.isfinite(v) and v > 0 for v in kernel_scales)):
            raise ValueError("`mmd_kernel_scales` must be None or a non-empty list of finite "
                             f"numbers > 0, got {kernel_scales!r}.")
        if not isinstance(conditional, bool):
            raise ValueError(f"`mmd_conditional` must be True or False, got {conditional!r}.")
        if guard is not None and not isinstance(guard, bool):
            raise ValueError(f"`mmd_guard` must be True, False or None, got {guard!r}.")
        if guard and mode == "fast":
            raise ValueError("`mmd_guard=True` needs an exact estimator (`mmd_mode` 'normal' or "
                             "'unbiased'): the guard's matches need the n x n distances that "
                             "the fast estimator avoids.")
        if guard and conditional:
            raise ValueError("`mmd_guard=True` and `mmd_conditional=True` exclude each other: "
                             "with labels, the label-aware MMD already compares like with like.")
        if pairs == "pooled" and (mode == "fast" or conditional):
            raise ValueError("`mmd_pairs='pooled'` needs an exact estimator and no "
                             "`mmd_conditional`.")
        if clusters and pairs != "pooled":
            raise ValueError("`mmd_clusters` are strata of the pooled MMD: it needs "
                             "`mmd_pairs='pooled'`.")
        validate_guard_neighbors(guard_neighbors)
        self.n_batch, self.n_labels = n_batch, n_labels
        self.mode, self.pairs, self.latent = mode, pairs, latent
        self.pair_reduction = pair_reduction
        self.kernel_gamma = kernel_gamma if kernel_gamma == "median" else float(kernel_gamma)
        self.kernel_scales = (None if kernel_scales is None
                              else [float(s) for s in kernel_scales])
        # moves with the module's .to(); not saved (the list above is the setting)
        self.register_buffer("_kernel_scales", None if self.kernel_scales is None
                             else torch.tensor(self.kernel_scales), persistent=False)
        self.conditional, self.unlabeled_code = bool(conditional), unlabeled_code
        # with clusters, the default guard checks only the cells of unshared clusters (a guard
        # on all cells hid a 64-batch effect from the controller)
        self.guard_unshared_only = guard is None and bool(clusters)
        if guard is None:
            guard = mode != "fast" and not self.conditional
        # the cell selector: None (all cells) or the guard
        self.selector = MutualNeighbourGuard(guard_neighbors) if guard else None
        self.ddp_gather = bool(ddp_gather)
        self.clusters = OnlineKMeans(clusters, n_latent) if clusters else None
        self._null_generator = None
        self._frozen = False  # True while the null is computed: the clusters do not learn

    def codes(self, inference_outputs: dict) -> torch.Tensor:
        """The codes the MMD compares: posterior means or samples (``latent``)."""
        if self.latent == "mean":
            return inference_outputs[QZ_KEY].loc
        return inference_outputs[Z_KEY]

    def gamma(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> float | torch.Tensor:
        """Inverse bandwidth(s) for ``z``, a number or ``(..., G)``; with ``"median"`` and
        ``labels`` (or strata), over pairs of cells with the same label.
        """
        gamma = self.kernel_gamma
        if gamma == "median":
            gamma = median_heuristic_gamma(z, labels, ignore=self.unlabeled_code)
        if self.kernel_scales is None:
            return gamma
        scales = self._kernel_scales
        if scales.dtype != z.dtype:  # (e.g. under autocast)
            scales = scales.to(z.dtype)
        return torch.as_tensor(gamma, dtype=z.dtype, device=z.device)[..., None] * scales

    def forward(self, z: torch.Tensor, batch_index: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """``L_mmd`` of the minibatch (0 with fewer than two batches)."""
        if self.n_batch < 2:
            return z.new_zeros(())
        if self.ddp_gather and _world_size() > 1 and not self.conditional:
            z, batch_index = _gather_padded(z, batch_index.reshape(-1), pad_code=self.n_batch)
            if self.pairs == "pooled":
                return self.pooled(z, batch_index, padding=batch_index == self.n_batch)
            block = torch.zeros(self.n_batch + 1, dtype=torch.long, device=z.device)
            block[-1] = -1  # padding rows form a group that is never paired
            return grouped_mmd(
                z, batch_index, self.n_batch + 1, mode=self.mode, gamma=self.gamma(z),
                partners=self.pairs, block=block, reduction=self.pair_reduction,
                keep=self._guard_keep(z, batch_index, self.n_batch + 1),
            ).mean()
        if self.conditional:
            if labels is None:
                raise ValueError("The conditional MMD needs the labels of the cells.")
            return grouped_mmd_conditional(
                z, batch_index, self.n_batch, labels, max(self.n_labels, 1),
                unlabeled=self.unlabeled_code, mode=self.mode, gamma=self.gamma(z, labels),
                pairing=self.pairs,
                reduction="mean" if self.pair_reduction == "mean" else "label_mean",
            ).mean()
        if self.pairs == "pooled":
            return self.pooled(z, batch_index)
        value = grouped_mmd(
            z, batch_index, self.n_batch, mode=self.mode, gamma=self.gamma(z),
            partners=None if self.pairs == "sequential" else self.pairs,
            reduction=self.pair_reduction, keep=self._guard_keep(z, batch_index, self.n_batch),
        )
        return value if value.dim() == 0 else value.mean()

    def pooled(self, z: torch.Tensor, batch_index: torch.Tensor,
               padding: torch.Tensor | None = None, with_null: bool = False):
        """The pooled MMD (:func:`~scvi_mmd.mmd.pooled_weights`) within the shared latent
        clusters (if any), without the guard's unmatched cells and ``padding``.

        ``with_null``: also the null (:meth:`null`) from the same kernel pass, as a pair.
        """
        groups, unbiased = batch_index.reshape(-1).long(), self.mode == "unbiased"
        neg_sq = _neg_sq_distances(z)
        assigned = strata = None
        if self.clusters is not None and self.clusters.is_shared:
            # (dropped for the training once they split the batches: then all are compared)
            codes = z.detach() if z.dim() == 2 else z.detach()[0]
            learning = self.training and not self._frozen
            # (while learning, the assignment of the k-means step: one distance matrix)
            assigned = self.clusters.update(codes) if learning else self.clusters.assign(codes)
            k = self.clusters.n_clusters
            strata = shared_strata(groups, assigned, k)
            if learning:  # the cells of clusters no other batch shares in the minibatch
                self.clusters.observe_purity(strata == k)
            if not self.clusters.is_shared:  # decided at this step
                assigned = strata = None

        def weights_for(codes, strata):
            ignore, checked = padding, None
            if self.guard_unshared_only and strata is not None:
                checked = strata == self.clusters.n_clusters
            # (on the CPU, where a host read costs nothing, skipped unless the checked cells hold
            # two batches of 2 cells (1 for the V-statistic): else they form no pair anyway)
            if self.selector is not None and (checked is None or checked.device.type != "cpu" or
                                              (codes[checked].bincount() > unbiased).sum() >= 2):
                unmatched = ~self.selector.keep_pooled(codes, neg_sq)
                unmatched = unmatched if checked is None else unmatched & checked
                ignore = unmatched if ignore is None else ignore | unmatched
            return pooled_weights(codes, strata=strata, ignore=ignore, dtype=z.dtype,
                                  unbiased=unbiased)

        extra = None
        if with_null:  # the strata depend on the labels: the null's come from its own
            permuted = groups[self._null_order(groups)]
            extra = weights_for(permuted, None if assigned is None else shared_strata(
                permuted, assigned, self.clusters.n_clusters))
        weights = weights_for(groups, strata)
        # the bandwidth follows the distances within the strata (the scale of a cell type)
        result = weighted_kernel_sum(z, weights, self.gamma(z, strata),
                                     neg_sq=neg_sq, symmetric=True, extra_weights=extra)
        if with_null:
            return tuple(v if v.dim() == 0 else v.mean() for v in result)
        return result if result.dim() == 0 else result.mean()

    def term_and_null(self, z: torch.Tensor, batch_index: torch.Tensor,
                      labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_mmd, null)``: one kernel pass when pooled, else :meth:`forward`, :meth:`null`."""
        if self.pairs == "pooled" and self.n_batch >= 2 and not (
                self.ddp_gather and _world_size() > 1):
            return self.pooled(z, batch_index, with_null=True)
        return self(z, batch_index, labels), self.null(z, batch_index, labels)

    def _null_order(self, batch_index: torch.Tensor) -> torch.Tensor:
        """A permutation from the penalty's own generator (seeded with ``scvi.settings.seed``):
        the global random stream stays the one scVI sees.
        """
        if self._null_generator is None:
            from scvi import settings

            self._null_generator = torch.Generator().manual_seed(settings.seed or 0)
        order = torch.randperm(batch_index.shape[0], generator=self._null_generator)
        return order.to(batch_index.device)

    @torch.no_grad()
    def null(self, z: torch.Tensor, batch_index: torch.Tensor,
             labels: torch.Tensor | None = None) -> torch.Tensor:
        """``L_mmd`` with the batch labels permuted (no gradient): its expectation is
        ``L_mmd``'s when batches do not differ, for any estimator, kernel or cell selection.
        """
        order = self._null_order(batch_index)
        self._frozen = True
        try:
            return self(z.detach(), batch_index[order], labels)
        finally:
            self._frozen = False

    def between(self, z: torch.Tensor, groups: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        """MMD^2 between groups 0 and 1 of ``z`` (group 2 never paired): the reference term."""
        return grouped_mmd(z, groups, 3, mode=self.mode, gamma=self.gamma(z),
                           partners="sequential", block=block).mean()

    @property
    def guard_scope(self) -> str:
        """Cells the guard checks: ``"unshared clusters"`` (while used), ``"all"``, ``"none"``."""
        unshared = self.guard_unshared_only and getattr(self.clusters, "is_shared", False)
        return "none" if self.selector is None else "unshared clusters" if unshared else "all"

    def _guard_keep(self, z, batch_index, n_groups):
        """The guard's cell weights, as a function of the exact MMD's distances."""
        if self.selector is None:
            return None
        return lambda neg_sq: self.selector.keep(z, batch_index, n_groups, neg_sq)

    def extra_repr(self) -> str:
        return (f"mode={self.mode}, kernel_gamma={self.kernel_gamma}, "
                f"kernel_scales={self.kernel_scales}, pairs={self.pairs}, "
                f"selector={self.selector}, conditional={self.conditional}")
