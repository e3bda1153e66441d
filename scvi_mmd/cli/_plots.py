"""Plots of the command line: training curves, UMAPs, and the knob's trade-off curve.

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




def knob_curve(curve, chosen: float, path: Path, choice=None) -> Path:
    """The trade-off curve of a loss-conditional model: batch mixing against the preservation
    of each batch's own neighbourhoods, one point per weight (labelled), the chosen one ringed;
    the diagnostics against the weight; and ``L_mmd`` against the weight, with the automatic
    choice's target when there is one (``choice``, a :class:`~scvi_mmd.model.WeightChoice`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    x, y = curve["batch_mixing"].to_numpy(), curve["within_batch_preservation"].to_numpy()
    ax = axes[0]
    ax.plot(x, y, "-o", color="tab:blue")
    for i, w in enumerate(curve["mmd_weight"]):
        # alternate label sides so neighbouring points' labels do not overlap
        ax.annotate(f"{w:.3g}", (x[i], y[i]), textcoords="offset points",
                    xytext=(6, 6) if i % 2 == 0 else (6, -12), fontsize=8)
    pick = (curve["mmd_weight"] - chosen).abs().idxmin()
    ax.plot(x[pick], y[pick], "o", ms=14, mfc="none", mec="tab:red", mew=2)
    ax.set_xlabel("batch mixing (kNN, higher = better mixed)")
    ax.set_ylabel("within-batch neighbourhoods kept")
    how = "automatic" if choice is not None else "written latent"
    ax.set_title(f"trade-off, one training (ringed: {how}, w = {chosen:.3g})", fontsize=9)
    ax = axes[1]
    ax.semilogx(curve["mmd_weight"], curve["batch_mixing"], "-o", label="batch mixing")
    ax.semilogx(curve["mmd_weight"], curve["within_batch_preservation"], "-s",
                label="within-batch kept")
    if "label_purity" in curve:
        ax.semilogx(curve["mmd_weight"], curve["label_purity"], "-^", label="label purity")
    ax.axvline(chosen, color="tab:red", lw=1, ls="--")
    ax.set_xlabel("mmd_weight")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.02), ncol=3, fontsize=8, frameon=False)
    ax = axes[2]
    ax.semilogx(curve["mmd_weight"], curve["mmd_loss"], "-o", color="tab:gray")
    ax.axvline(chosen, color="tab:red", lw=1, ls="--")
    if choice is not None:
        if choice.target is not None:
            ax.axhline(choice.target, color="tab:red", lw=0.8, ls=":")
        ax.set_title(f"automatic weight {chosen:.3g}: {choice.rule}", fontsize=8)
    ax.set_xlabel("mmd_weight")
    ax.set_ylabel("L_mmd (batch discrepancy)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def umap_grid(adata, latents: dict, color: str, path: Path) -> Path:
    """One UMAP per weight (columns), coloured by ``color``; legend outside, right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    fig, axes = plt.subplots(1, len(latents), figsize=(3.2 * len(latents), 3.4), squeeze=False)
    categories = adata.obs[color].astype("category").cat.categories
    palette = dict(zip(categories, plt.get_cmap("tab10" if len(categories) <= 10
                                                else "tab20").colors, strict=False))
    for ax, (weight, latent) in zip(axes[0], latents.items(), strict=True):
        view = sc.AnnData(obs=adata.obs[[color]].copy())
        view.obsm[LATENT_KEY] = latent
        sc.pp.neighbors(view, use_rep=LATENT_KEY)
        sc.tl.umap(view)
        xy = view.obsm["X_umap"]
        for category in categories:
            mask = (view.obs[color] == category).to_numpy()
            ax.scatter(xy[mask, 0], xy[mask, 1], s=2, color=palette.get(category), label=category)
        ax.set_title(f"mmd_weight {weight:.3g}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), markerscale=4,
                       fontsize=8, frameon=False, title=color)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
