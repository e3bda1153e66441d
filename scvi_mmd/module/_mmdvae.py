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
        A fixed weight of the MMD term in the loss (:class:`~scvi_mmd.module.FixedWeight`);
        ``0`` gives :class:`~scvi.module.VAE` exactly. ``None``: the weight is set during
        training by a strength (``mmd_strength``).
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
        Which batches are compared. ``None`` (default): ``"pooled"`` with the exact
        estimators, ``"sequential"`` with ``"fast"`` or ``mmd_conditional``. ``"pooled"``:
        every pair of batches, weighted by its cell pairs and pooled over the minibatch
        (:func:`~scvi_mmd.mmd.pooled_weights`; well estimated with a few cells per batch,
        ``O(n^2)`` whatever the number of batches); or pairs of batches:
        ``"sequential"`` (each present batch with the next present one, in code order; the
        original design), ``"random"`` (the same in a random order of batches, drawn at each
        step) or ``"all"`` (every pair of present batches).
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
        types. ``None`` (default): on with the exact estimators; with clusters, only for the
        cells of clusters that one batch alone has in the minibatch (a type other batches
        lack, or one the batch effect split; only the second has mutual neighbours: on all
        cells the guard hid a 64-batch effect); off with ``"fast"`` (it needs the ``n x n``
        distances) and with ``mmd_conditional`` (labels win). ``True``: on all cells.
    mmd_guard_neighbors
        ``k`` of the guard's mutual ``k``-nearest neighbours within a minibatch.
    mmd_strength
        The correction strength ``s`` in ``[0, 1]``: the weight is set during training by a
        :class:`~scvi_mmd.module.StrengthController` (the default, with
        :data:`~scvi_mmd.DEFAULT_STRENGTH`, when ``mmd_weight`` is ``None``). In training, the
        loss's ``extra_metrics`` then also hold ``mmd_null``, the MMD term with the batch
        labels permuted within the minibatch (computed without gradient).
    mmd_clusters
        With ``mmd_pairs="pooled"``: compare batches within each of this many clusters of the
        latent space (:class:`~scvi_mmd.module.OnlineKMeans`, learnt during training), with
        the kernel's median bandwidth taken within them, so that a batch effect left inside
        cell types is seen whatever the number of batches and batches whose cell-type mixes
        differ are not pulled onto each other
        (see :func:`~scvi_mmd.module._clusters.shared_strata`). ``None`` (default):
        16 (``scvi_mmd._defaults.DEFAULT_CLUSTERS``) with the pooled MMD, none otherwise;
        ``0``: no clusters.
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
        """The number of latent clusters the pooled MMD compares batches within (0: none)."""
        clusters = self.penalty.clusters
        return 0 if clusters is None else clusters.n_clusters

    def __init__(
        self,
        n_input: int,
        n_batch: int = 0,
        mmd_mode: str = DEFAULT_MODE,
        mmd_weight: float | None = None,
        mmd_kernel_gamma: float | str = DEFAULT_KERNEL_GAMMA,
        mmd_kernel_scales: list[float] | None = DEFAULT_KERNEL_SCALES,
        mmd_pairs: str | None = None,
        mmd_conditional: bool = False,
        mmd_unlabeled_code: int | None = None,
        mmd_ddp_gather: bool = False,
        mmd_reference_size: int = 0,
        mmd_pair_reduction: str = "mean",
        mmd_latent: str = "mean",
        mmd_guard: bool | None = None,
        mmd_guard_neighbors: int = 3,
        mmd_strength: float | None = None,
        mmd_clusters: int | None = None,
        **kwargs,
    ):
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
        """The weight the loss uses when none is passed (the weight rule's current weight)."""
        return self.weight_rule.current_weight

    def mmd_codes(self, inference_outputs: dict) -> torch.Tensor:
        """The latent codes the MMD compares: posterior means or samples (``mmd_latent``)."""
        return self.penalty.codes(inference_outputs)

    def mmd_gamma(
        self, z: torch.Tensor, labels: torch.Tensor | None = None
    ) -> float | torch.Tensor:
        """Kernel inverse bandwidth(s) for latent codes ``z``: a number, or ``(..., G)``."""
        return self.penalty.gamma(z, labels)

    def mmd_loss(
        self, z: torch.Tensor, batch_index: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """MMD term ``L_mmd`` of a minibatch.

        Parameters
        ----------
        z
            Latent codes, shape ``(n_cells, n_latent)`` or ``(n_samples, n_cells, n_latent)``.
        batch_index
            Batch code of each cell, shape ``(n_cells, 1)``.
        labels
            Label code of each cell, shape ``(n_cells, 1)``; used when ``mmd_conditional``.

        Returns
        -------
        0-d tensor: the mean (``mmd_pair_reduction="mean"``) or sum over batch pairs of MMD^2,
        averaged over samples, plus the reference term when a reference sample is stored.
        """
        value = self.penalty(z, batch_index, labels)
        if self.mmd_reference_size and self.n_batch >= 2:
            value = value + self.reference_mmd(z, batch_index)
        return value

    def mmd_null_loss(
        self, z: torch.Tensor, batch_index: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The batch MMD term with the batch labels permuted (:meth:`MMDPenalty.null`)."""
        return self.penalty.null(z, batch_index, labels)

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
        return self.penalty.between(torch.cat([z, reference], dim=-2), groups, block)

    @unsupported_if_adata_minified
    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
        generative_outputs: dict[str, torch.Tensor],
        kl_weight: torch.Tensor | float = 1.0,
        mmd_weight: torch.Tensor | float | None = None,
        compute_null: bool = False,
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
            Weight of the MMD term (the training plan passes it); defaults to
            :attr:`mmd_weight`.
        compute_null
            Also compute the permutation null (``extra_metrics["mmd_null"]``, no gradient),
            for the weight rule; the plan asks on the steps the rule needs it.
        """
        elbo_output = super().loss(tensors, inference_outputs, generative_outputs, kl_weight)
        if mmd_weight is None:
            mmd_weight = self.mmd_weight
        codes = self.mmd_codes(inference_outputs)
        batch_index = tensors[REGISTRY_KEYS.BATCH_KEY]
        labels = tensors.get(REGISTRY_KEYS.LABELS_KEY)
        # at weight 0 (a warm-up, nothing to correct, mmd_weight=0) the term is reported and
        # observed, not trained: no backward through the kernel
        untrained = isinstance(mmd_weight, int | float) and mmd_weight == 0
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
