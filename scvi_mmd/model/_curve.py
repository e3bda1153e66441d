"""The trade-off curve of the knob, from one (loss-conditional) model and without labels."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from scvi_mmd.metrics import batch_mixing, label_purity

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

CURVE_COLUMNS = ("mmd_weight", "batch_mixing", "within_batch_preservation", "mmd_loss")


def curve_weights(low: float, high: float, n_weights: int) -> list[float]:
    """``n_weights`` log-spaced weights from ``low`` to ``high`` (one if they are equal)."""
    if isinstance(n_weights, bool) or not isinstance(n_weights, int) or n_weights < 1:
        raise ValueError(f"`n_weights` must be an integer >= 1, got {n_weights!r}.")
    if low == high:
        return [float(low)]
    if n_weights == 1:
        return [math.sqrt(low * high)]
    return [float(w) for w in np.geomspace(low, high, n_weights)]


def _within_batch_neighbours(latent: np.ndarray, batches: np.ndarray, k: int) -> list[np.ndarray]:
    """For each batch, the kNN (indices within that batch) of its cells among themselves."""
    result = []
    for code in np.unique(batches):
        cells = latent[batches == code]
        n = min(k, cells.shape[0] - 1)
        if n < 1:
            result.append(np.zeros((cells.shape[0], 0), dtype=int))
            continue
        nn = NearestNeighbors(n_neighbors=n + 1).fit(cells)
        result.append(nn.kneighbors(cells, return_distance=False)[:, 1:])
    return result


def neighbourhood_overlap(reference: list[np.ndarray], other: list[np.ndarray]) -> float:
    """Mean share of each cell's within-batch neighbours kept from ``reference`` to ``other``."""
    shared, total = 0, 0
    for ref, new in zip(reference, other, strict=True):
        # neighbour lists hold distinct indices: count matches over all (i, j) pairs of a row
        shared += int((ref[:, :, None] == new[:, None, :]).sum())
        total += ref.size
    return shared / total if total else math.nan


def mmd_curve(
    model,
    weights: Sequence[float] | None = None,
    n_weights: int = 6,
    adata: AnnData | None = None,
    indices: Sequence[int] | None = None,
    n_neighbors: int = 15,
    labels_key: str | None = None,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """Label-free diagnostics of a model's latent space at each weight of the knob.

    Columns:

    * ``mmd_weight``;
    * ``batch_mixing``: :func:`scvi_mmd.metrics.batch_mixing` (kNN batch entropy, 0-1, higher
      = better mixed);
    * ``within_batch_preservation``: the share of each cell's ``n_neighbors`` nearest
      neighbours *among the cells of its own batch* that are the same as at the lowest weight
      (1 at the lowest weight). Batch correction should move batches relative to each other,
      not reorder the cells of one batch; when this falls, the knob is rearranging each
      batch's own structure, the label-free sign of over-correction;
    * ``mmd_loss``: :meth:`~scvi_mmd.SCVIMMD.get_mmd_loss` (the unweighted ``L_mmd``);
    * ``label_purity`` (with ``labels_key``): :func:`scvi_mmd.metrics.label_purity`.

    Parameters
    ----------
    model
        A trained :class:`~scvi_mmd.SCVIMMD`.
    weights
        Weights in the model's range; ``None``: ``n_weights`` log-spaced over it.
    n_weights
        Number of weights when ``weights`` is ``None``.
    adata, indices
        Cells to use (default: all cells of the model's AnnData).
    n_neighbors
        Neighbours per cell.
    labels_key
        Optional obs column with cell types.
    batch_size
        Minibatch size for the encoder.
    """
    from scvi import REGISTRY_KEYS

    low, high = model.mmd_weight_range
    if weights is None:
        weights = curve_weights(low, high, n_weights)
    weights = sorted(float(w) for w in weights)
    if not weights:
        raise ValueError("`weights` is empty.")
    adata = model._validate_anndata(adata)
    indices = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
    if labels_key is not None and labels_key not in adata.obs:
        raise ValueError(f"`labels_key` {labels_key!r} is not a column of adata.obs.")
    batches = model.get_from_registry(adata, REGISTRY_KEYS.BATCH_KEY).reshape(-1)[indices]
    rows, reference = [], None
    for w in weights:
        latent = model.get_latent_representation(adata, indices=indices, batch_size=batch_size,
                                                 mmd_weight=w)
        neighbours = _within_batch_neighbours(latent, batches, n_neighbors)
        reference = neighbours if reference is None else reference
        row = {
            "mmd_weight": w,
            "batch_mixing": batch_mixing(latent, batches, n_neighbors)
            if len(np.unique(batches)) > 1 else math.nan,
            "within_batch_preservation": neighbourhood_overlap(reference, neighbours),
            "mmd_loss": model.get_mmd_loss(adata, indices=indices, batch_size=batch_size,
                                           mmd_weight=w),
        }
        if labels_key is not None:
            labels = adata.obs[labels_key].to_numpy()[indices]
            row["label_purity"] = label_purity(latent, labels, n_neighbors)
        rows.append(row)
    return pd.DataFrame(rows)
