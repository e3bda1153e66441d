"""The trade-off plot: knob labels that do not overlap, the legend outside the axes."""

import itertools

import numpy as np
import pandas as pd
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from scvi_mmd.cli.plots import (  # noqa: E402
    annotate_without_overlap,
    legend_outside,
    plot_tradeoff_lines,
)


def _boxes(artists):
    renderer = artists[0].figure.canvas.get_renderer()
    return [a.get_window_extent(renderer) for a in artists]


def _any_overlap(boxes) -> bool:
    return any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))


def _crowded_axes():
    fig, ax = plt.subplots(figsize=(4, 3))
    xs = np.array([0.50, 0.505, 0.51, 0.50, 0.505, 0.51])
    ys = np.array([0.50, 0.50, 0.50, 0.506, 0.506, 0.506])
    ax.plot(xs, ys, "o")
    ax.set_xlim(0.3, 0.7)
    ax.set_ylim(0.3, 0.7)
    fig.canvas.draw()
    return fig, ax, xs, ys


def test_labels_of_crowded_points_do_not_overlap():
    texts = ["0.1", "1", "10", "100", "1000", "10000"]
    fig, ax, xs, ys = _crowded_axes()
    naive = [ax.annotate(t, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
             for x, y, t in zip(xs, ys, texts, strict=True)]
    assert _any_overlap(_boxes(naive))  # the same labels at one offset collide
    for artist in naive:
        artist.remove()
    placed = annotate_without_overlap(ax, xs, ys, texts)
    assert [a.get_text() for a in placed] == texts
    assert not _any_overlap(_boxes(placed))
    plt.close(fig)


def test_tradeoff_lines_labels_knobs_and_keeps_the_legend_outside():
    summary = pd.DataFrame({
        "method": ["A"] * 3 + ["B"] * 3 + ["fixed"],
        "knob_value": [1, 10, 100, 2, 10, 50, np.nan],
        "Batch correction": [0.3, 0.5, 0.7, 0.32, 0.52, 0.6, 0.4],
        "Bio conservation": [0.8, 0.78, 0.7, 0.81, 0.77, 0.74, 0.76],
        "Batch correction_sd": [0.01] * 7,
        "Bio conservation_sd": [0.01] * 7,
    })
    fig, ax = plt.subplots()
    plot_tradeoff_lines(ax, summary)
    legend_outside([ax])
    fig.canvas.draw()
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted(["1", "10", "100", "2", "10", "50"])
    assert not _any_overlap(_boxes(list(ax.texts)))
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    assert not legend.overlaps(ax.get_window_extent(renderer))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["A", "B", "fixed"]
    plt.close(fig)


def test_sweep_plots_switch_no_backend_and_leave_no_figure_open(tmp_path):
    """A notebook calling the plots keeps its backend; pyplot holds none of their figures."""
    from scvi_mmd.cli.plots import plot_metric_curves, plot_tradeoff

    results = pd.DataFrame({
        "method": ["SCVIMMD"] * 3 + ["SCVI"], "config": ["c"] * 3 + [None],
        "mmd_mode": ["unbiased"] * 3 + [None], "mmd_weight": [0.0, 10.0, 100.0, None],
        "seed": 0, "Batch correction": [0.5, 0.6, 0.7, 0.5],
        "Bio conservation": [0.8, 0.75, 0.7, 0.8], "Total": [0.68, 0.69, 0.7, 0.68]})
    previous = matplotlib.get_backend()
    plt.close("all")
    matplotlib.use("pdf")  # (any backend other than the plots' Agg)
    try:
        plot_tradeoff(results, tmp_path / "tradeoff.png")
        plot_metric_curves(results, tmp_path / "curves.png")
        assert matplotlib.get_backend() == "pdf"
        assert plt.get_fignums() == []
    finally:
        matplotlib.use(previous)
    assert (tmp_path / "tradeoff.png").stat().st_size > 0
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_a_method_looks_the_same_in_every_panel():
    """With shared styles, a method drawn as a line in one panel and as a point in another
    (one knob value there) keeps its colour and marker, so the shared legend is right."""
    from matplotlib.colors import to_hex

    from scvi_mmd.cli.plots import tradeoff_styles

    summary = pd.DataFrame({
        "dataset": ["d1"] * 4 + ["d2"] * 3,
        "method": ["T", "T", "F", "G", "G", "F", "T"],
        "knob_value": [1, 10, np.nan, np.nan, np.nan, np.nan, 1],
        "Batch correction": [0.3, 0.5, 0.4, 0.6, 0.6, 0.4, 0.5],
        "Bio conservation": [0.8, 0.7, 0.75, 0.7, 0.7, 0.75, 0.8],
    })
    styles = tradeoff_styles(summary)
    assert len({s["color"] for s in styles.values()}) == 3
    fig, axes = plt.subplots(1, 2)
    seen = {}
    for ax, dataset in zip(axes, ["d1", "d2"], strict=True):
        plot_tradeoff_lines(ax, summary[summary["dataset"] == dataset], styles=styles)
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            line = handle.lines[0]
            seen.setdefault(name, set()).add((to_hex(line.get_color()), line.get_marker()))
    assert all(len(v) == 1 for v in seen.values()), seen
    assert {to_hex(styles[m]["color"]) for m in seen} == {c for v in seen.values() for c, _ in v}
    plt.close(fig)
    # without shared styles the cycles restart per panel: T (a line in d1, a point in d2)
    # changes its marker -- what the shared styles are for
    fig, axes = plt.subplots(1, 2)
    markers = set()
    for ax, dataset in zip(axes, ["d1", "d2"], strict=True):
        plot_tradeoff_lines(ax, summary[summary["dataset"] == dataset])
        handles, names = ax.get_legend_handles_labels()
        markers.add(handles[names.index("T")].lines[0].get_marker())
    assert len(markers) == 2
    plt.close(fig)
