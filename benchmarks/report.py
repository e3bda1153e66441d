"""Summarise benchmark results: mean +- sd over seeds, Spearman rho of the knob, markdown.

Usage::

    python benchmarks/report.py benchmarks/results/kang      # reads every results.csv below

Prints markdown tables (and writes ``summary.md``, ``tradeoff_all.png`` and
``metrics_vs_weight_all.png`` in the folder): one row per method /
configuration / mode / weight with the scib-metrics aggregate scores and fit time, then per
configuration the Spearman rank correlation of the batch-correction score with the weight.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

from scvi_mmd.benchmark import plot_metric_curves, plot_tradeoff

SCORES = ["Batch correction", "Bio conservation", "Total"]


def load(folder: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in sorted(folder.rglob("results.csv"))]
    if not frames:
        raise SystemExit(f"no results.csv under {folder}")
    table = pd.concat(frames, ignore_index=True)
    table = table.fillna({"config": "-", "mmd_mode": "-", "mmd_weight": -1})
    if "max_epochs" in table and table["max_epochs"].nunique() > 1:
        # runs with other than the usual number of epochs are separate configurations
        usual = table["max_epochs"].mode()[0]
        other = table["max_epochs"] != usual
        suffix = table["max_epochs"].astype(int).astype(str) + " epochs"
        table.loc[other, "config"] = [s if c == "-" else f"{c}, {s}" for c, s in
                                      zip(table.loc[other, "config"], suffix[other], strict=True)]
    # a baseline fitted in several runs with the same seed is the same fit: keep one
    return table.drop_duplicates(subset=["method", "config", "mmd_mode", "mmd_weight", "seed"])


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    keys = ["method", "config", "mmd_mode", "mmd_weight"]
    grouped = table.groupby(keys)
    out = grouped[SCORES + ["fit_seconds"]].mean()
    sd = grouped[SCORES].std().fillna(0.0)
    for score in SCORES:
        out[score] = [f"{m:.3f} +- {s:.3f}" for m, s in zip(out[score], sd[score], strict=True)]
    out["fit_seconds"] = out["fit_seconds"].round(0).astype(int)
    out["seeds"] = grouped.size()
    return out.reset_index()


def knob(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    mmd = table[table["method"] == "SCVIMMD"]
    for (config, mode), part in mmd.groupby(["config", "mmd_mode"]):
        means = part.groupby("mmd_weight")[SCORES].mean()
        rho_means = spearmanr(means.index, means["Batch correction"]).statistic
        rho_all = spearmanr(part["mmd_weight"], part["Batch correction"]).statistic
        rows.append({"config": config, "mmd_mode": mode,
                     "weights": ", ".join(f"{w:g}" for w in means.index),
                     "rho (batch vs weight, seed means)": round(rho_means, 3),
                     "rho (all runs)": round(rho_all, 3),
                     "best total": round(means["Total"].max(), 3),
                     "weight of best total": means["Total"].idxmax(),
                     "min bio": round(means["Bio conservation"].min(), 3)})
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table (no tabulate dependency)."""
    cells = [[str(c) for c in frame.columns]] + [
        [f"{v:g}" if isinstance(v, float) else str(v) for v in row] for row in frame.to_numpy()
    ]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("---" for _ in frame.columns) + "|")
    return "\n".join(lines)


def main(argv=None):
    folder = Path((argv or sys.argv[1:])[0])
    table = load(folder)
    text = ("## Scores (scib-metrics, mean +- sd over seeds)\n\n"
            + markdown(summarise(table))
            + "\n\n## The knob\n\n" + markdown(knob(table)) + "\n")
    (folder / "summary.md").write_text(text)
    plot_tradeoff(table.replace({"config": {"-": None}, "mmd_mode": {"-": None}}),
                  folder / "tradeoff_all.png")
    plot_metric_curves(table.replace({"config": {"-": None}, "mmd_mode": {"-": None}}),
                       folder / "metrics_vs_weight_all.png")
    print(text)


if __name__ == "__main__":
    main()
