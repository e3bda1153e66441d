"""Tables and plots of ``benchmarks/peers.py``: scvi-mmd beside TRVAE, SysVI and fixed methods.

Usage::

    python benchmarks/peers_report.py [--no-umap]

Reads ``benchmarks/results/peers/<dataset>.csv`` (the keys of ``DATASETS``) and writes, in the
same folder (``max_purity_drop``: the largest fall of any type's kNN purity below SCVI's of the
same seed, where ``peers.py`` recorded every type's purity):

* ``summary.md``: per data set, every method and knob value (mean +- sd over seeds), and the
  headline table: each method's best scib total (mean over seeds, at its best knob value) and
  its batch score at SCVI's bio level;
* ``tradeoff_peers.png``: one panel per data set (three to a row), batch correction (x)
  against bio conservation (y), one line per tunable method through its knob values
  (labelled), fixed methods as points, the library's default (the strength at
  ``DEFAULT_STRENGTH``) as a star, error bars = sd over seeds, legend outside;
* ``umap_peers_<dataset>.png``: one column per method at its best setting (seed 0), coloured
  by batch and by cell type (from ``results/peers/embeddings/``, which ``peers.py`` writes).

"Batch at SCVI's bio": the best batch score a method reaches while its bio conservation stays
at or above SCVI's (mean over seeds), reading the line between knob values linearly where it
crosses SCVI's bio; "-" when no setting keeps SCVI's bio.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from common import markdown, purity_drop

from scvi_mmd.cli.plots import legend_outside, plot_tradeoff_lines, tradeoff_styles

OUT = Path(__file__).resolve().parent / "results" / "peers"
METRICS = ["Batch correction", "Bio conservation", "Total", "knn_batch_mixing", "min_purity",
           "max_intrusion", "shared_batch_mixing", "max_purity_drop", "fit_seconds"]
DATASETS = {"kang": "Kang PBMC (IFN-beta), 2 batches", "sim": "simulation, 3 batches, "
            "one type in one batch only",
            "kang_shifted": "Kang, shifted mix (B cells CTRL only)",
            "kang_donors": "Kang as 8 pseudo-donors, own mixes",
            "pancreas_e0.4": "pancreas-shaped simulation, 9 batches, 14 types, batch effect 0.4",
            "pancreas_e0.8": "pancreas-shaped simulation, 9 batches, 14 types, batch effect 0.8"}
STRENGTH = "scvi-mmd (strength)"
DEFAULT = "scvi-mmd default"  # the strength row at DEFAULT_STRENGTH, shown as its own setting


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds per data set, method and knob value."""
    table = table.assign(knob_value=table["knob_value"].astype(float))
    keys = ["dataset", "method", "knob", "knob_value"]
    metrics = [m for m in METRICS if m in table]
    groups = table.fillna({"knob": ""}).groupby(keys, sort=False, dropna=False)
    mean, sd = groups[metrics].mean(), groups[metrics].std()
    summary = mean.join(sd, rsuffix="_sd").join(groups["seed"].nunique().rename("seeds"))
    if "embedding" in table:  # one obsm key per setting (the same in every seed)
        summary = summary.join(groups["embedding"].first())
    return summary.reset_index()


def default_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The library default: the strength's rows at :data:`scvi_mmd.DEFAULT_STRENGTH`."""
    from scvi_mmd import DEFAULT_STRENGTH

    rows = summary[(summary["method"] == STRENGTH)
                   & np.isclose(summary["knob_value"].astype(float), DEFAULT_STRENGTH)]
    return rows.assign(method=DEFAULT)


def batch_at_bio(part: pd.DataFrame, bio_level: float) -> float:
    """Best batch score with bio >= ``bio_level`` along the knob line (linear between values)."""
    part = part.sort_values("knob_value")
    batch, bio = part["Batch correction"].to_numpy(), part["Bio conservation"].to_numpy()
    candidates = list(batch[bio >= bio_level])
    for i in range(len(part) - 1):
        (b0, b1), (y0, y1) = batch[i:i + 2], bio[i:i + 2]
        if (y0 - bio_level) * (y1 - bio_level) < 0:
            candidates.append(b0 + (bio_level - y0) / (y1 - y0) * (b1 - b0))
    return max(candidates) if candidates else float("nan")


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    """Per data set and method: best total and its setting, batch at SCVI's bio."""
    rows = []
    summary = pd.concat([summary, default_rows(summary)], ignore_index=True)
    for dataset, data in summary.groupby("dataset", sort=False):
        scvi_bio = float(data.loc[data["method"] == "SCVI", "Bio conservation"].iloc[0])
        for method, part in data.groupby("method", sort=False):
            best = part.loc[part["Total"].idxmax()]
            setting = "" if pd.isna(best["knob_value"]) else f"{best['knob']}={best['knob_value']:g}"
            rows.append({
                "dataset": dataset, "method": method, "best setting": setting or "-",
                "best total": f"{best['Total']:.3f} +- {best['Total_sd']:.3f}",
                "batch / bio there": f"{best['Batch correction']:.3f} / "
                                     f"{best['Bio conservation']:.3f}",
                "batch at SCVI's bio": _fmt(batch_at_bio(part, scvi_bio)),
                "exclusive-type purity there": _fmt(best.get("min_purity", np.nan)),
                "fit s": f"{best['fit_seconds']:.0f}",
                "knob values x seeds": f"{part['knob_value'].notna().sum() or 1} x "
                                       f"{int(part['seeds'].min())}",
            })
    return pd.DataFrame(rows)


