"""Summarise ``benchmarks/guard.py`` results: tables, the issue's checks, and one plot.

Usage::

    python benchmarks/guard_report.py      # reads benchmarks/results/guard/{sim,hard,kang}.csv

Writes ``benchmarks/results/guard/summary.md`` and ``guard_tradeoff.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent / "results" / "guard"
DATASETS = {"sim": "simulation: 3 batches, type_4 in batch 0 only",
            "hard": "harder simulation: 4 batches, type_4 in batches 0-1, type_5 in 1-2, "
                    "strong batch effect",
            "kang": "Kang PBMC (no batch-exclusive type)"}
METRICS = ["Batch correction", "Bio conservation", "Total", "knn_batch_mixing", "min_purity",
           "max_intrusion", "shared_batch_mixing"]
COMMANDS = {d: f"python benchmarks/guard.py {d} --seeds 0,1,2" for d in DATASETS}
RERUN = ("python benchmarks/guard.py {d} --seeds 0,1,2 --default-only` (the default again, "
         "with the final rule: the weight where L_mmd is lowest; the `auto weight, separate "
         "fit` rows keep the first rule's weight, the smallest reaching 90 % of the fall)")
CLI_RERUN = ("`python benchmarks/guard.py {d} --seeds {seeds} --default-only --default-epochs "
             "cli`: the default trained as `scvi-mmd integrate` trains it with no flag, for "
             "scvi-tools' epoch heuristic ({epochs} epochs here) instead of the {fixed} of "
             "the other rows")
DEFAULTS = ("default (auto)", "default (auto), CLI epochs")


def md(table: pd.DataFrame) -> str:
    """A pandas table as GitHub markdown (no tabulate dependency)."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.to_numpy()]
    return "\n".join(lines)


def load(dataset: str) -> pd.DataFrame | None:
    path = OUT / f"{dataset}.csv"
    if not path.exists():
        return None
    table = pd.read_csv(path)
    # the first sim run named the latents before the default was settled: rename
    if "X_auto_one" in set(table["embedding"]):
        table.loc[table["embedding"] == "X_default", "method"] = "auto weight, separate fit"
        table.loc[table["embedding"] == "X_auto_one", "method"] = "default (auto)"
    rerun = OUT / f"{dataset}_default.csv"
    if rerun.exists():  # the default re-run with the final rule replaces the first run's
        table = pd.concat([table[table["method"] != "default (auto)"], pd.read_csv(rerun)],
                          ignore_index=True)
    cli = OUT / f"{dataset}_default_cli.csv"
    if cli.exists():  # the default with the command line's epochs
        table = pd.concat([table, pd.read_csv(cli)], ignore_index=True)
    return table


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    key = np.where(table["method"].isin([*DEFAULTS, "auto weight, separate fit"]),
                   "auto", table["mmd_weight"].map(lambda w: f"{w:g}"))
    table = table.assign(weight=key)
    cols = [c for c in METRICS if c in table and table[c].notna().any()]
    grouped = table.groupby(["method", "weight"], sort=False)
    mean, sd = grouped[cols].mean(), grouped[cols].std()
    out = mean.round(3).astype(str) + " ± " + sd.round(3).astype(str)
    out["n"] = grouped.size()
    return out.reset_index()


def checks(dataset: str, table: pd.DataFrame) -> list[str]:
    lines = []
    by = table.groupby(["method", "mmd_weight"])
    for name in DEFAULTS:
        default = table[table["method"] == name]
        if len(default):
            lines += default_checks(dataset, name, default, by)
    if dataset == "kang":
        return lines
    top = table["mmd_weight"].max()
    purity = by["min_purity"].mean()
    for method in ("plain", "guarded", "conditional guarded"):
        if (method, top) in purity.index:
            lines.append(f"- at the top of the range (weight {top:g}), {method}: min purity "
                         f"{purity.loc[(method, top)]:.3f}")
    return lines


def default_checks(dataset: str, name: str, default: pd.DataFrame, by) -> list[str]:
    """The issue's checks of one default's rows."""
    weights = ", ".join(f"{w:.3g}" for w in default["mmd_weight"])
    lines = [f"- {name}: weights chosen per seed: {weights}"]
    if dataset == "kang":
        if "Total" in default:
            lines.append(f"- {name}: scib total {default['Total'].mean():.3f} ± "
                         f"{default['Total'].std():.3f} (target >= 0.775; {len(default)} "
                         f"seed{'s' if len(default) > 1 else ''})")
        return lines
    best_plain = by["shared_batch_mixing"].mean().loc["plain"].max()
    lines.append(
        f"- {name}: min exclusive-type purity {default['min_purity'].mean():.3f} (target >= "
        f"0.95; worst seed {default['min_purity'].min():.3f}); max intrusion "
        f"{default['max_intrusion'].mean():.3f} (target <= 0.03; worst "
        f"{default['max_intrusion'].max():.3f}); shared-type mixing "
        f"{default['shared_batch_mixing'].mean():.3f} = "
        f"{default['shared_batch_mixing'].mean() / best_plain:.0%} of the best plain fixed "
        f"weight's {best_plain:.3f} (target >= 90 %)")
    return lines


