"""Atlas-shaped data: many batches, and batches whose cell-type mixes differ.

Usage::

    python benchmarks/atlas.py batches --seeds 0       # 4 / 16 / 64 / 256 batches over the same
                                                       # cells (--cells 100000: at atlas size;
                                                       # --batch-effect 0.8: a stronger effect)
    python benchmarks/atlas.py null --seeds 0          # one batch split at random into 16 / 64
    python benchmarks/atlas.py mixes --seeds 0         # Dirichlet mixes, two exclusive types
    python benchmarks/atlas.py many_types --seeds 0    # the same with 32 types, 8 exclusive
                                                       # (--types 16,24: fewer)
    python benchmarks/atlas.py pancreas --seeds 0      # 14 types over 9 batches, Dirichlet(0.5)
                                                       # mixes, batch effects 0.4 and 0.8
    python benchmarks/atlas.py kang_shifted --seeds 0  # Kang, CD14+ Monocytes 5x more in STIM,
                                                       # B cells in CTRL only (../shared/data)
    python benchmarks/atlas.py kang --seeds 0          # Kang as it is
    python benchmarks/atlas.py kang_donors --seeds 0   # Kang as 8 pseudo-donors, own mixes
    python benchmarks/atlas.py large --epochs 5        # scale.py's 100,000 cells, 64 / 512 batches

Per data set and seed, on the same genes and epochs: ``SCVI`` (weight 0), the default
(``SCVIMMD(adata)``), the previous default (``mmd_pairs="sequential"``), fixed weights
(``--fixed``, pooled) and, on real data, Harmony. Per embedding: kNN batch mixing (15
neighbours), the purity of *every* cell type, the controller's phase, weight and
``late_rise`` (the rise the end-of-training warning reads), fit seconds; for ``null``, the
share of 15 neighbours kept from the SCVI fit (beside a second SCVI seed).
Rows go to ``benchmarks/results/atlas/{experiment}.csv`` as they come.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from common import (
    RESULTS,
    fit,
    kang,
    kang_donors,
    kept_neighbours,
    release,
    score_rows,
)

OUT = RESULTS / "atlas"
#: cells of every simulated data set unless ``--cells`` says otherwise
N_CELLS = 6000
#: the batch effect of every simulated data set unless ``--batch-effect`` (or ``pancreas``) says
BATCH_EFFECT = 0.3
#: simulated data sets (``--cells`` applies to them)
SIMULATED = ("batches", "null", "mixes", "many_types", "pancreas")


def simulate(n_batches: int, seed: int, mixes: bool = False, n_cells: int = N_CELLS,
             n_types: int = 8, batch_effect: float = BATCH_EFFECT, alpha: float = 0.7,
             exclusive: bool = True):
    from scvi_mmd.data import simulate_batches

    proportions = None
    if mixes:  # each batch its own Dirichlet(alpha) mix; with `exclusive`, the last quarter
        rng = np.random.default_rng(100 + seed)  # of the types in half the batches only
        proportions = rng.dirichlet(np.full(n_types, alpha), n_batches)
        if exclusive:
            proportions[n_batches // 2:, n_types - n_types // 4:] = 0
    adata = simulate_batches(n_cells=n_cells, n_genes=1000, n_batches=n_batches,
                             n_cell_types=n_types, batch_effect=batch_effect, type_effect=1.5,
                             type_proportions=proportions, seed=seed)
    return adata


def large(n_batches: int, n_cells: int = 100_000):
    """``scale.py``'s simulated counts (8 types, a gene-wise batch effect), loaded in memory."""
    import anndata
    from scale import counts_file

    return anndata.read_h5ad(counts_file(n_cells, n_batches))


def harmony(adata, seed):
    """Harmony on the unintegrated PCA (``obsm["X_pca"]``, made by ``fit_pca``)."""
    from scvi_mmd.cli.benchmark import fit_harmony

    fit_harmony(adata, "batch", "X_harmony", seed)
    return adata.obsm["X_harmony"]


