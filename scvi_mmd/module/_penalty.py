"""The MMD penalty: which codes, which kernel, which estimator, which pairs, which cells.

:class:`MMDPenalty` computes the batch term ``L_mmd`` of a minibatch from its settings, chosen
once; :class:`~scvi_mmd.module.MMDVAE` only wires it to the ELBO and a weight. Its pieces:
the codes (posterior means or samples), the kernel (:func:`~scvi_mmd.mmd.median_heuristic_gamma`
or a fixed ``gamma``, times optional scales), the estimator and pairing
(:func:`~scvi_mmd.mmd.grouped_mmd`), and the cell selector: all cells, the label-free guard
(:class:`~scvi_mmd.module.MutualNeighbourGuard`) or the label-aware MMD
(:func:`~scvi_mmd.mmd.grouped_mmd_conditional`).
"""

from __future__ import annotations

import math
import numbers

import torch
from scvi.module._constants import MODULE_KEYS
from torch import nn

from scvi_mmd.mmd import PAIRINGS, grouped_mmd, grouped_mmd_conditional, median_heuristic_gamma
from scvi_mmd.module._conditioning import validate_weight_range
from scvi_mmd.module._guard import MutualNeighbourGuard, validate_guard_neighbors
from scvi_mmd.module._strength import validate_strength