def plot(tables: dict[str, pd.DataFrame], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables), 4.4))
    axes = np.atleast_1d(axes)
    styles = {"plain": ("tab:gray", "o"), "guarded": ("tab:blue", "s"),
              "conditional guarded": ("tab:green", "^")}
    for ax, (dataset, table) in zip(axes, tables.items(), strict=True):
        if dataset == "kang":
            x_col, y_col = "Batch correction", "Bio conservation"
        else:
            x_col, y_col = "shared_batch_mixing", "min_purity"
        if x_col not in table or table[x_col].isna().all():
            continue
        for method, (color, marker) in styles.items():
            part = table[table["method"] == method].groupby("mmd_weight")[[x_col, y_col]]
            mean, sd = part.mean(), part.std()
            if mean.empty:
                continue
            ax.errorbar(mean[x_col], mean[y_col], xerr=sd[x_col], yerr=sd[y_col], color=color,
                        marker=marker, ms=6, lw=1.2, capsize=2, label=method)
            for i, (w, row) in enumerate(mean.iterrows()):
                ax.annotate(f"{w:g}", (row[x_col], row[y_col]), textcoords="offset points",
                            xytext=(5, 5 if i % 2 == 0 else -11), fontsize=7, color=color)
        for method, (color, marker) in {"default (auto)": ("tab:red", "*"),
                                        "default (auto), CLI epochs": ("tab:purple", "P"),
                                        "SCVI": ("black", "x")}.items():
            part = table[table["method"] == method][[x_col, y_col]]
            if len(part):
                ax.errorbar(part[x_col].mean(), part[y_col].mean(), xerr=part[x_col].std(),
                            yerr=part[y_col].std(), color=color, marker=marker, ms=12,
                            ls="none", capsize=2, label=method)
        ax.set_xlabel({"shared_batch_mixing": "kNN batch mixing of shared types",
                       "Batch correction": "scib batch correction"}[x_col])
        ax.set_ylabel({"min_purity": "kNN purity of the exclusive type (worst)",
                       "Bio conservation": "scib bio conservation"}[y_col])
        ax.set_title(DATASETS[dataset], fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=6, frameon=False,
               bbox_to_anchor=(0.5, 1.04), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    tables = {d: t for d in DATASETS if (t := load(d)) is not None}
    parts = ["# The label-free guard and the automatic weight",
             "",
             "Mean ± sd over seeds; fixed weights are separate fits, `conditional guarded` is "
             "one loss-conditional model (0.1-1000) read at each weight, `default (auto)` is "
             "`scvi-mmd integrate`'s default (that model at its automatic weight) trained "
             "for the same epochs as the other rows, `default (auto), CLI epochs` the same "
             "trained for the command line's own number of epochs (scvi-tools' heuristic), "
             "`auto weight, separate fit` a second, fixed-weight fit at the chosen weight. "
             "`min_purity`: kNN purity (30 neighbours) of the worst batch-exclusive type; "
             "`max_intrusion`: the largest share of such a type among the neighbours of cells "
             "from batches that lack it; `shared_batch_mixing`: kNN batch mixing among the "
             "cells of types every batch has.", ""]
    for dataset, table in tables.items():
        command = f"`{COMMANDS[dataset]}`"
        if (OUT / f"{dataset}_default.csv").exists():
            command += " and `" + RERUN.format(d=dataset)
        cli = table[table["method"] == DEFAULTS[1]]
        if len(cli):
            seeds = ",".join(str(s) for s in sorted(cli["seed"].unique()))
            epochs = "/".join(str(int(e)) for e in sorted(cli["max_epochs"].unique()))
            fixed = "/".join(str(int(e)) for e in sorted(
                table.loc[~table["method"].isin(DEFAULTS), "max_epochs"].unique()))
            command += "; " + CLI_RERUN.format(d=dataset, seeds=seeds, epochs=epochs,
                                               fixed=fixed)
        parts += [f"## {DATASETS[dataset]}", "", command, "",
                  md(summarise(table)), "", *checks(dataset, table), ""]
    if tables:
        plot(tables, OUT / "guard_tradeoff.png")
        parts += ["![guard trade-off](guard_tradeoff.png)", ""]
    (OUT / "summary.md").write_text("\n".join(parts))
    print("\n".join(parts))


if __name__ == "__main__":
    main()