def evaluate(rows, experiment, data_name, seed, method, latent, adata, model=None, seconds=0.0,
             reference=None):
    from scvi_mmd.metrics import batch_mixing, purity_by_type

    key = "X_" + "".join(c if c.isalnum() else "_" for c in method)
    adata.obsm[key] = np.asarray(latent, dtype=np.float32)
    row = {"experiment": experiment, "data": data_name, "seed": seed, "method": method,
           "embedding": key, "n_batches": int(adata.obs["batch"].nunique()),
           "knn_batch_mixing": batch_mixing(latent, adata.obs["batch"].to_numpy(), 15),
           "fit_seconds": seconds}
    if "cell_type" in adata.obs:
        for t, v in purity_by_type(latent, adata.obs["cell_type"], 15).items():
            row[f"purity_{t}"] = v
    if reference is not None:
        row["kept_neighbours"] = kept_neighbours(latent, reference)
    state = None if model is None else model.mmd_strength_state
    if state is not None:
        row.update(phase=state["phase"], D0=state["baseline"], D0_se=state["baseline_se"],
                   nu=state["null_noise"], final_weight=state["weight"],
                   max_weight=float(np.max(np.asarray(model.history["mmd_weight_train"]))),
                   late_rise=model.module.strength.late_rise())  # (>= e: the warning)
    rows.append(row)
    short = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
             if not k.startswith("purity_")}
    print(short, flush=True)


#: the configurations compared (``--configs``): the default and the designs measured against it
CONFIGS = {
    "default": {},
    "previous default (sequential)": {"mmd_pairs": "sequential"},
    "pooled": {"mmd_pairs": "pooled", "mmd_clusters": 0},
    "pooled + 8 clusters": {"mmd_pairs": "pooled", "mmd_clusters": 8},
    "pooled + 16 clusters": {"mmd_pairs": "pooled", "mmd_clusters": 16},
    "pooled + 32 clusters": {"mmd_pairs": "pooled", "mmd_clusters": 32},
    "pooled + 64 clusters": {"mmd_pairs": "pooled", "mmd_clusters": 64},
    "pooled + 16 clusters - no guard": {"mmd_pairs": "pooled", "mmd_clusters": 16,
                                       "mmd_guard": False},
    "pooled - no guard": {"mmd_pairs": "pooled", "mmd_clusters": 0, "mmd_guard": False},
    "clusters + guard": {"mmd_guard": True},
    "clusters - no guard": {"mmd_guard": False},
    "strength 0.25": {"mmd_strength": 0.25},
    "strength 0.5": {"mmd_strength": 0.5},
    "strength 0.75": {"mmd_strength": 0.75},
}


