"""``scvi-mmd sweep``'s fits and scores (the ``benchmark`` extra), also used by ``benchmarks/``:
gene selection, one embedding per method into ``obsm`` (returning its fit time), and
scib-metrics' :class:`~scib_metrics.benchmark.Benchmarker` on all of them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from scvi_mmd.cli._common import highly_variable

BASELINES = ("pca", "scvi", "harmony", "scanorama")


def select_genes(adata, batch_key: str, n_top_genes: int = 2000, layer: str | None = None):
    """A copy with the ``n_top_genes`` most variable genes (seurat_v3 per batch), counts in
    ``X`` and log-normalised values in ``layers["lognorm"]``.
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


def fit_scvi(adata, batch_key, key, seed=0, max_epochs=150, accelerator="auto",
             batch_size=128, model_cls=None, **model_kwargs) -> float:
    """``scvi.model.SCVI`` (or ``model_cls``) latent into ``obsm[key]``; returns seconds.

    A ``setup`` entry of ``model_kwargs`` goes to ``setup_anndata`` (e.g. ``labels_key``).
    """
    import scvi

    start = time.perf_counter()
    scvi.settings.seed = seed
    model_cls = model_cls or scvi.model.SCVI
    data = adata.copy()
    model_cls.setup_anndata(data, batch_key=batch_key, **model_kwargs.pop("setup", {}))
    model = model_cls(data, **model_kwargs)
    model.train(max_epochs=max_epochs, batch_size=batch_size, accelerator=accelerator,
                enable_progress_bar=False, check_val_every_n_epoch=max_epochs)
    adata.obsm[key] = model.get_latent_representation()
    return time.perf_counter() - start


def fit_scvimmd(adata, batch_key, key, seed=0, max_epochs=150, accelerator="auto",
                batch_size=128, **model_kwargs) -> float:
    """:class:`~scvi_mmd.SCVIMMD` latent into ``obsm[key]`` (as :func:`fit_scvi`)."""
    from scvi_mmd import SCVIMMD

    return fit_scvi(adata, batch_key, key, seed, max_epochs, accelerator, batch_size,
                    model_cls=SCVIMMD, **model_kwargs)


def fit_harmony(adata, batch_key, key="X_harmony", seed=0) -> float:
    """Harmony on ``obsm["X_pca"]`` (``harmonypy.run_harmony`` directly); returns seconds."""
    import harmonypy

    start = time.perf_counter()
    result = harmonypy.run_harmony(np.asarray(adata.obsm["X_pca"]), adata.obs, [batch_key],
                                   random_state=seed, verbose=False)
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

    bench = Benchmarker(adata, batch_key=batch_key, label_key=labels_key,
                        embedding_obsm_keys=keys, pre_integrated_embedding_obsm_key="X_pca",
                        n_jobs=n_jobs, progress_bar=False)
    bench.benchmark()
    table = bench.get_results(min_max_scale=False)
    table = table.drop(index="Metric Type", errors="ignore").astype(float)
    table.index.name = "embedding"
    return table.reset_index()


def _fit_row(method, seconds, seed, max_epochs, config=None, mode=None, weight=None,
             strength=None) -> dict:
    """One fit's columns of ``results.csv``, before its scores."""
    return {"method": method, "config": config, "mmd_mode": mode, "mmd_weight": weight,
            "mmd_strength": strength, "seed": seed, "max_epochs": max_epochs,
            "fit_seconds": seconds}


def run_sweep(adata, batch_key: str, labels_key: str, weights=(0.0, 1.0, 10.0, 100.0),
              modes=("normal",), seeds=(0,), baselines=BASELINES, layer: str | None = None,
              n_top_genes: int = 2000, max_epochs: int = 150, accelerator: str = "auto",
              output_dir: str | Path = "sweep", strengths=(), n_jobs: int = 2) -> pd.DataFrame:
    """Fit and score everything, write ``results.csv`` and plots; return the table.

    ``weights`` x ``modes`` are fixed-weight SCVIMMD fits (``config`` ``"default"``);
    ``strengths``, fits of the default configuration. Every fit and baseline (``pca``,
    ``scvi``, ``harmony``, ``scanorama``; PCA is always computed, scib-metrics' unintegrated
    reference) is repeated per seed.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data = select_genes(adata, batch_key, n_top_genes, layer)
    rows = []
    pca_seconds = fit_pca(data)
    for seed in seeds:
        fits = {}  # obsm key -> the fit's columns of results.csv
        if "pca" in baselines:
            fits["X_pca"] = _fit_row("Unintegrated PCA", pca_seconds, seed, max_epochs)
        if "scvi" in baselines:
            key = f"X_scvi_s{seed}"
            seconds = fit_scvi(data, batch_key, key, seed, max_epochs, accelerator)
            fits[key] = _fit_row("SCVI", seconds, seed, max_epochs)
        if "harmony" in baselines:
            key = f"X_harmony_s{seed}"
            fits[key] = _fit_row("Harmony", fit_harmony(data, batch_key, key, seed), seed,
                                 max_epochs)
        if "scanorama" in baselines:
            key = f"X_scanorama_s{seed}"
            fits[key] = _fit_row("Scanorama", fit_scanorama(data, batch_key, key, seed), seed,
                                 max_epochs)
        for mode in modes:
            for weight in weights:
                key = f"X_mmd_default_{mode}_w{weight:g}_s{seed}"
                seconds = fit_scvimmd(data, batch_key, key, seed, max_epochs, accelerator,
                                      mmd_mode=mode, mmd_weight=weight)
                fits[key] = _fit_row("SCVIMMD", seconds, seed, max_epochs, "default", mode,
                                     weight)
        for strength in strengths:
            key = f"X_mmd_strength_{strength:g}_s{seed}"
            seconds = fit_scvimmd(data, batch_key, key, seed, max_epochs, accelerator,
                                  mmd_strength=strength)
            fits[key] = _fit_row("SCVIMMD", seconds, seed, max_epochs, f"strength {strength:g}",
                                 strength=strength)
        table = score(data, batch_key, labels_key, list(fits), n_jobs=n_jobs)
        rows += [{**fits[row["embedding"]], **row.to_dict()} for _, row in table.iterrows()]
        pd.DataFrame(rows).to_csv(output_dir / "results.csv", index=False)
    results = pd.DataFrame(rows)
    from scvi_mmd.cli.plots import plot_metric_curves, plot_tradeoff, plot_umaps

    plot_tradeoff(results, output_dir / "tradeoff.png")
    plot_metric_curves(results, output_dir / "metrics_vs_weight.png")
    plot_umaps(data, results, batch_key, labels_key, output_dir / "umaps.png")
    return results
