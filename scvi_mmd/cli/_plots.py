"""Plots of the command line: training curves and UMAPs.

Each plot is made to be read at a glance: legends outside the data, labels that do not overlap.
"""

from __future__ import annotations

from pathlib import Path

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