def run(experiment, seeds, epochs, fixed, config_names, tag="", scib=False, sizes=None,
        types=None, n_cells=N_CELLS, batch_size=128, batch_effect=BATCH_EFFECT):
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    path = OUT / f"{experiment}{tag}.csv"
    # (data names say what differs from the defaults; cells apply to simulated sets only)
    bs_suffix = "" if batch_size == 128 else f"_bs{batch_size}"
    suffix = ("" if n_cells == N_CELLS else f"_{n_cells}") + bs_suffix
    if batch_effect != BATCH_EFFECT:  # (the pancreas experiment names its own two)
        suffix = f"_e{batch_effect:g}" + suffix
    for seed in seeds:
        if experiment == "batches":
            sets = [(f"sim_B{b}{suffix}", simulate(b, seed, n_cells=n_cells,
                                                   batch_effect=batch_effect))
                    for b in sizes or (4, 16, 64, 256)]
        elif experiment == "mixes":
            sets = [(f"mixes_B{b}{suffix}", simulate(b, seed, mixes=True, n_cells=n_cells))
                    for b in sizes or (8, 32)]
        elif experiment == "many_types":  # more types than the default's 16 clusters
            sets = [(f"types{t}_B{b}{suffix}",
                     simulate(b, seed, mixes=True, n_cells=n_cells, n_types=t))
                    for t in types or (32,) for b in sizes or (8,)]
        elif experiment == "pancreas":  # shaped like a pancreas atlas; at 0.8 scVI splits
            sets = [(f"pancreas_e{e:g}{suffix}",  # the batches apart
                     simulate(9, seed, mixes=True, n_cells=n_cells, n_types=14, batch_effect=e,
                              alpha=0.5, exclusive=False)) for e in (0.4, 0.8)]
        elif experiment == "null":
            one = simulate(1, seed, n_cells=n_cells)
            sets = []
            for b in sizes or (16, 64):
                split = one.copy()
                split.obs["batch"] = pd.Categorical(
                    np.random.default_rng(seed).integers(0, b, split.n_obs).astype(str))
                sets.append((f"null_B{b}{suffix}", split))
        elif experiment == "kang":
            sets = [("kang", kang(seed, shift=False))]
        elif experiment == "kang_donors":
            sets = [("kang_donors", kang_donors(seed))]
        elif experiment == "large":
            sets = [(f"large_B{b}", large(b)) for b in sizes or (64, 512)]
        else:
            sets = [("kang_shifted", kang(seed))]
        if experiment not in SIMULATED:
            sets = [(name + bs_suffix, adata) for name, adata in sets]
        for name, adata in sets:
            from scvi_mmd.cli.benchmark import fit_pca, select_genes

            first = len(rows)
            adata = select_genes(adata, "batch", n_top_genes=0)  # the lognorm layer, for PCA
            fit_pca(adata)
            scvi_model, sec = fit(adata, "batch", seed, epochs, batch_size, mmd_weight=0.0)
            ref = scvi_model.get_latent_representation()
            evaluate(rows, experiment, name, seed, "SCVI", ref, adata, None, sec,
                     ref if experiment == "null" else None)
            fitted = [scvi_model]
            if experiment == "null":
                second, sec = fit(adata, "batch", seed + 100, epochs, batch_size,
                                  mmd_weight=0.0)
                evaluate(rows, experiment, name, seed, "SCVI, second seed",
                         second.get_latent_representation(), adata, None, sec, ref)
                fitted.append(second)
            configs = {name: CONFIGS[name] for name in config_names}
            if experiment != "null":
                configs.update({f"fixed {w:g}": {"mmd_weight": w} for w in fixed})
            for method, kwargs in configs.items():
                model, sec = fit(adata, "batch", seed, epochs, batch_size, **kwargs)
                evaluate(rows, experiment, name, seed, method,
                         model.get_latent_representation(), adata, model, sec,
                         ref if experiment == "null" else None)
                fitted.append(model)
                pd.DataFrame(rows).to_csv(path, index=False)
            if name.startswith("kang") or scib:
                evaluate(rows, experiment, name, seed, "Harmony", harmony(adata, seed), adata)
            if scib and experiment != "null":  # one Benchmarker call per data set and seed
                score_rows(adata, "batch", "cell_type", rows[first:])
            pd.DataFrame(rows).to_csv(path, index=False)
            release(*fitted)  # (else every fit's copy of the data stays in memory)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment",
                        choices=["batches", "null", "mixes", "many_types", "pancreas",
                                 "kang_shifted", "kang", "kang_donors", "large"])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--fixed", default="100", help="fixed weights ('' for none)")
    parser.add_argument("--configs", default="default",
                        help="';'-separated names of " + "; ".join(CONFIGS))
    parser.add_argument("--tag", default="", help="suffix of the result file")
    parser.add_argument("--sizes", default="", help="numbers of batches (default: per experiment)")
    parser.add_argument("--types", default="", help="numbers of cell types (many_types; 32)")
    parser.add_argument("--cells", type=int, default=N_CELLS,
                        help="cells of the simulated data sets (" + ", ".join(SIMULATED) + ")")
    parser.add_argument("--batch-size", type=int, default=128, help="minibatch size of every fit")
    parser.add_argument("--batch-effect", type=float, default=BATCH_EFFECT,
                        help="the simulated batch effect of the `batches` experiment")
    parser.add_argument("--scib", action="store_true",
                        help="also Harmony and scib-metrics (one Benchmarker call per data set)")
    args = parser.parse_args()
    if args.cells != N_CELLS and args.experiment not in SIMULATED:
        parser.error(f"--cells applies to the simulated data sets only ({', '.join(SIMULATED)})")
    if args.batch_effect != BATCH_EFFECT and args.experiment != "batches":
        parser.error("--batch-effect applies to the `batches` experiment only")
    run(args.experiment, [int(s) for s in args.seeds.split(",")], args.epochs,
        [float(w) for w in args.fixed.split(",") if w],
        [c for c in args.configs.split(";") if c], args.tag, args.scib,
        [int(b) for b in args.sizes.split(",") if b], [int(t) for t in args.types.split(",") if t],
        args.cells, args.batch_size, args.batch_effect)


if __name__ == "__main__":
    main()
