"""Benchmark of the knob: scib-metrics scores of SCVIMMD over strengths or weights vs baselines.

Needs the ``benchmark`` extra (scib-metrics, harmonypy, scanorama, matplotlib). Used by
``scvi-mmd sweep`` and the scripts under ``benchmarks/``; every step is a plain function:

1. :func:`select_genes`: 2,000 highly variable genes, seurat_v3 on counts, per batch;
2. :func:`fit_pca`, :func:`fit_scvi`, :func:`fit_scvimmd`, :func:`fit_harmony`,
   :func:`fit_scanorama`: one embedding each, in ``obsm``, with its fit time;
3. :func:`score`: scib-metrics' :class:`~scib_metrics.benchmark.Benchmarker` on all embeddings;
4. the sweep's plots (:mod:`scvi_mmd.cli._plots`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from scvi_mmd.cli._common import highly_variable

BASELINES = ("pca", "scvi", "harmony", "scanorama")


def select_genes(adata, batch_key: str, n_top_genes: int = 2000, layer: str | None = None):
    """Copy of ``adata`` with the ``n_top_genes`` most variable genes (seurat_v3, per batch).

    Counts stay in ``X`` (from ``layer`` if given); log-normalised values go to
    ``layers["lognorm"]``.
    """
    import scanpy as sc

    adata = adata.copy()
    if layer is not None:
        adata.X = adata.layers[layer].copy()
    if 0 < n_top_genes < adata.n_vars:
        adata = adata[:, highly_variable(adata, n_top_genes, batch_key)].copy()
    lognorm = adata.copy()
    sc.pp.normalize_total(lognorm, target_sum=1e4)
    sc.pp.log1p(lognorm)
    adata.layers["lognorm"] = lognorm.X
    return adata


def fit_pca(adata, n_comps: int = 50) -> float:
    """Unintegrated PCA of the log-normalised data into ``obsm["X_pca"]``; returns seconds."""
    import scanpy as sc

    start = time.perf_counter()
    data = sc.AnnData(adata.layers["lognorm"].copy())
    sc.pp.scale(data, max_value=10)
    sc.pp.pca(data, n_comps=min(n_comps, min(data.shape) - 1))
    adata.obsm["X_pca"] = data.obsm["X_pca"]
    return time.perf_counter() - start


def _train(model, max_epochs: int, accelerator: str, batch_size: int) -> None:
    model.train(
        max_epochs=max_epochs,
        batch_size=batch_size,
        accelerator=accelerator,
        enable_progress_bar=False,
        check_val_every_n_epoch=max_epochs,
    )


def fit_scvi(adata, batch_key, key, seed=0, max_epochs=150, accelerator="auto",
             batch_size=128, **model_kwargs) -> float:
    """``scvi.model.SCVI`` latent into ``obsm[key]``; returns seconds."""
    import scvi

    start = time.perf_counter()
    scvi.settings.seed = seed
    data = adata.copy()
    scvi.model.SCVI.setup_anndata(data, batch_key=batch_key)
    model = scvi.model.SCVI(data, **model_kwargs)
    _train(model, max_epochs, accelerator, batch_size)
    adata.obsm[key] = model.get_latent_representation()
    return time.perf_counter() - start


def fit_scvimmd(adata, batch_key, key, seed=0, max_epochs=150, accelerator="auto",
                batch_size=128, **model_kwargs) -> float:
    """``SCVIMMD`` latent into ``obsm[key]``; returns seconds.

    ``model_kwargs``: SCVIMMD arguments (mmd_* etc.); a ``setup`` entry holds extra
    :meth:`~scvi_mmd.SCVIMMD.setup_anndata` arguments (e.g. ``labels_key``).
    """
    import scvi

    from scvi_mmd import SCVIMMD

    start = time.perf_counter()
    scvi.settings.seed = seed
    data = adata.copy()
    setup = model_kwargs.pop("setup", {})
    SCVIMMD.setup_anndata(data, batch_key=batch_key, **setup)
    model = SCVIMMD(data, **model_kwargs)
    _train(model, max_epochs, accelerator, batch_size)
    adata.obsm[key] = model.get_latent_representation()
    return time.perf_counter() - start


def fit_harmony(adata, batch_key, key="X_harmony", seed=0) -> float:
    """Harmony on ``obsm["X_pca"]`` (``harmonypy.run_harmony`` directly); returns seconds."""
    import harmonypy

    start = time.perf_counter()
    result = harmonypy.run_harmony(
        np.asarray(adata.obsm["X_pca"]), adata.obs, [batch_key], random_state=seed,
        verbose=False,
    )
    corrected = np.asarray(result.Z_corr)
    if corrected.shape[0] != adata.n_obs:
        corrected = corrected.T
    adata.obsm[key] = corrected
    return time.perf_counter() - start


def fit_scanorama(adata, batch_key, key="X_scanorama", seed=0) -> float:
    """Scanorama on the log-normalised data, batch by batch; returns seconds."""
    import scanorama

    start = time.perf_counter()
    batches = adata.obs[batch_key].to_numpy()
    names = list(pd.unique(batches))
    datasets = [adata.layers["lognorm"][batches == b] for b in names]
    genes = [list(adata.var_names) for _ in names]
    np.random.seed(seed)
    integrated, _ = scanorama.integrate(datasets, genes, dimred=50, verbose=0, seed=seed)
    embedding = np.zeros((adata.n_obs, integrated[0].shape[1]), dtype=np.float32)
    for b, values in zip(names, integrated, strict=True):
        embedding[batches == b] = values
    adata.obsm[key] = embedding
    return time.perf_counter() - start


def score(adata, batch_key: str, labels_key: str, keys: list[str], n_jobs: int = 2):
    """scib-metrics Benchmarker (default metrics) on ``obsm[keys]``; one row per key."""
    from scib_metrics.benchmark import Benchmarker

    bench = Benchmarker(
        adata,
        batch_key=batch_key,
        label_key=labels_key,
        embedding_obsm_keys=keys,
        pre_integrated_embedding_obsm_key="X_pca",
        n_jobs=n_jobs,
        progress_bar=False,
    )
    bench.benchmark()
    table = bench.get_results(min_max_scale=False)
    table = table.drop(index="Metric Type", errors="ignore").astype(float)
    table.index.name = "embedding"
    return table.reset_index()


def score_rows(adata, batch_key: str, labels_key: str, rows: list[dict]) -> None:
    """Add scib-metrics' batch / bio / total to each row, by its ``embedding`` key, from one
    :func:`score` call on those embeddings and ``X_pca`` (which must be in ``obsm``).
    """
    keys = list(dict.fromkeys(row["embedding"] for row in rows))
    table = score(adata, batch_key, labels_key, keys + ["X_pca"]).set_index("embedding")
    for row in rows:
        for column in ("Batch correction", "Bio conservation", "Total"):
            row[column] = float(table.loc[row["embedding"], column])


def run_sweep(
    adata,
    batch_key: str,
    labels_key: str,
    weights=(0.0, 1.0, 10.0, 100.0),
    modes=("normal",),
    seeds=(0,),
    baselines=BASELINES,
    layer: str | None = None,
    n_top_genes: int = 2000,
    max_epochs: int = 150,
    accelerator: str = "auto",
    output_dir: str | Path = "sweep",
    mmd_kwargs: dict | None = None,
    configs: dict[str, dict] | None = None,
    n_jobs: int = 2,
    umap_weights: list[float] | None = None,
    strengths=(),
) -> pd.DataFrame:
    """Fit and score everything, write ``results.csv`` and plots; return the table.

    Parameters
    ----------
    adata
        AnnData with raw counts (in ``X`` or ``layer``).
    batch_key, labels_key
        obs columns with batches and cell types.
    weights, modes
        Grid of ``mmd_weight`` and ``mmd_mode`` for SCVIMMD.
    strengths
        ``mmd_strength`` values, each fit with the library's default configuration
        (``mmd_strength`` column; their ``mmd_weight`` is empty).
    seeds
        Seeds; every scVI-family fit and Harmony/Scanorama is repeated per seed.
    baselines
        Subset of ``("pca", "scvi", "harmony", "scanorama")``; PCA is always computed (it is
        scib-metrics' unintegrated reference) but only scored when listed.
    n_top_genes, max_epochs, accelerator
        Gene selection and training settings, the same for every scVI-family fit.
    output_dir
        Folder for ``results.csv`` and the PNG plots.
    mmd_kwargs
        Extra SCVIMMD arguments (e.g. ``mmd_kernel_gamma``), for a single configuration.
    configs
        Several named configurations ``{name: SCVIMMD arguments}``, each run over the grid;
        overrides ``mmd_kwargs``. The name is in the ``config`` column.
    """
    if configs is None:
        configs = {"default": dict(mmd_kwargs or {})}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data = select_genes(adata, batch_key, n_top_genes, layer)
    rows = []
    pca_seconds = fit_pca(data)
    for seed in seeds:
        fits = {}
        if "pca" in baselines:
            fits["X_pca"] = ("Unintegrated PCA", None, None, pca_seconds)
        if "scvi" in baselines:
            key = f"X_scvi_s{seed}"
            fits[key] = ("SCVI", None, None, fit_scvi(data, batch_key, key, seed, max_epochs,
                                                       accelerator))
        if "harmony" in baselines:
            key = f"X_harmony_s{seed}"
            fits[key] = ("Harmony", None, None, fit_harmony(data, batch_key, key, seed))
        if "scanorama" in baselines:
            key = f"X_scanorama_s{seed}"
            fits[key] = ("Scanorama", None, None, fit_scanorama(data, batch_key, key, seed))
        for name, kwargs in configs.items():
            for mode in modes:
                grid = weights[name] if isinstance(weights, dict) else weights
                for weight in grid:
                    key = f"X_mmd_{name}_{mode}_w{weight:g}_s{seed}"
                    seconds = fit_scvimmd(data, batch_key, key, seed, max_epochs, accelerator,
                                          mmd_mode=mode, mmd_weight=weight, **dict(kwargs))
                    fits[key] = ("SCVIMMD", name, mode, weight, seconds)
        for strength in strengths:
            key = f"X_mmd_strength_{strength:g}_s{seed}"
            seconds = fit_scvimmd(data, batch_key, key, seed, max_epochs, accelerator,
                                  mmd_strength=strength)
            fits[key] = ("SCVIMMD", f"strength {strength:g}", None, None, seconds)
        for key, value in list(fits.items()):
            if len(value) == 4:
                fits[key] = (value[0], None, *value[1:])
        table = score(data, batch_key, labels_key, list(fits), n_jobs=n_jobs)
        for _, row in table.iterrows():
            method, config, mode, weight, seconds = fits[row["embedding"]]
            strength = (float(config.split()[1]) if isinstance(config, str)
                        and config.startswith("strength ") else None)
            rows.append({"method": method, "config": config, "mmd_mode": mode,
                         "mmd_weight": weight, "mmd_strength": strength, "seed": seed,
                         "max_epochs": max_epochs,
                         "fit_seconds": seconds,
                         **row.to_dict()})
        results = pd.DataFrame(rows)
        results.to_csv(output_dir / "results.csv", index=False)
    results = pd.DataFrame(rows)
    from scvi_mmd.cli._plots import plot_metric_curves, plot_tradeoff, plot_umaps

    plot_tradeoff(results, output_dir / "tradeoff.png")
    plot_metric_curves(results, output_dir / "metrics_vs_weight.png")
    plot_umaps(data, results, batch_key, labels_key, output_dir / "umaps.png", umap_weights)
    return results
