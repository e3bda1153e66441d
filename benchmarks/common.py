"""Helpers the benchmark scripts share: data, fits and label-based scores.

Everything here calls the public API of scvi_mmd (``SCVIMMD``, ``scvi_mmd.data``,
``scvi_mmd.metrics``) and the sweep's fitting helpers (``scvi_mmd.cli.benchmark``: PCA,
Harmony, Scanorama, scib-metrics).
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("scvi").setLevel(logging.ERROR)

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
KANG = ROOT.parent.parent / "shared" / "data" / "kang_pbmc_ifnb.h5ad"


def fit(adata, batch_key: str, seed: int, epochs: int, batch_size: int = 128, **kwargs):
    """A trained ``SCVIMMD(adata, **kwargs)`` on a copy of ``adata``, and its fit seconds."""
    import scvi

    from scvi_mmd import SCVIMMD

    scvi.settings.seed = seed
    data = adata.copy()
    SCVIMMD.setup_anndata(data, batch_key=batch_key)
    model = SCVIMMD(data, **kwargs)
    start = time.perf_counter()
    model.train(max_epochs=epochs, batch_size=batch_size, enable_progress_bar=False,
                check_val_every_n_epoch=epochs)
    return model, time.perf_counter() - start


def release(*models) -> None:
    """Let the data of fitted models go: scvi-tools keeps every AnnData given to
    ``setup_anndata`` in class-level stores that outlive the model (``deregister_manager``
    drops it), so a process fitting many models keeps every copy alive otherwise: +0.16 GB
    per 30,000-cell fit, for ``SCVI`` as for ``SCVIMMD``; the 100,000-cell ``atlas.py
    batches`` run was killed at 24 GB after 17 fits. The models are not usable afterwards.
    """
    for model in models:
        model.deregister_manager(model.adata)


def knn(latent: np.ndarray, k: int = 15) -> np.ndarray:
    """Indices of each cell's ``k`` nearest other cells."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1).fit(latent)
    return nn.kneighbors(latent, return_distance=False)[:, 1:]