def _fmt(value: float) -> str:
    return "-" if pd.isna(value) else f"{value:.3f}"


def plot_tradeoff(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(summary["dataset"].unique())
    columns = min(3, len(datasets))  # (rows of at most three panels)
    rows = -(-len(datasets) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.2 * columns, 5.2 * rows), squeeze=False)
    axes = list(axes.flat)
    styles = tradeoff_styles(summary)  # a method looks the same in every panel
    for ax, dataset in zip(axes, datasets, strict=False):
        data = summary[summary["dataset"] == dataset]
        plot_tradeoff_lines(ax, data, highlight=default_rows(data),
                            title=DATASETS.get(dataset, dataset), styles=styles)
    for ax in axes[len(datasets):]:
        ax.remove()
    legend_outside(axes[:len(datasets)])
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def plot_umaps(summary: pd.DataFrame, dataset: str, path: Path, seed: int = 0) -> None:
    """UMAP per method at its best setting, coloured by batch (top) and cell type (bottom)."""
    import anndata
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    saved = np.load(OUT / "embeddings" / f"{dataset}_s{seed}.npz", allow_pickle=True)
    data = summary[summary["dataset"] == dataset]
    picks = []
    for method, part in data.groupby("method", sort=False):
        best = part.loc[part["Total"].idxmax()]
        key = best["embedding"]
        if key in saved:
            setting = "" if pd.isna(best["knob_value"]) else f"\n{best['knob']}={best['knob_value']:g}"
            picks.append((key, f"{method}{setting}"))
    obs = pd.DataFrame({"batch": saved["batch"], "cell type": saved["labels"]})
    fig, axes = plt.subplots(2, len(picks), figsize=(2.6 * len(picks), 5.4), squeeze=False)
    for col, (key, title) in enumerate(picks):
        view = anndata.AnnData(obs=obs.copy())
        view.obsm["X_emb"] = saved[key]
        sc.pp.neighbors(view, use_rep="X_emb", random_state=0)
        sc.tl.umap(view, random_state=0)
        for row, color in enumerate(("batch", "cell type")):
            sc.pl.umap(view, color=color, ax=axes[row, col], show=False, size=4,
                       legend_loc="right margin" if col == len(picks) - 1 else "none",
                       legend_fontsize=7, title=title if row == 0 else "", frameon=False)
    for row, color in enumerate(("batch", "cell type")):
        axes[row, 0].axis("on")
        axes[row, 0].set_ylabel(color)
        axes[row, 0].set_xlabel("")
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
    for ax in axes[0]:
        ax.title.set_fontsize(8)
    fig.tight_layout()
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-umap", action="store_true")
    args = parser.parse_args(argv)
    tables = [pd.read_csv(OUT / f"{d}.csv") for d in DATASETS if (OUT / f"{d}.csv").exists()]
    table = pd.concat(tables, ignore_index=True)
    table = table.assign(max_purity_drop=purity_drop(table, "dataset", "type_purity["))
    summary = summarise(table)
    parts = ["# scvi-mmd beside its peers (`benchmarks/peers.py`, `peers_report.py`)", "",
             "scib-metrics scores, all embeddings of a data set and seed in one Benchmarker "
             "call; mean +- sd over seeds.", "", "## Headline", "",
             markdown(headline(summary)), "", "![trade-off](tradeoff_peers.png)", ""]
    for dataset in summary["dataset"].unique():
        data = summary[summary["dataset"] == dataset]
        columns = ["method", "knob", "knob_value", "seeds"]
        shown = data[columns].copy()
        shown["knob_value"] = [("" if pd.isna(v) else f"{v:g}") for v in shown["knob_value"]]
        for metric in METRICS:
            if metric in data and data[metric].notna().any():
                shown[metric] = [f"{m:.3f} +- {s:.3f}" if not pd.isna(m) else ""
                                 for m, s in zip(data[metric], data[f"{metric}_sd"].fillna(0),
                                                 strict=True)]
        parts += [f"## {DATASETS.get(dataset, dataset)}", "", markdown(shown), ""]
        umap = OUT / f"umap_peers_{dataset}.png"
        if not args.no_umap and (OUT / "embeddings" / f"{dataset}_s0.npz").exists():
            plot_umaps(summary, dataset, umap)
        if umap.exists():  # (one drawn before stays linked when its embeddings are gone)
            parts += [f"![UMAPs, {dataset}]({umap.name})", ""]
    plot_tradeoff(summary, OUT / "tradeoff_peers.png")
    (OUT / "summary.md").write_text("\n".join(parts))
    print("\n".join(parts))


if __name__ == "__main__":
    main()
