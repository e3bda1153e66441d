"""Quick, dependency-light summaries of an embedding (for the command line and the demo).

For publication-grade scores use scib-metrics (``scvi_mmd.benchmark``); these two numbers are
cheap (a k-nearest-neighbour graph) and read directly:

* :func:`batch_mixing`: mean normalised entropy of the batches among each cell's neighbours,
  1 = as mixed as the batch proportions allow, 0 = every neighbour from the cell's own batch;
* :func:`label_purity`: mean fraction of each cell's neighbours that share its label,
  1 = cell types perfectly apart.
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors


def _neighbours(embedding: np.ndarray, n_neighbors: int) -> np.ndarray:
    n_neighbors = min(n_neighbors, embedding.shape[0] - 1)
    if n_neighbors < 1:
        raise ValueError("Need at least two cells.")
    nn = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(embedding)
    return nn.kneighbors(embedding, return_distance=False)[:, 1:]


def batch_mixing(embedding: np.ndarray, batches: np.ndarray, n_neighbors: int = 30) -> float:
    """Mean normalised entropy of neighbour batches, divided by that of the batch proportions.

    Parameters
    ----------
    embedding
        ``(n_cells, n_dims)`` array.
    batches
        Batch of each cell.
    n_neighbors
        Neighbours per cell.

    Returns
    -------
    A number in ``[0, ~1]``; higher is better mixed.
    """
    codes, batch_codes = np.unique(np.asarray(batches), return_inverse=True)
    if len(codes) < 2:
        raise ValueError("Batch mixing needs at least two batches.")
    neighbours = batch_codes[_neighbours(np.asarray(embedding), n_neighbors)]
    freq = np.stack([(neighbours == b).mean(1) for b in range(len(codes))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(freq > 0, freq * np.log(freq), 0.0), axis=1)
    props = np.bincount(batch_codes) / len(batch_codes)
    return float(entropy.mean() / -(props * np.log(props)).sum())


def label_purity(embedding: np.ndarray, labels: np.ndarray, n_neighbors: int = 30) -> float:
    """Mean fraction of each cell's neighbours that share its label.

    Parameters
    ----------
    embedding
        ``(n_cells, n_dims)`` array.
    labels
        Label (cell type) of each cell.
    n_neighbors
        Neighbours per cell.

    Returns
    -------
    A number in ``[0, 1]``; higher is better separated.
    """
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    neighbours = codes[_neighbours(np.asarray(embedding), n_neighbors)]
    return float((neighbours == codes[:, None]).mean())
