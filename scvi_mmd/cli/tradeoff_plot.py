"""Trade-off plots read at a glance: one line per tunable method, labels that do not overlap.

Input: a summary table, one row per ``method`` and ``knob_value`` (NaN without a knob), with
the two metrics and optionally their ``<metric>_sd``. A method with two or more knob values
is a line through them, each marker labelled with its value; the others are single points.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import cycle

import numpy as np
import pandas as pd

# candidate label positions around a point: (dx, dy) in points, horizontal / vertical alignment
_OFFSETS = [(4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"),
            (-4, -3, "right", "top"), (0, 6, "center", "bottom"), (0, -6, "center", "top"),
            (9, 0, "left", "center"), (-9, 0, "right", "center")]


def annotate_without_overlap(ax, xs: Sequence[float], ys: Sequence[float],
                             texts: Sequence[str], fontsize: float = 7,
                             avoid: Sequence[tuple[float, float]] = (),
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
        area = 0.0
        for other in taken:
            w = min(box.x1, other.x1) - max(box.x0, other.x0)
            h = min(box.y1, other.y1) - max(box.y0, other.y0)
            if w > 0 and h > 0:
                area += w * h
        outside = box.width * box.height - _inside_area(box, axes_box)
        return area + 10 * outside

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


def plot_tradeoff_lines(ax, summary: pd.DataFrame, x: str = "Batch correction",
                        y: str = "Bio conservation", highlight: pd.DataFrame | None = None,
                        title: str | None = None) -> None:
    """Draw the trade-off of ``summary`` on ``ax``; ``highlight`` rows (e.g. the default) are
    large stars on top, labelled in the legend by their ``method``.
    """
    lines, points = [], []
    for method, part in summary.groupby("method", sort=False):
        (lines if part["knob_value"].notna().sum() >= 2 else points).append((method, part))
    markers = cycle("os^DvP<>h")
    label_x, label_y, texts, colors = [], [], [], []
    for method, part in lines:
        part = part.sort_values("knob_value")
        handle = ax.errorbar(part[x], part[y], xerr=part.get(f"{x}_sd"),
                             yerr=part.get(f"{y}_sd"), marker=next(markers), ms=5, lw=1.4,
                             capsize=2, elinewidth=0.7, label=method, zorder=2)
        label_x += list(part[x])
        label_y += list(part[y])
        texts += [f"{v:g}" for v in part["knob_value"]]
        colors += [handle.lines[0].get_color()] * len(part)
    fixed_markers = cycle("*XPdp8H")
    for method, part in points:
        ax.errorbar(part[x], part[y], xerr=part.get(f"{x}_sd"), yerr=part.get(f"{y}_sd"),
                    marker=next(fixed_markers), ms=10, ls="none", capsize=2, elinewidth=0.7,
                    label=method, zorder=3, mec="black", mew=0.5)
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
