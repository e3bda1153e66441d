"""Label-aware MMD on a simulation where one cell type exists in one batch only.

Usage::

    python benchmarks/label_aware.py [--epochs 60] [--seeds 0,1,2] [--type-effect 1.0]
                                     [--mode unbiased] [--scib] [--out results/....csv]

Fits SCVI, and SCVIMMD with the plain MMD and with ``mmd_conditional=True`` (median multi-scale
kernel, estimator ``--mode``) over a grid of weights, and reports

* kNN batch mixing and overall cell-type purity (``scvi_mmd.metrics``);
* ``exclusive_type_purity``: the fraction of the exclusive type's 30 nearest neighbours of the
  same type (1 = kept apart; low = merged into other types), and ``merged_into``: the type
  that holds most of its foreign neighbours;
* with ``--scib``, scib-metrics' batch-correction / bio-conservation / total scores.

Only the public API of scvi_mmd is used.
"""

import argparse
import logging
import warnings

warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scvi  # noqa: E402

from scvi_mmd import SCVIMMD  # noqa: E402
from scvi_mmd.data import simulate_batches  # noqa: E402
from scvi_mmd.metrics import batch_mixing, label_purity  # noqa: E402

KERNEL = {"mmd_kernel_gamma": "median", "mmd_kernel_scales": [0.25, 0.5, 1.0, 2.0, 4.0]}
EXCLUSIVE = "type_4"


def exclusive_purity(latent, types, exclusive=EXCLUSIVE, n_neighbors=30):
    """(fraction of same-type neighbours, most frequent foreign type) for one type's cells."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(latent)
    cells = np.flatnonzero(types == exclusive)
    neighbours = types[nn.kneighbors(latent[cells], return_distance=False)[:, 1:]]
    foreign = pd.Series(neighbours[neighbours != exclusive])
    merged_into = foreign.value_counts().index[0] if len(foreign) else "-"
    return float((neighbours == exclusive).mean()), merged_into


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--weights", default="10,100,1000")
    parser.add_argument("--type-effect", type=float, default=1.5,
                        help="strength of the cell-type programs (lower: types closer)")
    parser.add_argument("--mode", default="normal", help="mmd_mode of both MMD variants")
    parser.add_argument("--scib", action="store_true", help="also score with scib-metrics")
    parser.add_argument("--out", default=None, help="CSV path for the per-run table")
    args = parser.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        adata = simulate_batches(n_cells=2000, n_genes=500, n_batches=3, n_cell_types=5,
                                 batch_effect=0.5, type_effect=args.type_effect,
                                 type_only_in_batch={4: 0}, seed=seed)
        types = adata.obs["cell_type"].to_numpy().astype(str)
        settings = [("SCVI", None, 0.0)] + [
            (variant, variant == "conditional", w)
            for w in weights for variant in ("plain", "conditional")]
        keys = []
        for name, conditional, weight in settings:
            scvi.settings.seed = seed
            data = adata.copy()
            SCVIMMD.setup_anndata(data, batch_key="batch", labels_key="cell_type")
            kwargs = {} if conditional is None else {
                **KERNEL, "mmd_conditional": conditional, "mmd_mode": args.mode}
            model = SCVIMMD(data, mmd_weight=weight, **kwargs)
            model.train(max_epochs=args.epochs, enable_progress_bar=False)
            latent = model.get_latent_representation()
            purity, merged_into = exclusive_purity(latent, types)
            key = f"X_{name}_w{weight:g}"
            adata.obsm[key] = latent
            keys.append(key)
            rows.append({"seed": seed, "type_effect": args.type_effect,
                         "mmd_mode": "-" if conditional is None else args.mode, "mmd": name,
                         "mmd_weight": weight, "embedding": key,
                         "batch_mixing": batch_mixing(latent, data.obs["batch"]),
                         "type_purity": label_purity(latent, types),
                         "exclusive_type_purity": purity, "merged_into": merged_into})
            print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=len(rows) == 1),
                  flush=True)
        if args.scib:
            from scvi_mmd.benchmark import fit_pca, score, select_genes

            data = select_genes(adata, "batch", n_top_genes=0)
            fit_pca(data)
            table = score(data, "batch", "cell_type", keys).set_index("embedding")
            for row in rows:
                if row["seed"] == seed:
                    for column in ("Batch correction", "Bio conservation", "Total"):
                        row[column] = float(table.loc[row["embedding"], column])
    table = pd.DataFrame(rows).drop(columns="embedding")
    metrics = [c for c in table.columns
               if c not in ("seed", "type_effect", "mmd_mode", "mmd", "mmd_weight",
                            "merged_into")]
    summary = table.groupby(["mmd", "mmd_weight"])[metrics].agg(["mean", "std"])
    print(summary.round(3).to_string())
    print(table.groupby(["mmd", "mmd_weight"])["merged_into"].agg(lambda s: "/".join(s)))
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
