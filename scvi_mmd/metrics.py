"""Quick summaries of an embedding from a k-nearest-neighbour graph (the command line, the
demo and the benchmarks; scib-metrics for publication-grade scores).
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
    """Mean entropy of the batches among each cell's ``n_neighbors`` neighbours, divided by
    that of the batch proportions: ``[0, ~1]``, higher is better mixed.
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
    """Mean fraction of each cell's neighbours that share its label (``[0, 1]``)."""
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    neighbours = codes[_neighbours(np.asarray(embedding), n_neighbors)]
    return float((neighbours == codes[:, None]).mean())


def purity_by_type(embedding: np.ndarray, labels: np.ndarray,
                   n_neighbors: int = 30) -> dict[str, float]:
    """Per label, the mean fraction of its cells' neighbours that share it (``[0, 1]``)."""
    labels = np.asarray(labels).astype(str)
    same = labels[_neighbours(np.asarray(embedding), n_neighbors)] == labels[:, None]
    return {str(t): float(same[labels == t].mean()) for t in np.unique(labels)}


def exclusive_types(labels: np.ndarray, batches: np.ndarray) -> dict[str, list[str]]:
    """``{label: [batches without it]}`` for the labels some batch lacks (sorted)."""
    labels, batches = np.asarray(labels).astype(str), np.asarray(batches).astype(str)
    all_batches = np.unique(batches)
    found = {}
    for label in np.unique(labels):
        lacking = np.setdiff1d(all_batches, np.unique(batches[labels == label]))
        if len(lacking):
            found[str(label)] = [str(b) for b in lacking]
    return found


def exclusive_type_report(embedding: np.ndarray, labels: np.ndarray, batches: np.ndarray,
                          n_neighbors: int = 30) -> dict[str, float]:
    """How well the types some batches lack stay apart, and how well the rest mix.

    Per exclusive label (:func:`exclusive_types`): ``purity[<label>]``, the share of its
    cells' neighbours with its label, and ``intrusion[<label>]``, the share of the neighbours
    of cells of the batches that lack it that carry it. ``min_purity``, ``max_intrusion``
    (NaN when no label is exclusive), and ``shared_batch_mixing``: :func:`batch_mixing` among
    the cells of the labels every batch holds.
    """
    embedding = np.asarray(embedding)
    labels, batches = np.asarray(labels).astype(str), np.asarray(batches).astype(str)
    neighbours = labels[_neighbours(embedding, n_neighbors)]
    report: dict[str, float] = {}
    exclusive = exclusive_types(labels, batches)
    for label, lacking in exclusive.items():
        own = labels == label
        report[f"purity[{label}]"] = float((neighbours[own] == label).mean())
        outside = np.isin(batches, lacking)
        report[f"intrusion[{label}]"] = float((neighbours[outside] == label).mean())
    purities = [v for k, v in report.items() if k.startswith("purity[")]
    intrusions = [v for k, v in report.items() if k.startswith("intrusion[")]
    report["min_purity"] = float(min(purities)) if purities else float("nan")
    report["max_intrusion"] = float(max(intrusions)) if intrusions else float("nan")
    shared = ~np.isin(labels, list(exclusive))
    if shared.sum() > n_neighbors and len(np.unique(batches[shared])) > 1:
        report["shared_batch_mixing"] = batch_mixing(embedding[shared], batches[shared],
                                                     n_neighbors)
    else:
        report["shared_batch_mixing"] = float("nan")
    return report
