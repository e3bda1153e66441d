"""The MMD-penalised variational auto-encoder module."""

from __future__ import annotations

import math
import numbers

import torch
from scvi import REGISTRY_KEYS
from scvi.module import VAE
from scvi.module._constants import MODULE_KEYS
from scvi.module.base import LossOutput
from scvi.utils import unsupported_if_adata_minified

from scvi_mmd._defaults import DEFAULT_KERNEL_GAMMA, DEFAULT_KERNEL_SCALES, DEFAULT_MODE
from scvi_mmd.mmd import PAIRINGS, grouped_mmd, grouped_mmd_conditional, median_heuristic_gamma
from scvi_mmd.module._conditioning import WeightConditioning, validate_weight_range
from scvi_mmd.module._guard import MutualNeighbourGuard, validate_guard_neighbors
from scvi_mmd.module._strength import StrengthController, validate_strength

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


class MMDVAE(VAE):
    """Variational auto-encoder with an MMD penalty between the latent codes of batches.

    The loss of a minibatch is scVI's negative ELBO plus ``mmd_weight * L_mmd``, where
    ``L_mmd`` is the mean (or sum) over pairs of batches present in the minibatch of MMD^2
    between their latent codes (posterior means by default, ``mmd_latent``; see
    :func:`scvi_mmd.mmd.grouped_mmd`).

    Parameters
    ----------
    n_input
        Number of input features.
    n_batch
        Number of batches; the MMD term needs at least two.
    mmd_mode
        ``"unbiased"`` (default): quadratic-time U-statistic (eq. 3 of Gretton et al., 2012;
        no ``O(1/n)`` floor); ``"normal"``: exact quadratic-time MMD^2 (biased, eq. 5; the
        original design); ``"fast"``: linear-time estimate (unbiased, Lemma 14).
    mmd_weight
        Weight of the MMD term in the loss; ``0`` gives :class:`~scvi.module.VAE` exactly. A
        range ``(low, high)`` trains one loss-conditional model over the whole range
        (:class:`~scvi_mmd.module.WeightConditioning`): each training minibatch draws a weight
        log-uniformly in the range, the encoder and decoder are conditioned on it, and the
        loss uses it.
    mmd_kernel_gamma
        Inverse bandwidth ``gamma`` of the Gaussian kernel ``exp(-gamma ||x - y||^2)``, or
        ``"median"`` (default): ``1 / (2 median ||z_i - z_j||^2)`` of each minibatch
        (detached), which follows the scale of the latent space; with ``mmd_conditional`` the
        median is over pairs of cells with the same label.
    mmd_kernel_scales
        Multipliers of ``gamma``: the kernel is the mean of the Gaussian kernels at
        ``gamma * s`` for each ``s`` (a multi-scale kernel; default ``(0.25, 0.5, 1, 2, 4)``).
        ``None``: one scale.
    mmd_pairs
        Which batch pairs enter ``L_mmd``: ``"sequential"`` (each present batch with the next
        present one, in code order; the original design), ``"random"`` (the same in a random
        order of batches, drawn at each step) or ``"all"`` (every pair of present batches).
    mmd_pair_reduction
        ``"mean"``: ``L_mmd`` is the mean over the pairs present, so a weight means the same
        whatever the number of batches and the pairing; ``"sum"``: the sum over pairs (the
        original design; it grows with the number of batches).
    mmd_latent
        Which latent codes the MMD compares: ``"mean"`` (default), the posterior means
        ``qz.loc`` (the representation users get from ``get_latent_representation``); or
        ``"sample"``, the sampled ``z`` (the original design). With samples, a large weight
        can be met by shrinking the spread of the means below the posterior noise, so that
        noisy samples of different batches overlap while their means stay apart: batch mixing
        then *falls* as the weight rises (measured in benchmarks/README.md).
    mmd_conditional
        If ``True``, the MMD compares batches *within each label* (cell type) and averages over
        labels (:func:`scvi_mmd.mmd.grouped_mmd_conditional`), so batches with different
        cell-type compositions are not pulled onto each other. Needs ``n_labels >= 1``.
    mmd_unlabeled_code
        Label code of unlabeled cells, ignored by the conditional MMD; ``None``: all labelled.
    mmd_guard
        The label-free guard against over-correction
        (:class:`~scvi_mmd.module.MutualNeighbourGuard`): each batch pair's MMD compares only
        the cells that have a mutual nearest neighbour in the other batch of the minibatch
        (Haghverdi et al., 2018), so a cell type that one batch lacks is not pulled onto other
        types. ``None`` (default): on with the exact estimators, off with ``"fast"`` (it needs
        the ``n x n`` distances) and with ``mmd_conditional`` (labels win).
    mmd_guard_neighbors
        ``k`` of the guard's mutual ``k``-nearest neighbours within a minibatch.
    mmd_strength
        ``None``: train at ``mmd_weight``. A number ``s`` in ``[0, 1]``: the weight is set
        during training by a :class:`~scvi_mmd.module.StrengthController`, so that the share
        ``s`` of the batches' latent discrepancy (measured at weight 0 in a warm-up, against
        the permutation null) is removed; ``mmd_weight`` is then ignored. In training, the
        loss's ``extra_metrics`` also hold ``mmd_null``, the MMD term with the batch labels
        permuted within the minibatch (computed without gradient).
    mmd_ddp_gather
        Under distributed data parallel training (several processes), gather the latent codes
        of all processes' minibatches (``torch.distributed.nn.all_gather``, differentiable;
        not with ``mmd_conditional``)
        before computing the MMD, so pairs see ``world_size`` times more cells. ``False``:
        each process computes the MMD on its own minibatch. No effect in a single process.
    mmd_reference_size
        Room for a fixed sample of reference latent codes (posterior means), stored with the
        model by :meth:`~scvi_mmd.SCVIMMD.set_reference_sample`. Once stored, cells of batches
        added later (a query mapped with ``load_query_data``) are also pulled towards that
        sample: ``L_mmd`` gains the MMD between the minibatch's query cells and an equal-sized
        random subset of the sample. ``0``: no sample.
    **kwargs
        Keyword arguments for :class:`~scvi.module.VAE`.
    """

    def __init__(
        self,
        n_input: int,
        n_batch: int = 0,
        mmd_mode: str = DEFAULT_MODE,
        mmd_weight: float = 1.0,
        mmd_kernel_gamma: float | str = DEFAULT_KERNEL_GAMMA,
        mmd_kernel_scales: list[float] | None = DEFAULT_KERNEL_SCALES,
        mmd_pairs: str = "sequential",
        mmd_conditional: bool = False,
        mmd_unlabeled_code: int | None = None,
        mmd_ddp_gather: bool = False,
        mmd_reference_size: int = 0,
        mmd_pair_reduction: str = "mean",
        mmd_latent: str = "mean",
        mmd_guard: bool | None = None,
        mmd_guard_neighbors: int = 3,
        mmd_strength: float | None = None,
        **kwargs,
    ):
        validate_mmd_args(mmd_mode, mmd_weight, mmd_kernel_gamma, mmd_kernel_scales, mmd_pairs,
                          mmd_reference_size, mmd_pair_reduction, mmd_latent, mmd_guard,
                          mmd_conditional, mmd_guard_neighbors, mmd_strength)
        super().__init__(n_input=n_input, n_batch=n_batch, **kwargs)
        self.mmd_mode = mmd_mode
        self.mmd_pair_reduction = mmd_pair_reduction
        self.mmd_latent = mmd_latent
        if isinstance(mmd_weight, tuple | list):
            self.mmd_weight = validate_weight_range(mmd_weight)
            self.weight_conditioning = WeightConditioning(
                *self.mmd_weight, n_hidden=kwargs.get("n_hidden", 128)
            )
            self.weight_conditioning.attach(self)
        else:
            self.mmd_weight = float(mmd_weight)
            self.weight_conditioning = None
        self.mmd_kernel_gamma = (
            mmd_kernel_gamma if mmd_kernel_gamma == "median" else float(mmd_kernel_gamma)
        )
        self.mmd_kernel_scales = (
            None if mmd_kernel_scales is None else [float(s) for s in mmd_kernel_scales]
        )
        # moves with the module's .to(); not saved (the list above is the setting)
        self.register_buffer(
            "_kernel_scales",
            None if self.mmd_kernel_scales is None else torch.tensor(self.mmd_kernel_scales),
            persistent=False,
        )
        self.mmd_pairs = mmd_pairs
        self.mmd_conditional = bool(mmd_conditional)
        if mmd_guard is None:
            mmd_guard = mmd_mode != "fast" and not self.mmd_conditional
        self.mmd_guard = MutualNeighbourGuard(mmd_guard_neighbors) if mmd_guard else None
        self.mmd_unlabeled_code = mmd_unlabeled_code
        self.mmd_ddp_gather = bool(mmd_ddp_gather)
        self.strength = None if mmd_strength is None else StrengthController(mmd_strength)
        self._null_generator = None
        self.mmd_reference_size = int(mmd_reference_size)
        if self.mmd_reference_size:
            # filled by SCVIMMD.set_reference_sample; saved and loaded with the state dict
            self.register_buffer("mmd_reference_z", torch.zeros(self.mmd_reference_size,
                                                                self.n_latent))
            self.register_buffer("mmd_reference_n_batch", torch.zeros((), dtype=torch.long))

    def mmd_codes(self, inference_outputs: dict) -> torch.Tensor:
        """The latent codes the MMD compares: posterior means or samples (``mmd_latent``)."""
        codes = inference_outputs[
            MODULE_KEYS.QZ_KEY if self.mmd_latent == "mean" else MODULE_KEYS.Z_KEY
        ]
        codes = codes.loc if self.mmd_latent == "mean" else codes
        return codes

    def mmd_gamma(
        self, z: torch.Tensor, labels: torch.Tensor | None = None
    ) -> float | torch.Tensor:
        """Kernel inverse bandwidth(s) for latent samples ``z``: a number, or ``(..., G)``.

        With ``"median"`` and ``labels`` (the conditional MMD), the median is over pairs of
        cells with the same label (unlabeled cells left out).
        """
        gamma = self.mmd_kernel_gamma
        if gamma == "median":
            gamma = median_heuristic_gamma(z, labels, ignore=self.mmd_unlabeled_code)
        if self.mmd_kernel_scales is None:
            return gamma
        scales = self._kernel_scales
        if scales.dtype != z.dtype:  # (e.g. under autocast)
            scales = scales.to(z.dtype)
        return torch.as_tensor(gamma, dtype=z.dtype, device=z.device)[..., None] * scales

    def mmd_loss(
        self, z: torch.Tensor, batch_index: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """MMD term ``L_mmd`` of a minibatch.

        Parameters
        ----------
        z
            Latent samples, shape ``(n_cells, n_latent)`` or ``(n_samples, n_cells, n_latent)``.
        batch_index
            Batch code of each cell, shape ``(n_cells, 1)``.
        labels
            Label code of each cell, shape ``(n_cells, 1)``; used when ``mmd_conditional``.

        Returns
        -------
        0-d tensor: the mean (``mmd_pair_reduction="mean"``) or sum over batch pairs of MMD^2,
        averaged over samples.
        """
        if self.n_batch < 2:
            return z.new_zeros(())
        value = self._batch_mmd(z, batch_index, labels)
        if self.mmd_reference_size:
            value = value + self.reference_mmd(z, batch_index)
        return value

    @torch.no_grad()
    def mmd_null_loss(
        self, z: torch.Tensor, batch_index: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The batch MMD term with the batch labels permuted within the minibatch.

        Its expectation is that of the MMD term when the batches do not differ (the
        permutation null), whatever the estimator, kernel and cell selection. The permutation
        comes from the module's own generator (seeded with ``scvi.settings.seed``), so the
        global random stream is the one scVI would see. No gradient.
        """
        if self.n_batch < 2:
            return z.new_zeros(())
        if self._null_generator is None:
            from scvi import settings

            self._null_generator = torch.Generator().manual_seed(settings.seed or 0)
        order = torch.randperm(batch_index.shape[0], generator=self._null_generator)
        return self._batch_mmd(z.detach(), batch_index[order.to(batch_index.device)], labels)

    def reference_mmd(self, z: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """MMD between the minibatch's query cells and the stored reference sample.

        Query cells are those of batches added after the sample was stored (codes
        ``>= mmd_reference_n_batch``); 0 when no sample is stored or no query cell is present.
        """
        n_reference_batches = self.mmd_reference_n_batch
        batch_index = batch_index.reshape(-1)
        n = batch_index.shape[0]
        pick = torch.randperm(self.mmd_reference_size, device=z.device)[:n]
        reference = self.mmd_reference_z[pick].to(z.dtype)
        reference = reference.expand(z.shape[:-2] + reference.shape)
        # groups: 0 = query cells, 1 = reference sample, 2 = other cells (never paired);
        # with no stored sample (n_reference_batches = 0) no cell counts as query
        is_query = (batch_index >= n_reference_batches) & (n_reference_batches > 0)
        groups = torch.cat([torch.where(is_query, 0, 2),
                            torch.ones(reference.shape[-2], dtype=torch.long, device=z.device)])
        block = torch.tensor([0, 0, -1], device=z.device)
        both = torch.cat([z, reference], dim=-2)
        return grouped_mmd(both, groups, 3, mode=self.mmd_mode, gamma=self.mmd_gamma(both),
                           partners="sequential", block=block).mean()

    def _batch_mmd(self, z, batch_index, labels):
        if self.mmd_ddp_gather and _world_size() > 1 and not self.mmd_conditional:
            z, batch_index = _gather_padded(z, batch_index.reshape(-1), pad_code=self.n_batch)
            block = torch.zeros(self.n_batch + 1, dtype=torch.long, device=z.device)
            block[-1] = -1  # padding rows form a group that is never paired
            return grouped_mmd(
                z, batch_index, self.n_batch + 1, mode=self.mmd_mode, gamma=self.mmd_gamma(z),
                partners=self.mmd_pairs, block=block, reduction=self.mmd_pair_reduction,
                keep=self._guard_keep(z, batch_index, self.n_batch + 1),
            ).mean()
        if self.mmd_conditional:
            if labels is None:
                raise ValueError("The conditional MMD needs the labels of the cells.")
            return grouped_mmd_conditional(
                z,
                batch_index,
                self.n_batch,
                labels,
                max(self.n_labels, 1),
                unlabeled=self.mmd_unlabeled_code,
                mode=self.mmd_mode,
                gamma=self.mmd_gamma(z, labels),
                pairing=self.mmd_pairs,
                reduction="mean" if self.mmd_pair_reduction == "mean" else "label_mean",
            ).mean()
        partners = None if self.mmd_pairs == "sequential" else self.mmd_pairs
        value = grouped_mmd(
            z,
            batch_index,
            self.n_batch,
            mode=self.mmd_mode,
            gamma=self.mmd_gamma(z),
            partners=partners,
            reduction=self.mmd_pair_reduction,
            keep=self._guard_keep(z, batch_index, self.n_batch),
        )
        return value if value.dim() == 0 else value.mean()

    def _guard_keep(self, z, batch_index, n_groups):
        """The guard's cell weights, as a function of the distances the exact MMD computes."""
        if self.mmd_guard is None:
            return None
        return lambda neg_sq: self.mmd_guard.keep(z, batch_index, n_groups, neg_sq)

    @property
    def current_mmd_weight(self) -> float:
        """The weight the loss uses when none is passed: the fixed weight, the conditioned
        weight of a loss-conditional module, or the strength controller's current weight."""
        if self.strength is not None:
            return self.strength.current_weight
        if self.weight_conditioning is not None:
            return self.weight_conditioning.current_weight
        return self.mmd_weight

    @unsupported_if_adata_minified
    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
        generative_outputs: dict[str, torch.Tensor],
        kl_weight: torch.Tensor | float = 1.0,
        mmd_weight: torch.Tensor | float | None = None,
    ) -> LossOutput:
        """Negative ELBO plus ``mmd_weight * L_mmd``; ``L_mmd`` goes to ``extra_metrics``.

        Parameters
        ----------
        tensors
            Minibatch tensors.
        inference_outputs
            Outputs of :meth:`inference`.
        generative_outputs
            Outputs of :meth:`generative`.
        kl_weight
            Weight of the KL divergence of ``z``.
        mmd_weight
            Weight of the MMD term; defaults to the module's ``mmd_weight`` (for a
            loss-conditional module, the weight its networks are conditioned on now).
        """
        elbo_output = super().loss(tensors, inference_outputs, generative_outputs, kl_weight)
        if mmd_weight is None:
            mmd_weight = self.current_mmd_weight
        codes = self.mmd_codes(inference_outputs)
        batch_index = tensors[REGISTRY_KEYS.BATCH_KEY]
        labels = tensors.get(REGISTRY_KEYS.LABELS_KEY)
        mmd = self.mmd_loss(codes, batch_index, labels)
        if self.strength is not None and self.training:
            elbo_output.extra_metrics[MMD_NULL_KEY] = self.mmd_null_loss(codes, batch_index,
                                                                          labels)
        elbo_output.loss = elbo_output.loss + mmd_weight * mmd
        if self.weight_conditioning is not None:
            elbo_output.loss = elbo_output.loss * self.weight_conditioning.loss_scale(mmd_weight)
        elbo_output.extra_metrics[MMD_LOSS_KEY] = mmd
        return elbo_output
