"""Plots of ``integrate`` (training curves, UMAP) and ``sweep`` (trade-off, metrics against
the knob, UMAPs over it): legends outside the data, labels that do not overlap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ._common import LATENT_KEY


def training_and_umap(model, adata, latent, batch_key, labels_key, folder: Path) -> list[Path]:
    """Training curves (ELBO, MMD term) and a UMAP of the latent coloured by batch and label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    folder.mkdir(parents=True, exist_ok=True)
    history = model.history
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("elbo", axes[0]), ("mmd_loss", axes[1])):
        for mode in ("train", "validation"):
            name = f"{key}_{mode}"
            if name in history:
                series = history[name][name].astype(float)
                ax.plot(series.index, series.to_numpy(), label=mode)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key.replace("_", " "))
        ax.legend()
    fig.suptitle("SCVIMMD training")
    fig.tight_layout()
    curves = folder / "training_curves.png"
    fig.savefig(curves, dpi=100)
    plt.close(fig)

    view = sc.AnnData(obs=adata.obs[[k for k in (batch_key, labels_key) if k]].copy())
    view.obsm[LATENT_KEY] = latent
    sc.pp.neighbors(view, use_rep=LATENT_KEY)
    sc.tl.umap(view)
    colors = [k for k in (batch_key, labels_key) if k]
    fig = sc.pl.umap(view, color=colors, show=False, return_fig=True)
    umap = folder / "umap.png"
    fig.savefig(umap, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [curves, umap]


def _summary(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per method / mode / weight."""
    keys = ["method", "config", "mmd_mode", "mmd_weight"]
    numeric = results.drop(columns=["seed", "embedding", "max_epochs"], errors="ignore")
    numeric = numeric.fillna({"config": "-", "mmd_mode": "-", "mmd_weight": -1})
    grouped = numeric.groupby(keys)
    mean, std = grouped.mean(), grouped.std().fillna(0.0)
    return mean.join(std, rsuffix="_sd").reset_index()


def plot_tradeoff(results: pd.DataFrame, path) -> None:
    """Batch correction vs bio conservation: one line per SCVIMMD setting through its weights
    (:mod:`scvi_mmd.cli.tradeoff_plot`), error bars the sd over seeds.
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
