"""Summarise benchmarks/results/knob/: tables (markdown) and plots of the one-training knob.

Usage::

    python benchmarks/knob_report.py        # reads and writes benchmarks/results/knob/
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "knob"
SCORES = ["Batch correction", "Bio conservation", "Total"]


def md(frame: pd.DataFrame, index: bool = True) -> str:
    """A markdown table (no dependency on tabulate)."""
    frame = frame.reset_index() if index else frame
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def mean_sd(frame: pd.DataFrame, by: list[str], cols: list[str]) -> pd.DataFrame:
    grouped = frame.groupby(by)[cols]
    means, sds = grouped.mean(), grouped.std()
    text = means.round(3).astype(str) + " ± " + sds.round(3).astype(str)
    text["n"] = grouped.size()
    return text.reset_index()


def compare_section(dataset: str, lines: list[str]) -> None:
    path = OUT / f"compare_{dataset}.csv"
    if not path.exists():
        return
    table = pd.read_csv(path)
    lines += [f"## {dataset}: one conditional model vs a separate fit per weight", "",
              f"`python benchmarks/knob.py compare {dataset} --seeds "
              f"{','.join(map(str, sorted(table['seed'].unique())))}` "
              f"({table['max_epochs'].iloc[0]} epochs, seeds as listed)", ""]
    cols = SCORES + ["knn_batch_mixing", "fit_seconds"]
    lines.append(mean_sd(table, ["method", "mmd_weight"], cols).pipe(md, index=False))
    means = table.groupby(["method", "mmd_weight"])[SCORES].mean()
    lines += ["", "Conditional minus separate (means over seeds):", ""]
    rows = []
    for w in sorted(table.loc[table["method"] == "conditional", "mmd_weight"].unique()):
        if ("separate", w) in means.index:
            diff = means.loc[("conditional", w)] - means.loc[("separate", w)]
            rows.append({"mmd_weight": w, **diff.round(3).to_dict()})
    lines.append(pd.DataFrame(rows).pipe(md, index=False))
    lines.append("")
    for method in ("conditional", "separate"):
        part = table[table["method"] == method]
        seed_means = part.groupby("mmd_weight")["Batch correction"].mean()
        rho = spearmanr(seed_means.index, seed_means.to_numpy()).statistic
        rho_runs = spearmanr(part["mmd_weight"], part["Batch correction"]).statistic
        lines.append(f"- {method}: Spearman(weight, batch correction) = {rho:.2f} on seed "
                     f"means, {rho_runs:.2f} over single runs")
    fit = table.drop_duplicates(["seed", "method", "fit_seconds"])
    cond = fit[fit["method"] == "conditional"]["fit_seconds"].mean()
    sep = fit[fit["method"] == "separate"]["fit_seconds"].mean()
    lines += [f"- fit time: conditional {cond:.1f} s (one training for every weight) vs "
              f"{sep:.1f} s for one fixed-weight fit: ratio {cond / sep:.2f}", ""]
    plot_tradeoff(table, OUT / f"tradeoff_{dataset}.png", dataset)
    lines += [f"![trade-off {dataset}](tradeoff_{dataset}.png)", ""]


def plot_tradeoff(table: pd.DataFrame, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    styles = {"conditional": ("tab:blue", "o", 8), "separate": ("tab:orange", "s", -14)}
    for method, (color, marker, dy) in styles.items():
        part = table[table["method"] == method].groupby("mmd_weight")[SCORES[:2]]
        mean, sd = part.mean(), part.std()
        ax.errorbar(mean["Batch correction"], mean["Bio conservation"],
                    xerr=sd["Batch correction"], yerr=sd["Bio conservation"], color=color,
                    marker=marker, capsize=2, label=f"{method}: weights {', '.join(f'{w:g}' for w in mean.index)} in order")
        # label the two ends only (the line runs through the weights in order), so that
        # crowded points carry no overlapping labels
        for i, (w, row) in enumerate(mean.iterrows()):
            if 0 < i < len(mean) - 1:
                continue
            ax.annotate(f"w={w:g}", (row["Batch correction"], row["Bio conservation"]),
                        textcoords="offset points", fontsize=8, color=color,
                        ha="right" if i == 0 else "left",
                        xytext=(-5, dy) if i == 0 else (5, dy))
    scvi = table[table["method"].str.startswith("SCVI")][SCORES[:2]].mean()
    ax.plot(scvi["Batch correction"], scvi["Bio conservation"], "k*", ms=10, label="SCVI")
    ax.set_xlabel("scib batch correction")
    ax.set_ylabel("scib bio conservation")
    ax.set_title(f"{title}: mean ± sd of seeds")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    lines = ["# The knob from one training (loss-conditional SCVIMMD)", ""]
    path = OUT / "latent_sample_vs_mean.csv"
    if path.exists():
        table = pd.read_csv(path)
        lines += ["## Why mixing fell above weight ~10: MMD on samples vs on posterior means", "",
                  "`python benchmarks/knob.py latent --seeds 0,1,2` (4-batch simulation, "
                  "60 epochs, fixed weights)", "",
                  mean_sd(table, ["mmd_latent", "mmd_weight"],
                          ["knn_batch_mixing", "final_mmd_train", "spread_of_means",
                           "posterior_sd"]).pipe(md, index=False), ""]
    for dataset in ("sim", "kang"):
        compare_section(dataset, lines)
    path = OUT / "meaning.csv"
    if path.exists():
        table = pd.concat([pd.read_csv(p) for p in sorted(OUT.glob("meaning*.csv"))
                           if not p.name.startswith("meaning_curves")])
        lines += ["## One meaning of the weight: 2, 4 and 8 batches", "",
                  "`python benchmarks/knob.py meaning --seeds 0,1 --weights 1,3,10,30,100` "
                  "(and `--batches 8 --reductions sum --seeds 0` for the original sum): "
                  "separate fits; the weight at which kNN batch mixing first reaches "
                  f"{table['level'].iloc[0]:g} (interpolated in log weight), with the pair mean "
                  "(default) and the original pair sum", "",
                  table.pivot_table(index=["mmd_pair_reduction", "seed"], columns="n_batches",
                                    values="weight_reaching_level").round(2).pipe(md), ""]
        medians = table.groupby(["mmd_pair_reduction", "n_batches"])[
            "weight_reaching_level"].median().unstack()
        lines += ["Median over seeds, and the largest / smallest ratio across 2, 4, 8 batches:",
                  "", medians.assign(ratio=(medians.max(1) / medians.min(1)).where(medians.count(1) > 1)).round(2)
                  .pipe(md), ""]
    (OUT / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
