"""Plots of ``integrate`` (training curves, UMAP) and ``sweep`` (trade-off, metrics against
the knob, UMAPs over it), read at a glance: legends outside the data, labels that do not
overlap. A trade-off is drawn from a summary table, one row per ``method`` and ``knob_value``
(NaN without a knob) with the two metrics and optionally their ``<metric>_sd``: a method with
two or more knob values is a line through them, each marker labelled with its value.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import cycle
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import LATENT_KEY


def _figure(figsize, **subplots):
    """A figure with its own Agg canvas and its axes (``Figure.subplots``), outside pyplot:
    drawn for a file only, it switches no backend (a notebook calling these keeps its own)
    and is never left open.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(**subplots)


def training_and_umap(model, adata, latent, batch_key, labels_key, folder: Path) -> list[Path]:
    """Training curves (ELBO, MMD term) and a UMAP of the latent coloured by batch and label."""
    import scanpy as sc

    folder.mkdir(parents=True, exist_ok=True)
    history = model.history
    fig, axes = _figure((10, 4), ncols=2)
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

    view = sc.AnnData(obs=adata.obs[[k for k in (batch_key, labels_key) if k]].copy())
    view.obsm[LATENT_KEY] = latent
    sc.pp.neighbors(view, use_rep=LATENT_KEY)
    sc.tl.umap(view)
    colors = [k for k in (batch_key, labels_key) if k]
    fig = sc.pl.umap(view, color=colors, show=False, return_fig=True)  # (scanpy's, pyplot's)
    umap = folder / "umap.png"
    fig.savefig(umap, dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

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
    (:func:`plot_tradeoff_lines`), error bars the sd over seeds.
    """
    summary = _summary(results)
    mmd = summary["method"] == "SCVIMMD"
    settings = summary["config"].astype(str) + " (" + summary["mmd_mode"].astype(str) + ")"
    summary["method"] = summary["method"].where(~mmd, "SCVIMMD " + settings)
    summary["knob_value"] = summary["mmd_weight"].where(mmd)
    fig, ax = _figure((6.5, 5))
    plot_tradeoff_lines(ax, summary, title="The knob: mmd_weight moves along the trade-off")
    legend_outside([ax])
    fig.savefig(path, dpi=90, bbox_inches="tight")


def plot_metric_curves(results: pd.DataFrame, path) -> None:
    """Batch, bio and total scores against the weight (log axis; weight 0 drawn at the left)."""
    summary = _summary(results)
    mmd = summary[summary["method"] == "SCVIMMD"]
    if mmd.empty:
        return
    positive = mmd["mmd_weight"][mmd["mmd_weight"] > 0]
    zero_at = positive.min() / 10 if len(positive) else 0.1
    fig, axes = _figure((13, 3.8), ncols=3, sharex=True)
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


def plot_umaps(adata, results, batch_key, labels_key, path) -> None:
    """UMAPs coloured by batch and by cell type for a few weights (first seed)."""
    import scanpy as sc

    first = results[(results["method"] == "SCVIMMD") & (results["seed"] == results["seed"].min())]
    if first.empty:
        return
    first = first[(first["mmd_mode"] == first["mmd_mode"].iloc[-1])
                  & (first["config"] == first["config"].iloc[-1])].sort_values("mmd_weight")
    picks = np.unique(np.linspace(0, len(first) - 1, min(4, len(first))).round().astype(int))
    first = first.iloc[picks]
    fig, axes = _figure((3.2 * len(first), 6.2), nrows=2, ncols=len(first), squeeze=False)
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


# candidate label positions around a point: (dx, dy) in points, horizontal / vertical alignment
_OFFSETS = [(4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"),
            (-4, -3, "right", "top"), (0, 6, "center", "bottom"), (0, -6, "center", "top"),
            (9, 0, "left", "center"), (-9, 0, "right", "center")]


def annotate_without_overlap(ax, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str],
                             fontsize: float = 7, avoid: Sequence[tuple[float, float]] = (),
                             colors: Sequence | None = None, **kwargs) -> list:
    """Label each point with its text where no other label, marker or ``avoid`` point is.

    Tries eight positions around the point, then at twice the distance, and keeps the first
    free one inside the axes (else the least overlap). The axes' limits must be final.
    ``colors``: one per label; ``kwargs`` go to :meth:`~matplotlib.axes.Axes.annotate`.
    """
    from matplotlib.transforms import Bbox

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    axes_box = ax.get_window_extent(renderer)
    radius = fontsize * fig.dpi / 72 * 0.45
    taken = []
    for x, y in [*zip(xs, ys, strict=True), *avoid]:
        px, py = ax.transData.transform((x, y))
        taken.append(Bbox.from_extents(px - radius, py - radius, px + radius, py + radius))

    def overlap(box) -> float:
        outside = box.width * box.height - _inside_area(box, axes_box)
        return sum(_inside_area(box, other) for other in taken) + 10 * outside

    annotations = []
    colors = [kwargs.pop("color", None)] * len(texts) if colors is None else colors
    for x, y, text, color in zip(xs, ys, texts, colors, strict=True):
        best, best_cost = None, np.inf
        for scale in (1, 2):
            for dx, dy, ha, va in _OFFSETS:
                ann = ax.annotate(text, (x, y), xytext=(dx * scale, dy * scale),
                                  textcoords="offset points", ha=ha, va=va,
                                  fontsize=fontsize, color=color, **kwargs)
                cost = overlap(ann.get_window_extent(renderer))
                if cost < best_cost:
                    if best is not None:
                        best.remove()
                    best, best_cost = ann, cost
                else:
                    ann.remove()
                if best_cost == 0:
                    break
            if best_cost == 0:
                break
        taken.append(best.get_window_extent(renderer))
        annotations.append(best)
    return annotations


def _inside_area(box, frame) -> float:
    w = min(box.x1, frame.x1) - max(box.x0, frame.x0)
    h = min(box.y1, frame.y1) - max(box.y0, frame.y0)
    return max(w, 0.0) * max(h, 0.0)


LINE_MARKERS, POINT_MARKERS = "os^DvP<>h", "*XPdp8H"


def _is_line(part: pd.DataFrame) -> bool:
    return part["knob_value"].notna().sum() >= 2


def tradeoff_styles(summary: pd.DataFrame) -> dict[str, dict]:
    """One colour and marker per ``method`` of ``summary`` (all panels of a figure), so that a
    method looks the same in every panel and the shared legend is right for each.
    """
    import matplotlib as mpl

    colours = cycle(mpl.rcParams["axes.prop_cycle"].by_key()["color"])
    line_markers, point_markers = cycle(LINE_MARKERS), cycle(POINT_MARKERS)
    groups = summary.groupby(["method", *(["dataset"] if "dataset" in summary else [])],
                             sort=False)
    lines = {key[0] for key, part in groups if _is_line(part)}
    return {method: {"color": next(colours),
                     "marker": next(line_markers if method in lines else point_markers)}
            for method in summary["method"].unique()}


def plot_tradeoff_lines(ax, summary: pd.DataFrame, x: str = "Batch correction",
                        y: str = "Bio conservation", highlight: pd.DataFrame | None = None,
                        title: str | None = None, styles: dict[str, dict] | None = None) -> None:
    """Draw the trade-off of ``summary`` on ``ax``; ``highlight`` rows (e.g. the default) are
    large stars on top, labelled in the legend by their ``method``. ``styles``: each method's
    ``color`` and ``marker`` (default: :func:`tradeoff_styles` of ``summary``; pass one for
    all panels of a figure).
    """
    lines, points = [], []
    for method, part in summary.groupby("method", sort=False):
        (lines if _is_line(part) else points).append((method, part))
    styles = styles or tradeoff_styles(summary)
    label_x, label_y, texts, colors = [], [], [], []
    for method, part in lines:
        part = part.sort_values("knob_value")
        handle = ax.errorbar(part[x], part[y], xerr=part.get(f"{x}_sd"),
                             yerr=part.get(f"{y}_sd"), ms=5, lw=1.4, capsize=2,
                             elinewidth=0.7, label=method, zorder=2, **styles[method])
        label_x += list(part[x])
        label_y += list(part[y])
        texts += [f"{v:g}" for v in part["knob_value"]]
        colors += [handle.lines[0].get_color()] * len(part)
    for method, part in points:
        ax.errorbar(part[x], part[y], xerr=part.get(f"{x}_sd"), yerr=part.get(f"{y}_sd"),
                    ms=10, ls="none", capsize=2, elinewidth=0.7, label=method, zorder=3,
                    mec="black", mew=0.5, **styles[method])
    if highlight is not None:
        for method, part in highlight.groupby("method", sort=False):
            ax.scatter(part[x], part[y], marker="*", s=260, facecolor="gold",
                       edgecolor="black", linewidth=0.8, zorder=4, label=method)
    ax.set_xlabel(f"{x.lower()} (scib-metrics)")
    ax.set_ylabel(f"{y.lower()} (scib-metrics)")
    if title:
        ax.set_title(title)
    ax.margins(0.08)
    ax.figure.canvas.draw()
    fixed_xy = [(px, py) for _, part in points for px, py in zip(part[x], part[y], strict=True)]
    if highlight is not None:
        fixed_xy += list(zip(highlight[x], highlight[y], strict=True))
    annotate_without_overlap(ax, label_x, label_y, texts, colors=colors, avoid=fixed_xy)


def legend_outside(axes: Sequence, **kwargs) -> None:
    """One legend for all ``axes``, right of the figure (save with ``bbox_inches="tight"``)."""
    handles = {}  # first handle per name, in order of appearance
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(name, handle)
    fig = axes[0].figure
    fig.legend(list(handles.values()), list(handles), loc="center left",
               bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False, **kwargs)