def kept_neighbours(latent: np.ndarray, reference: np.ndarray, k: int = 15) -> float:
    """Mean share of each cell's ``k`` neighbours in ``reference`` kept in ``latent``."""
    a, b = knn(latent, k), knn(reference, k)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table (no tabulate dependency)."""
    cells = [[str(c) for c in frame.columns]] + [
        [f"{v:g}" if isinstance(v, float) else str(v) for v in row] for row in frame.to_numpy()
    ]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("---" for _ in frame.columns) + "|")
    return "\n".join(lines)


#: epochs of the small benchmark data sets (the command line trains longer; see docs)
EPOCHS = {"kang": 100, "kang_shifted": 100, "kang_donors": 100, "sim": 60, "hard": 60,
          "null": 100, "pancreas_e0.4": 40, "pancreas_e0.8": 40}


def kang(seed: int, shift: bool = True):
    """Kang on 2,000 HVGs; with ``shift``, CD14+ Monocytes 80 % fewer in CTRL, B cells CTRL only."""
    import anndata
    import scanpy as sc

    adata = anndata.read_h5ad(KANG)
    if not shift:
        sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=2000,
                                    batch_key="batch", subset=True)
        return adata
    rng = np.random.default_rng(seed)
    ctype, batch = adata.obs["cell_type"].astype(str), adata.obs["batch"].astype(str)
    mono, b_cells = "CD14+ Monocytes", "B cells"
    missing = {mono, b_cells} - set(ctype)
    if missing:  # a shift that removes nothing would be Kang as it is, under another name
        raise ValueError(f"{KANG} has no cell type {sorted(missing)}: {sorted(set(ctype))}")
    keep = np.ones(adata.n_obs, bool)
    mono_ctrl = np.flatnonzero((ctype == mono).to_numpy() & (batch == "CTRL").to_numpy())
    keep[rng.choice(mono_ctrl, int(len(mono_ctrl) * 0.8), replace=False)] = False
    keep[((ctype == b_cells) & (batch == "STIM")).to_numpy()] = False
    adata = adata[keep].copy()
    sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=2000,
                                batch_key="batch", subset=True)
    return adata


def kang_donors(seed: int, n_donors: int = 4):
    """Kang with the batch key a pseudo-donor: each condition's cells split into ``n_donors``
    donors, each with its own mix of cell types (a cell of type ``t`` goes to donor ``d`` with
    probability proportional to ``p_d[t]``, ``p_d ~ Dirichlet(1)``); no cell is dropped. The
    batch effect is the condition's; donors of a condition differ only in their mixes.
    """
    import anndata
    import scanpy as sc

    adata = anndata.read_h5ad(KANG)
    rng = np.random.default_rng(seed)
    ctype = adata.obs["cell_type"].astype(str).to_numpy()
    condition = adata.obs["batch"].astype(str).to_numpy()
    types = np.unique(ctype)
    donor = np.empty(adata.n_obs, dtype=object)
    for cond in np.unique(condition):
        mixes = rng.dirichlet(np.ones(len(types)), n_donors)  # (donor, type)
        for t, name in enumerate(types):
            cells = np.flatnonzero((condition == cond) & (ctype == name))
            odds = mixes[:, t] / mixes[:, t].sum()
            donor[cells] = [f"{cond}_{d}" for d in rng.choice(n_donors, len(cells), p=odds)]
    adata.obs["condition"] = adata.obs["batch"]
    adata.obs["batch"] = pd.Categorical(donor)
    sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=2000,
                                batch_key="condition", subset=True)  # (loess fails on donors)
    return adata


def load(dataset: str, seed: int):
    """(AnnData with counts in X and a lognorm layer, batch key, labels key).

    ``sim``: 3 batches, one type in one batch only; ``hard``: 4 batches, a strong gene-wise
    batch effect, two types in two batches each; ``kang``: 2,000 HVGs of Kang et al.;
    ``null``: Kang's STIM cells split at random into 3 batches (nothing to correct);
    ``kang_shifted``, ``kang_donors``: :func:`kang` with its shift, :func:`kang_donors`;
    ``pancreas_e0.4``, ``pancreas_e0.8``: ``atlas.py``'s pancreas-shaped simulation (14 types
    over 9 batches, Dirichlet(0.5) mixes) at that batch effect, the same cells as there.
    """
    import anndata
    import pandas as pd

    from scvi_mmd.cli.benchmark import select_genes
    from scvi_mmd.data import simulate_batches

    if dataset in ("kang", "null"):
        if not KANG.exists():
            raise SystemExit(f"{KANG} not found")
        adata = select_genes(anndata.read_h5ad(KANG), "batch", n_top_genes=2000)
        if dataset == "null":
            adata = adata[adata.obs["batch"] == "STIM"].copy()
            adata.obs["batch"] = pd.Categorical(
                np.random.default_rng(seed).integers(0, 3, adata.n_obs).astype(str))
        return adata, "batch", "cell_type"
    if dataset in ("kang_shifted", "kang_donors"):
        if not KANG.exists():
            raise SystemExit(f"{KANG} not found")
        adata = kang(seed) if dataset == "kang_shifted" else kang_donors(seed)
        return select_genes(adata, "batch", n_top_genes=0), "batch", "cell_type"
    if dataset.startswith("pancreas_e"):
        from atlas import simulate  # (atlas.py imports this module)

        adata = simulate(9, seed, mixes=True, n_types=14, alpha=0.5, exclusive=False,
                         batch_effect=float(dataset.removeprefix("pancreas_e")))
        return select_genes(adata, "batch", n_top_genes=0), "batch", "cell_type"
    if dataset == "sim":
        adata = simulate_batches(n_cells=2000, n_genes=500, n_batches=3, n_cell_types=5,
                                 batch_effect=0.5, type_effect=1.0, type_only_in_batch={4: 0},
                                 seed=seed)
    elif dataset == "hard":
        adata = simulate_batches(n_cells=2400, n_genes=500, n_batches=4, n_cell_types=6,
                                 batch_effect=1.0, type_effect=1.0,
                                 type_in_batches={4: [0, 1], 5: [1, 2]}, seed=seed)
    else:
        raise SystemExit(f"unknown data set {dataset!r}")
    return select_genes(adata, "batch", n_top_genes=0), "batch", "cell_type"


def purity_drop(table: pd.DataFrame, data_key: str = "data",
                prefix: str = "purity_") -> pd.Series:
    """Per row: the largest fall of a cell type's kNN purity (the columns named ``prefix...``)
    below SCVI's of the same data set (``data_key``) and seed; NaN without SCVI's row or any
    purity.
    """
    columns, keys = [c for c in table if c.startswith(prefix)], [data_key, "seed"]
    scvi = table.loc[table["method"] == "SCVI", keys + columns].drop_duplicates(keys)
    scvi = table[keys].merge(scvi, how="left", on=keys)  # (a left merge keeps the row order)
    falls = scvi[columns].to_numpy(float) - table[columns].to_numpy(float)
    return pd.Series(pd.DataFrame(falls).max(axis=1).to_numpy(), index=table.index)


def score_rows(adata, batch_key: str, labels_key: str, rows: list[dict]) -> None:
    """Add scib-metrics' batch / bio / total to each row (by its ``embedding``) from one
    Benchmarker call on those embeddings and ``obsm["X_pca"]``.
    """
    from scvi_mmd.cli.benchmark import score

    keys = list(dict.fromkeys(row["embedding"] for row in rows))
    table = score(adata, batch_key, labels_key, keys + ["X_pca"]).set_index("embedding")
    for row in rows:
        for column in ("Batch correction", "Bio conservation", "Total"):
            row[column] = float(table.loc[row["embedding"], column])
