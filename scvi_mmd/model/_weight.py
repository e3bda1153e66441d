"""The weight of the MMD term as users read and set it: fixed, a trained range, or a strength."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from scvi_mmd.model._auto import AUTO_CURVE_POINTS, WeightChoice, choose_mmd_weight

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd
    from anndata import AnnData


class MMDWeightMixin:
    """Methods of :class:`~scvi_mmd.SCVIMMD` about the weight: which weights the model gives,
    choosing one without labels, and reading the latent space at one."""

    @property
    def is_loss_conditional(self) -> bool:
        """Whether the model was trained over a weight range (``mmd_weight=(low, high)``)."""
        return self.module.weight_conditioning is not None

    @property
    def mmd_weight_range(self) -> tuple[float, float]:
        """The weights this model gives: ``(low, high)``, or ``(w, w)`` for one weight."""
        if self.is_loss_conditional:
            return self.module.mmd_weight
        return (self.mmd_weight_default, self.mmd_weight_default)

    @property
    def mmd_weight_default(self) -> float:
        """The weight used when none is given: the fixed weight, the weight the strength
        controller reached at the end of training, or a loss-conditional model's default
        (which :meth:`choose_mmd_weight` can set)."""
        if self.module.strength is not None:
            return float(self.module.strength.weight)
        if not self.is_loss_conditional:
            return self.module.mmd_weight
        return self.module.weight_conditioning.default_weight

    def choose_mmd_weight(
        self,
        curve: pd.DataFrame | None = None,
        share: float = 1.0,
        n_weights: int = AUTO_CURVE_POINTS,
        set_default: bool = True,
        **curve_kwargs,
    ) -> WeightChoice:
        """Choose the weight of a loss-conditional model without labels.

        By default the weight at which ``L_mmd`` is lowest over the range; with ``share < 1``
        the smallest weight at which ``L_mmd`` has made that share of its largest fall
        (:func:`scvi_mmd.model.choose_mmd_weight`): past it, more weight no longer aligns
        the batches. Called by :meth:`train` for ``mmd_weight="auto"``.

        Parameters
        ----------
        curve
            A curve from :meth:`get_mmd_curve`; ``None``: computed with ``n_weights`` points.
        share
            Part of the largest fall of ``L_mmd`` the chosen weight must reach, in ``(0, 1]``.
        n_weights
            Points of the curve when it is computed here.
        set_default
            Make the chosen weight :attr:`mmd_weight_default` (saved with the model).
        **curve_kwargs
            Other arguments of :meth:`get_mmd_curve`.

        Returns
        -------
        :class:`~scvi_mmd.model.WeightChoice` (also in :attr:`mmd_weight_choice`, with the
        curve in :attr:`mmd_curve_`).
        """
        if not self.is_loss_conditional:
            raise ValueError("Choosing the weight needs a loss-conditional model: train with "
                             "`mmd_weight=(low, high)` or `mmd_weight='auto'`.")
        if curve is None:
            curve = self.get_mmd_curve(n_weights=n_weights, **curve_kwargs)
        choice = choose_mmd_weight(curve, share)
        if set_default:
            self.module.weight_conditioning.set_default_weight(choice.weight)
        self.mmd_weight_choice, self.mmd_curve_ = choice, curve
        return choice

    def at_mmd_weight(self, mmd_weight: float | None):
        """Context manager: inside it, every method of the model uses ``mmd_weight``.

        ``None`` leaves the model as it is. A loss-conditional model takes any weight in its
        trained range (outside it: :class:`ValueError`); a fixed-weight model only its own.
        """
        if mmd_weight is None:
            return contextlib.nullcontext()
        if self.is_loss_conditional:
            return self.module.weight_conditioning.at(mmd_weight)
        if mmd_weight != self.mmd_weight_default:
            raise ValueError(
                f"This model was trained at the fixed weight {self.mmd_weight_default:g}, not "
                f"{mmd_weight!r}: train with `mmd_weight=(low, high)` to choose the weight "
                "after training."
            )
        return contextlib.nullcontext()

    def get_latent_representation(self, *args, mmd_weight: float | None = None, **kwargs):
        """Latent representation, as :meth:`scvi.model.SCVI.get_latent_representation`.

        Parameters
        ----------
        *args, **kwargs
            As in :meth:`scvi.model.SCVI.get_latent_representation`.
        mmd_weight
            For a loss-conditional model, the weight of the knob (default:
            :attr:`mmd_weight_default`).
        """
        with self.at_mmd_weight(mmd_weight):
            return super().get_latent_representation(*args, **kwargs)

    def get_normalized_expression(self, *args, mmd_weight: float | None = None, **kwargs):
        """Normalised expression, as :meth:`scvi.model.SCVI.get_normalized_expression`.

        Parameters
        ----------
        *args, **kwargs
            As in :meth:`scvi.model.SCVI.get_normalized_expression`.
        mmd_weight
            For a loss-conditional model, the weight of the knob (default:
            :attr:`mmd_weight_default`).
        """
        with self.at_mmd_weight(mmd_weight):
            return super().get_normalized_expression(*args, **kwargs)

    def get_mmd_curve(
        self,
        weights: Sequence[float] | None = None,
        n_weights: int = 6,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        n_neighbors: int = 15,
        labels_key: str | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Label-free diagnostics of the knob, one row per weight, from this one model.

        See :func:`scvi_mmd.model.mmd_curve` for the columns.

        Parameters
        ----------
        weights
            Weights to evaluate, in the trained range. ``None``: ``n_weights`` log-spaced
            weights over :attr:`mmd_weight_range` (or the model's one weight).
        n_weights
            Number of weights when ``weights`` is ``None``.
        adata, indices
            Cells to use (default: all cells of the model's AnnData).
        n_neighbors
            Neighbours per cell of the kNN graphs.
        labels_key
            Optional obs column of cell types: adds ``label_purity`` (kNN) to the table.
        batch_size
            Minibatch size for the encoder.
        """
        from scvi_mmd.model._curve import mmd_curve

        return mmd_curve(self, weights, n_weights, adata, indices, n_neighbors, labels_key,
                         batch_size)
