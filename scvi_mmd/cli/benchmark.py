"""Benchmark of the knob: scib-metrics scores of SCVIMMD over ``mmd_weight`` vs baselines.

Needs the ``benchmark`` extra (scib-metrics, harmonypy, scanorama, matplotlib). Used by
``benchmarks/integration.py`` and by ``scvi-mmd sweep``; every step is a plain function:

1. :func:`select_genes`: 2,000 highly variable genes, seurat_v3 on counts, per batch;
2. :func:`fit_pca`, :func:`fit_scvi`, :func:`fit_scvimmd`, :func:`fit_harmony`,
   :func:`fit_scanorama`: one embedding each, in ``obsm``, with its fit time;
3. :func:`score`: scib-metrics' :class:`~scib_metrics.benchmark.Benchmarker` on all embeddings;
4. :func:`plot_tradeoff` (:mod:`scvi_mmd.cli.tradeoff_plot`), :func:`plot_metric_curves`,
   :func:`plot_umaps`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

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
        sc.pp.highly_variable_genes(
            adata, flavor="seurat_v3", n_top_genes=n_top_genes, batch_key=batch_key, subset=True
        )
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
    plot_tradeoff(results, output_dir / "tradeoff.png")
    plot_metric_curves(results, output_dir / "metrics_vs_weight.png")
    plot_umaps(data, results, batch_key, labels_key, output_dir / "umaps.png", umap_weights)
    return results


# ------------------------------------------------------------------ plots


def _summary(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per method / mode / weight."""
    keys = ["method", "config", "mmd_mode", "mmd_weight"]
    numeric = results.drop(columns=["seed", "embedding", "max_epochs"], errors="ignore")
    numeric = numeric.fillna({"config": "-", "mmd_mode": "-", "mmd_weight": -1})
    grouped = numeric.groupby(keys)
    mean, std = grouped.mean(), grouped.std().fillna(0.0)
    return mean.join(std, rsuffix="_sd").reset_index()


def plot_tradeoff(results: pd.DataFrame, path) -> None:
    """Batch correction vs bio conservation: one line per SCVIMMD setting through its weights.

    Markers are labelled with the weight (labels placed where they overlap nothing), the
    methods without a knob are single points, error bars are the sd over seeds and the legend
    is outside the axes (:mod:`scvi_mmd.cli.tradeoff_plot`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scvi_mmd.cli.tradeoff_plot import legend_outside, plot_tradeoff_lines

    summary = _summary(results)
    mmd = summary["method"] == "SCVIMMD"
    settings = summary["config"].astype(str) + " (" + summary["mmd_mode"].astype(str) + ")"
    summary["method"] = summary["method"].where(~mmd, "SCVIMMD " + settings)
    summary["knob_value"] = summary["mmd_weight"].where(mmd)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    plot_tradeoff_lines(ax, summary, title="The knob: mmd_weight moves along the trade-off")
    legend_outside([ax])
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def plot_metric_curves(results: pd.DataFrame, path) -> None:
    """Batch, bio and total scores against the weight (log axis; weight 0 drawn at the left)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = _summary(results)
    mmd = summary[summary["method"] == "SCVIMMD"]
    if mmd.empty:
        return
    positive = mmd["mmd_weight"][mmd["mmd_weight"] > 0]
    zero_at = positive.min() / 10 if len(positive) else 0.1
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharex=True)
    for ax, metric in zip(axes, ("Batch correction", "Bio conservation", "Total"), strict=True):
        for (config, mode), part in mmd.groupby(["config", "mmd_mode"]):
            part = part.sort_values("mmd_weight")
            x = part["mmd_weight"].where(part["mmd_weight"] > 0, zero_at)
            ax.errorbar(x, part[metric], yerr=part[f"{metric}_sd"], marker="o", capsize=2,
                        label=f"{config} ({mode})")
        for _, row in summary[summary["method"] != "SCVIMMD"].iterrows():
            ax.axhline(row[metric], ls="--", lw=0.8, color="grey")
            ax.annotate(row["method"], (zero_at, row[metric]), fontsize=7, color="grey")
        ax.set_xscale("log")
        ax.set_xlabel(f"mmd_weight (0 drawn at {zero_at:g})")
        ax.set_title(metric)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_umaps(adata, results, batch_key, labels_key, path, weights=None) -> None:
    """UMAPs coloured by batch and by cell type for a few weights (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    first = results[(results["method"] == "SCVIMMD") & (results["seed"] == results["seed"].min())]
    if first.empty:
        return
    first = first[(first["mmd_mode"] == first["mmd_mode"].iloc[-1])
                  & (first["config"] == first["config"].iloc[-1])].sort_values("mmd_weight")
    if weights is None:
        picks = np.unique(np.linspace(0, len(first) - 1, min(4, len(first))).round().astype(int))
        first = first.iloc[picks]
    else:
        first = first[first["mmd_weight"].isin(weights)]
    fig, axes = plt.subplots(2, len(first), figsize=(3.2 * len(first), 6.2), squeeze=False)
    for col, (_, row) in enumerate(first.iterrows()):
        view = sc.AnnData(obs=adata.obs[[batch_key, labels_key]].copy())
        view.obsm["X_emb"] = adata.obsm[row["embedding"]]
        sc.pp.neighbors(view, use_rep="X_emb", random_state=0)
        sc.tl.umap(view, random_state=0)
        for r, key in enumerate((batch_key, labels_key)):
            sc.pl.umap(view, color=key, ax=axes[r, col], show=False, size=6,
                       legend_loc="none" if col < len(first) - 1 else "right margin",
                       title=f"w={row['mmd_weight']:g}: {key}")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
