"""A small simulator of batch-affected single-cell counts with known cell types."""

from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp


def simulate_batches(n_cells: int = 3000, n_genes: int = 1000, n_batches: int = 3,
                     n_cell_types: int = 5, batch_effect: float = 0.5, type_effect: float = 1.5,
                     marker_fraction: float = 0.05, dispersion: float = 5.0,
                     library_size: float = 3000.0,
                     type_only_in_batch: dict[int, int] | None = None,
                     type_in_batches: dict[int, list[int]] | None = None,
                     type_proportions: np.ndarray | None = None, seed: int = 0) -> anndata.AnnData:
    """Simulate negative-binomial counts from cell-type programs times per-batch gene factors.

    Each gene has a base rate; each cell type multiplies a random ``marker_fraction`` of the
    genes by ``exp(type_effect * N(1, 0.25))``; each batch multiplies every gene by
    ``exp(N(0, batch_effect))``. Counts: negative binomial, mean ``library * rate /
    sum(rate)``, inverse dispersion ``dispersion``, log-normal libraries around
    ``library_size``. Cells are split evenly over batches (``obs["batch"]``: ``"batch_0"``,
    ...); types (``obs["cell_type"]``: ``"type_0"``, ...) are drawn uniformly, or from
    ``type_proportions`` ``(n_batches, n_cell_types)`` (rows normalised; 0 keeps a type out).
    ``type_only_in_batch`` ``{type: batch}`` and ``type_in_batches`` ``{type: [batches]}``
    restrict a type to some batches (its cells elsewhere get other types). Returns sparse
    float32 counts in ``X`` and the settings in ``uns["simulation"]``.
    """
    if n_batches < 1 or n_cell_types < 1 or n_cells < 1 or n_genes < 1:
        raise ValueError("`n_cells`, `n_genes`, `n_batches` and `n_cell_types` must be >= 1.")
    if batch_effect < 0 or type_effect < 0 or dispersion <= 0 or library_size <= 0:
        raise ValueError("Effects must be >= 0; `dispersion` and `library_size` > 0.")
    rng = np.random.default_rng(seed)
    batch = np.arange(n_cells) % n_batches
    cell_type = rng.integers(0, n_cell_types, n_cells)
    if type_proportions is not None:
        mix = np.asarray(type_proportions, dtype=float)
        if mix.shape != (n_batches, n_cell_types) or (mix < 0).any() or \
                not (mix.sum(1) > 0).all():
            raise ValueError("`type_proportions` must be a (n_batches, n_cell_types) array of "
                             "values >= 0 with a positive sum in each row.")
        mix = mix / mix.sum(1, keepdims=True)
        for b in range(n_batches):
            cells = batch == b
            cell_type[cells] = rng.choice(n_cell_types, cells.sum(), p=mix[b])
    restricted = {t: [b] for t, b in (type_only_in_batch or {}).items()}
    restricted.update({t: list(bs) for t, bs in (type_in_batches or {}).items()})
    for t, bs in restricted.items():
        if not (0 <= t < n_cell_types and bs and all(0 <= b < n_batches for b in bs)):
            raise ValueError(f"Cell type {t} in batches {bs}: out of range.")
    for t, bs in restricted.items():
        elsewhere = (cell_type == t) & ~np.isin(batch, bs)
        # redraw among the types allowed in each batch (one draw when that is the same set)
        allowed = {b: [u for u in range(n_cell_types) if u != t and b in restricted.get(u, [b])]
                   for b in np.unique(batch[elsewhere])}
        if len({tuple(a) for a in allowed.values()}) <= 1:
            others = next(iter(allowed.values()), [])
            cell_type[elsewhere] = rng.choice(others, elsewhere.sum()) if others else t
            continue
        for b, others in allowed.items():
            cells = elsewhere & (batch == b)
            cell_type[cells] = rng.choice(others, cells.sum())

    log_base = rng.normal(0.0, 1.0, n_genes)
    log_type = np.zeros((n_cell_types, n_genes))
    n_markers = max(1, int(marker_fraction * n_genes))
    for t in range(n_cell_types):
        markers = rng.choice(n_genes, n_markers, replace=False)
        log_type[t, markers] = type_effect * rng.normal(1.0, 0.25, n_markers)
    log_batch = rng.normal(0.0, batch_effect, (n_batches, n_genes))

    log_rate = log_base[None, :] + log_type[cell_type] + log_batch[batch]
    rate = np.exp(log_rate - log_rate.max(axis=1, keepdims=True))
    rate /= rate.sum(axis=1, keepdims=True)
    library = library_size * rng.lognormal(0.0, 0.3, n_cells)
    mean = library[:, None] * rate
    counts = rng.negative_binomial(dispersion, dispersion / (dispersion + mean))

    adata = anndata.AnnData(sp.csr_matrix(counts.astype(np.float32)))
    adata.obs_names = [f"cell_{i}" for i in range(n_cells)]
    adata.var_names = [f"gene_{g}" for g in range(n_genes)]
    adata.obs["batch"] = pd.Categorical([f"batch_{b}" for b in batch])
    adata.obs["cell_type"] = pd.Categorical([f"type_{t}" for t in cell_type])
    adata.uns["simulation"] = {
        "n_batches": n_batches,
        "n_cell_types": n_cell_types,
        "batch_effect": batch_effect,
        "type_effect": type_effect,
        "seed": seed,
    }
    return adata
