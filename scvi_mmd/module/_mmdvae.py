"""The MMD-penalised variational auto-encoder module."""

from __future__ import annotations

import math

import torch
from scvi import REGISTRY_KEYS
from scvi.module import VAE
from scvi.module._constants import MODULE_KEYS
from scvi.module.base import LossOutput
from scvi.utils import unsupported_if_adata_minified

from scvi_mmd.mmd import grouped_mmd

MMD_MODES = ("normal", "fast")
MMD_LOSS_KEY = "mmd_loss"


def validate_mmd_args(mmd_mode: str, mmd_weight: float, mmd_kernel_gamma: float) -> None:
    """Raise a :class:`ValueError` for an MMD setting that cannot be trained with.

    Parameters
    ----------
    mmd_mode
        One of ``"normal"`` or ``"fast"``.
    mmd_weight
        Finite, ``>= 0``.
    mmd_kernel_gamma
        Finite, ``> 0``.
    """
    if mmd_mode not in MMD_MODES:
        raise ValueError(f"`mmd_mode` must be one of {MMD_MODES}, got {mmd_mode!r}.")
    if isinstance(mmd_weight, bool) or not isinstance(mmd_weight, int | float):
        raise ValueError(f"`mmd_weight` must be a number, got {mmd_weight!r}.")
    if not math.isfinite(mmd_weight) or mmd_weight < 0:
        raise ValueError(f"`mmd_weight` must be finite and >= 0, got {mmd_weight!r}.")
    if isinstance(mmd_kernel_gamma, bool) or not isinstance(mmd_kernel_gamma, int | float):
        raise ValueError(f"`mmd_kernel_gamma` must be a number, got {mmd_kernel_gamma!r}.")
    if not math.isfinite(mmd_kernel_gamma) or mmd_kernel_gamma <= 0:
        raise ValueError(f"`mmd_kernel_gamma` must be finite and > 0, got {mmd_kernel_gamma!r}.")


class MMDVAE(VAE):
    """Variational auto-encoder with an MMD penalty between the latent codes of batches.

    The loss of a minibatch is scVI's negative ELBO plus ``mmd_weight * L_mmd``, where
    ``L_mmd`` is the sum of MMD^2 between the sampled latent codes ``z`` of consecutive batches
    present in the minibatch (see :func:`scvi_mmd.mmd.grouped_mmd`).

    Parameters
    ----------
    n_input
        Number of input features.
    n_batch
        Number of batches; the MMD term needs at least two.
    mmd_mode
        ``"normal"``: exact quadratic-time MMD^2 (biased, eq. 5 of Gretton et al., 2012);
        ``"fast"``: linear-time estimate (unbiased, Lemma 14).
    mmd_weight
        Weight of the MMD term in the loss; ``0`` gives :class:`~scvi.module.VAE` exactly.
    mmd_kernel_gamma
        Inverse bandwidth ``gamma`` of the Gaussian kernel ``exp(-gamma ||x - y||^2)``.
    **kwargs
        Keyword arguments for :class:`~scvi.module.VAE`.
    """

    def __init__(
        self,
        n_input: int,
        n_batch: int = 0,
        mmd_mode: str = "normal",
        mmd_weight: float = 1.0,
        mmd_kernel_gamma: float = 1.0,
        **kwargs,
    ):
        validate_mmd_args(mmd_mode, mmd_weight, mmd_kernel_gamma)
        super().__init__(n_input=n_input, n_batch=n_batch, **kwargs)
        self.mmd_mode = mmd_mode
        self.mmd_weight = float(mmd_weight)
        self.mmd_kernel_gamma = float(mmd_kernel_gamma)

    def mmd_loss(self, z: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """MMD term ``L_mmd`` of a minibatch.

        Parameters
        ----------
        z
            Latent samples, shape ``(n_cells, n_latent)`` or ``(n_samples, n_cells, n_latent)``.
        batch_index
            Batch code of each cell, shape ``(n_cells, 1)``.

        Returns
        -------
        0-d tensor: the sum over sequential batch pairs of MMD^2, averaged over samples.
        """
        if self.n_batch < 2:
            return z.new_zeros(())
        value = grouped_mmd(
            z, batch_index, self.n_batch, mode=self.mmd_mode, gamma=self.mmd_kernel_gamma
        )
        return value.mean()

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
            Weight of the MMD term; defaults to the module's ``mmd_weight``.
        """
        elbo_output = super().loss(tensors, inference_outputs, generative_outputs, kl_weight)
        if mmd_weight is None:
            mmd_weight = self.mmd_weight
        mmd = self.mmd_loss(inference_outputs[MODULE_KEYS.Z_KEY], tensors[REGISTRY_KEYS.BATCH_KEY])
        elbo_output.loss = elbo_output.loss + mmd_weight * mmd
        elbo_output.extra_metrics[MMD_LOSS_KEY] = mmd
        return elbo_output
