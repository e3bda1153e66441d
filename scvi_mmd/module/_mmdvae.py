"""The MMD-penalised variational auto-encoder module: ``elbo + weight * penalty(codes)``."""

from __future__ import annotations

import contextlib

import torch
from scvi import REGISTRY_KEYS
from scvi.module import VAE
from scvi.module.base import LossOutput
from scvi.utils import unsupported_if_adata_minified

from scvi_mmd._defaults import (
    DEFAULT_KERNEL_GAMMA,
    DEFAULT_KERNEL_SCALES,
    DEFAULT_MODE,
    DEFAULT_STRENGTH,
)
from scvi_mmd.module._penalty import MMDPenalty
from scvi_mmd.module._strength import StrengthController
from scvi_mmd.module._weight_rules import WeightRule, make_weight_rule

MMD_LOSS_KEY = "mmd_loss"
MMD_NULL_KEY = "mmd_null"


def _from_penalty(name: str, doc: str) -> property:
    return property(lambda self: getattr(self.penalty, name), doc=doc)


class MMDVAE(VAE):
    """scVI's VAE with an MMD penalty between the latent codes of batches.

    The loss is the negative ELBO plus ``mmd_weight * L_mmd``;
    :class:`~scvi_mmd.module.MMDPenalty` computes ``L_mmd`` from the ``mmd_*`` settings and
    the weight rule (:class:`~scvi_mmd.module.FixedWeight` or
    :class:`~scvi_mmd.module.StrengthController`) sets the weight, passed by the plan.

    Parameters
    ----------
    n_input
        Number of input features.
    n_batch
        Number of batches; the MMD term needs at least two.
    mmd_mode, mmd_weight, mmd_strength, mmd_kernel_gamma, mmd_pairs, mmd_clusters, \
mmd_conditional, mmd_guard
        As in :class:`~scvi_mmd.SCVIMMD`.
    mmd_kernel_scales
        Multipliers of ``gamma`` for a multi-scale kernel; ``None``: one scale.
    mmd_pair_reduction
        With pairs of batches, ``"mean"`` or ``"sum"`` (the original design) over the pairs.
    mmd_latent
        ``"mean"`` (posterior means) or ``"sample"`` (the original design; a large weight
        then shrinks the means below the posterior noise and mixing *falls*).
    mmd_unlabeled_code
        Label code ignored by the conditional MMD.
    mmd_guard_neighbors
        ``k`` of the guard's mutual ``k``-nearest neighbours.
    mmd_ddp_gather
        Under DDP, gather all processes' codes before the MMD (not with ``mmd_conditional``).
    mmd_reference_size
        Room for a reference sample of codes (:meth:`~scvi_mmd.SCVIMMD.set_reference_sample`).
    **kwargs
        Keyword arguments for :class:`~scvi.module.VAE`.
    """

    mmd_mode = _from_penalty("mode", "The MMD estimator.")
    mmd_kernel_gamma = _from_penalty("kernel_gamma", "The kernel's inverse bandwidth.")
    mmd_kernel_scales = _from_penalty("kernel_scales", "The kernel's scales (or ``None``).")
    mmd_pairs = _from_penalty("pairs", "The batch pairing.")
    mmd_pair_reduction = _from_penalty("pair_reduction", "Mean or sum over pairs.")
    mmd_latent = _from_penalty("latent", "Posterior means or samples.")
    mmd_conditional = _from_penalty("conditional", "Whether the MMD is label-aware.")
    mmd_unlabeled_code = _from_penalty("unlabeled_code", "The ignored label code.")
    mmd_guard = _from_penalty("selector", "The guard (or ``None``).")
    mmd_guard_scope = _from_penalty("guard_scope", "The cells the guard checks.")
    mmd_ddp_gather = _from_penalty("ddp_gather", "Whether codes are gathered under DDP.")

    @property
    def mmd_clusters(self) -> int:
        """Number of latent clusters of the pooled MMD (0: none)."""
        clusters = self.penalty.clusters
        return 0 if clusters is None else clusters.n_clusters

    def __init__(self, n_input: int, n_batch: int = 0, mmd_mode: str = DEFAULT_MODE,
                 mmd_weight: float | None = None,
                 mmd_kernel_gamma: float | str = DEFAULT_KERNEL_GAMMA,
                 mmd_kernel_scales: list[float] | None = DEFAULT_KERNEL_SCALES,
                 mmd_pairs: str | None = None, mmd_conditional: bool = False,
                 mmd_unlabeled_code: int | None = None, mmd_ddp_gather: bool = False,
                 mmd_reference_size: int = 0, mmd_pair_reduction: str = "mean",
                 mmd_latent: str = "mean", mmd_guard: bool | None = None,
                 mmd_guard_neighbors: int = 3, mmd_strength: float | None = None,
                 mmd_clusters: int | None = None, **kwargs):
        size = mmd_reference_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"`mmd_reference_size` must be an integer >= 0, got {size!r}.")
        weight_rule = make_weight_rule(mmd_weight, mmd_strength, DEFAULT_STRENGTH)
        super().__init__(n_input=n_input, n_batch=n_batch, **kwargs)
        self.penalty = MMDPenalty(
            self.n_batch, self.n_labels, mode=mmd_mode, kernel_gamma=mmd_kernel_gamma,
            kernel_scales=mmd_kernel_scales, pairs=mmd_pairs, pair_reduction=mmd_pair_reduction,
            latent=mmd_latent, conditional=mmd_conditional, unlabeled_code=mmd_unlabeled_code,
            guard=mmd_guard, guard_neighbors=mmd_guard_neighbors, ddp_gather=mmd_ddp_gather,
            clusters=mmd_clusters, n_latent=self.n_latent,
        )
        #: What sets the weight: a fixed weight or the strength controller.
        self.weight_rule: WeightRule = weight_rule
        self.mmd_reference_size = int(mmd_reference_size)
        if self.mmd_reference_size:
            # filled by SCVIMMD.set_reference_sample; saved and loaded with the state dict
            self.register_buffer("mmd_reference_z", torch.zeros(self.mmd_reference_size,
                                                                self.n_latent))
            self.register_buffer("mmd_reference_n_batch", torch.zeros((), dtype=torch.long))

    @property
    def strength(self) -> StrengthController | None:
        """The strength controller, or ``None`` for a fixed weight."""
        rule = self.weight_rule
        return rule if isinstance(rule, StrengthController) else None

    @property
    def mmd_weight(self) -> float:
        """The weight rule's current weight (the loss's default)."""
        return self.weight_rule.current_weight

    def mmd_codes(self, inference_outputs: dict) -> torch.Tensor:
        """The codes the MMD compares (``mmd_latent``)."""
        return self.penalty.codes(inference_outputs)

    def mmd_gamma(self, z: torch.Tensor,
                  labels: torch.Tensor | None = None) -> float | torch.Tensor:
        """Kernel inverse bandwidth(s) for ``z``."""
        return self.penalty.gamma(z, labels)

    def mmd_loss(self, z: torch.Tensor, batch_index: torch.Tensor,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """``L_mmd`` of a minibatch, plus the reference term when a sample is stored.

        ``z`` ``(n_cells, n_latent)`` or ``(n_samples, n_cells, n_latent)``; ``batch_index``
        and ``labels`` (used when ``mmd_conditional``) ``(n_cells, 1)``.
        """
        value = self.penalty(z, batch_index, labels)
        if self.mmd_reference_size and self.n_batch >= 2:
            value = value + self.reference_mmd(z, batch_index)
        return value

    def mmd_null_loss(self, z: torch.Tensor, batch_index: torch.Tensor,
                      labels: torch.Tensor | None = None) -> torch.Tensor:
        """The batch MMD term with the batch labels permuted (:meth:`MMDPenalty.null`)."""
        return self.penalty.null(z, batch_index, labels)

    def reference_mmd(self, z: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """MMD between the query cells (batches ``>= mmd_reference_n_batch``) and the stored
        reference sample; 0 without a sample or query cell.
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
        return self.penalty.between(torch.cat([z, reference], dim=-2), groups, block)

    @unsupported_if_adata_minified
    def loss(self, tensors: dict[str, torch.Tensor], inference_outputs: dict[str, torch.Tensor],
             generative_outputs: dict[str, torch.Tensor], kl_weight: torch.Tensor | float = 1.0,
             mmd_weight: torch.Tensor | float | None = None, compute_null: bool = False,
             compute_term: bool = True) -> LossOutput:
        """Negative ELBO plus ``mmd_weight * L_mmd``; ``L_mmd`` goes to ``extra_metrics``.

        ``mmd_weight``: from the plan (default :attr:`mmd_weight`). ``compute_null``: also the
        permutation null (``extra_metrics["mmd_null"]``) for the weight rule.
        ``compute_term=False``: at weight 0 without the null, skip the term (a record only).
        """
        elbo_output = super().loss(tensors, inference_outputs, generative_outputs, kl_weight)
        if mmd_weight is None:
            mmd_weight = self.mmd_weight
        untrained = isinstance(mmd_weight, int | float) and mmd_weight == 0
        if untrained and not compute_term and not compute_null:
            return elbo_output
        codes = self.mmd_codes(inference_outputs)
        batch_index = tensors[REGISTRY_KEYS.BATCH_KEY]
        labels = tensors.get(REGISTRY_KEYS.LABELS_KEY)
        # at weight 0 (a warm-up, nothing to correct, mmd_weight=0) the term is reported and
        # observed, not trained: no backward through the kernel
        with torch.no_grad() if untrained else contextlib.nullcontext():
            if compute_null and self.n_batch >= 2:
                mmd, null = self.penalty.term_and_null(codes, batch_index, labels)
                if self.mmd_reference_size:
                    mmd = mmd + self.reference_mmd(codes, batch_index)
                elbo_output.extra_metrics[MMD_NULL_KEY] = null.detach()
            else:
                mmd = self.mmd_loss(codes, batch_index, labels)
        elbo_output.loss = elbo_output.loss + mmd_weight * mmd
        elbo_output.extra_metrics[MMD_LOSS_KEY] = mmd
        return elbo_output