MMD_MODES = ("normal", "unbiased", "fast")
PAIR_REDUCTIONS = ("mean", "sum")
MMD_LATENTS = ("mean", "sample")
MMD_LOSS_KEY = "mmd_loss"
MMD_NULL_KEY = "mmd_null"


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def validate_mmd_args(
    mmd_mode: str,
    mmd_weight: float,
    mmd_kernel_gamma: float | str,
    mmd_kernel_scales=None,
    mmd_pairs: str = "sequential",
    mmd_reference_size: int = 0,
    mmd_pair_reduction: str = "mean",
    mmd_latent: str = "mean",
    mmd_guard: bool | None = None,
    mmd_conditional: bool = False,
    mmd_guard_neighbors: int = 3,
    mmd_strength: float | None = None,
) -> None:
    """Raise a :class:`ValueError` for an MMD setting that cannot be trained with.

    Parameters
    ----------
    mmd_mode
        One of ``"normal"``, ``"unbiased"`` or ``"fast"``.
    mmd_weight
        Finite, ``>= 0``; or a range ``(low, high)`` with ``0 < low < high``.
    mmd_kernel_gamma
        Finite, ``> 0``, or ``"median"``.
    mmd_kernel_scales
        ``None`` or a non-empty sequence of finite numbers ``> 0``.
    mmd_pairs
        One of ``"sequential"``, ``"random"``, ``"all"``.
    mmd_reference_size
        An integer ``>= 0``.
    mmd_pair_reduction
        ``"mean"`` or ``"sum"``.
    mmd_latent
        ``"mean"`` or ``"sample"``.
    mmd_guard
        ``None``, ``True`` or ``False``; ``True`` needs an exact estimator and no
        ``mmd_conditional``.
    mmd_conditional
        Whether the label-aware MMD is used.
    mmd_guard_neighbors
        An integer ``>= 1`` (checked whether or not the guard is on).
    mmd_strength
        ``None`` or a number in ``[0, 1]``; not with a weight range.
    """
    validate_guard_neighbors(mmd_guard_neighbors)
    if mmd_strength is not None:
        validate_strength(mmd_strength)
        if isinstance(mmd_weight, tuple | list):
            raise ValueError("`mmd_strength` sets the weight during training: it cannot be "
                             "combined with a weight range.")
    if mmd_guard is not None and not isinstance(mmd_guard, bool):
        raise ValueError(f"`mmd_guard` must be True, False or None, got {mmd_guard!r}.")
    if mmd_guard and mmd_mode == "fast":
        raise ValueError("`mmd_guard=True` needs an exact estimator (`mmd_mode` 'normal' or "
                         "'unbiased'): the guard's matches need the n x n distances that the "
                         "fast estimator avoids.")
    if mmd_guard and mmd_conditional:
        raise ValueError("`mmd_guard=True` and `mmd_conditional=True` exclude each other: with "
                         "labels, the label-aware MMD already compares like with like.")
    if mmd_latent not in MMD_LATENTS:
        raise ValueError(f"`mmd_latent` must be one of {MMD_LATENTS}, got {mmd_latent!r}.")
    if mmd_pair_reduction not in PAIR_REDUCTIONS:
        raise ValueError(
            f"`mmd_pair_reduction` must be one of {PAIR_REDUCTIONS}, got {mmd_pair_reduction!r}."
        )
    if mmd_pairs not in PAIRINGS:
        raise ValueError(f"`mmd_pairs` must be one of {tuple(PAIRINGS)}, got {mmd_pairs!r}.")
    if mmd_kernel_scales is not None:
        scales = list(mmd_kernel_scales) if isinstance(mmd_kernel_scales, list | tuple) else None
        if not scales or not all(
            _is_number(s) and math.isfinite(s) and s > 0 for s in scales
        ):
            raise ValueError(
                "`mmd_kernel_scales` must be None or a non-empty list of finite numbers > 0, "
                f"got {mmd_kernel_scales!r}."
            )
    size = mmd_reference_size
    if (isinstance(size, bool) or not isinstance(size, numbers.Real) or not math.isfinite(size)
            or size != int(size) or size < 0):
        raise ValueError(
            f"`mmd_reference_size` must be an integer >= 0, got {mmd_reference_size!r}."
        )
    if mmd_mode not in MMD_MODES:
        raise ValueError(f"`mmd_mode` must be one of {MMD_MODES}, got {mmd_mode!r}.")
    if isinstance(mmd_weight, tuple | list):
        validate_weight_range(mmd_weight)
    elif not _is_number(mmd_weight):
        raise ValueError(
            f"`mmd_weight` must be a number or a range (low, high), got {mmd_weight!r}."
        )
    elif not math.isfinite(mmd_weight) or mmd_weight < 0:
        raise ValueError(f"`mmd_weight` must be finite and >= 0, got {mmd_weight!r}.")
    if mmd_kernel_gamma == "median":
        return
    if not _is_number(mmd_kernel_gamma):
        raise ValueError(
            f"`mmd_kernel_gamma` must be a number or 'median', got {mmd_kernel_gamma!r}."
        )
    if not math.isfinite(mmd_kernel_gamma) or mmd_kernel_gamma <= 0:
        raise ValueError(f"`mmd_kernel_gamma` must be finite and > 0, got {mmd_kernel_gamma!r}.")


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_padded(z: torch.Tensor, codes: torch.Tensor, pad_code: int):
    """All-gather ``z`` (with gradients) and group codes from every process.

    Minibatches can differ in size across processes, so each is padded to the largest with
    zeros in the group ``pad_code``.
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
    """The batch MMD term ``L_mmd`` of a minibatch (see :class:`~scvi_mmd.module.MMDVAE` for
    the meaning of each setting; they are checked by :func:`validate_mmd_args`).

    Parameters
    ----------
    n_batch, n_labels
        Numbers of batches and labels of the module.
    mode, kernel_gamma, kernel_scales, pairs, pair_reduction, latent
        ``mmd_mode``, ``mmd_kernel_gamma``, ``mmd_kernel_scales``, ``mmd_pairs``,
        ``mmd_pair_reduction``, ``mmd_latent``.
    conditional, unlabeled_code
        The label-aware MMD and the label code it ignores.
    guard, guard_neighbors
        The mutual-neighbour guard (``None``: on with the exact estimators, off with
        ``"fast"`` or ``conditional``) and its ``k``.
    ddp_gather
        Gather the codes of all processes before the MMD under DDP.
    """

    def __init__(
        self,
        n_batch: int,
        n_labels: int = 0,
        mode: str = "unbiased",
        kernel_gamma: float | str = "median",
        kernel_scales=None,
        pairs: str = "sequential",
        pair_reduction: str = "mean",
        latent: str = "mean",
        conditional: bool = False,
        unlabeled_code: int | None = None,
        guard: bool | None = None,
        guard_neighbors: int = 3,
        ddp_gather: bool = False,
    ):
        super().__init__()
        self.n_batch, self.n_labels = n_batch, n_labels
        self.mode, self.pairs, self.latent = mode, pairs, latent
        self.pair_reduction = pair_reduction
        self.kernel_gamma = kernel_gamma if kernel_gamma == "median" else float(kernel_gamma)
        self.kernel_scales = (None if kernel_scales is None
                              else [float(s) for s in kernel_scales])
        # moves with the module's .to(); not saved (the list above is the setting)
        self.register_buffer(
            "_kernel_scales",
            None if self.kernel_scales is None else torch.tensor(self.kernel_scales),
            persistent=False,
        )
        self.conditional = bool(conditional)
        self.unlabeled_code = unlabeled_code
        if guard is None:
            guard = mode != "fast" and not self.conditional
        # the cell selector: None (all cells) or an object whose ``keep(z, groups, n_groups,
        # neg_sq)`` gives each cell's (n, n_groups) weights in the pairs (the guard's matches)
        self.selector = MutualNeighbourGuard(guard_neighbors) if guard else None
        self.ddp_gather = bool(ddp_gather)
        self._null_generator = None

    def codes(self, inference_outputs: dict) -> torch.Tensor:
        """The latent codes the MMD compares: posterior means or samples (``latent``)."""
        if self.latent == "mean":
            return inference_outputs[MODULE_KEYS.QZ_KEY].loc
        return inference_outputs[MODULE_KEYS.Z_KEY]

    def gamma(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> float | torch.Tensor:
        """Kernel inverse bandwidth(s) for codes ``z``: a number, or ``(..., G)``.

        With ``"median"`` and ``labels`` (the label-aware MMD), the median is over pairs of
        cells with the same label (unlabeled cells left out).
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

    def forward(
        self, z: torch.Tensor, batch_index: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``L_mmd`` over the batch pairs of the minibatch (0 with fewer than two batches)."""
        if self.n_batch < 2:
            return z.new_zeros(())
        if self.ddp_gather and _world_size() > 1 and not self.conditional:
            z, batch_index = _gather_padded(z, batch_index.reshape(-1), pad_code=self.n_batch)
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
        value = grouped_mmd(
            z, batch_index, self.n_batch, mode=self.mode, gamma=self.gamma(z),
            partners=None if self.pairs == "sequential" else self.pairs,
            reduction=self.pair_reduction, keep=self._guard_keep(z, batch_index, self.n_batch),
        )
        return value if value.dim() == 0 else value.mean()

    @torch.no_grad()
    def null(
        self, z: torch.Tensor, batch_index: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``L_mmd`` with the batch labels permuted within the minibatch (no gradient).

        Its expectation is that of ``L_mmd`` when the batches do not differ (the permutation
        null), whatever the estimator, kernel and cell selection. The permutation comes from
        the penalty's own generator (seeded with ``scvi.settings.seed``), so the global random
        stream is the one scVI would see.
        """
        if self._null_generator is None:
            from scvi import settings

            self._null_generator = torch.Generator().manual_seed(settings.seed or 0)
        order = torch.randperm(batch_index.shape[0], generator=self._null_generator)
        return self(z.detach(), batch_index[order.to(batch_index.device)], labels)

    def between(self, z: torch.Tensor, groups: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        """MMD^2 between groups 0 and 1 of ``z`` (group 2 never paired): the reference term."""
        return grouped_mmd(z, groups, 3, mode=self.mode, gamma=self.gamma(z),
                           partners="sequential", block=block).mean()

    @property
    def guard(self) -> MutualNeighbourGuard | None:
        """The cell selector (the mutual-neighbour guard by default), or ``None``."""
        return self.selector

    def _guard_keep(self, z, batch_index, n_groups):
        """The selector's cell weights, as a function of the distances the exact MMD has."""
        if self.selector is None:
            return None
        return lambda neg_sq: self.selector.keep(z, batch_index, n_groups, neg_sq)

    def extra_repr(self) -> str:
        return (f"mode={self.mode}, kernel_gamma={self.kernel_gamma}, "
                f"kernel_scales={self.kernel_scales}, pairs={self.pairs}, "
                f"selector={self.selector}, conditional={self.conditional}")
