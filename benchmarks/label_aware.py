"""Label-aware MMD on a simulation where one cell type exists in one batch only.

Usage::

    python benchmarks/label_aware.py [--epochs 60] [--seeds 0,1,2]

Fits SCVI, SCVIMMD with the plain MMD and with ``mmd_conditional=True`` (median multi-scale
kernel) at weights 10, 100 and 1000, and reports kNN batch mixing, overall cell-type purity and
the purity of the exclusive type (fraction of its cells' neighbours of the same type: 1 = kept
apart, low = merged into other types).
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


def exclusive_purity(latent, types, exclusive, n_neighbors=30):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(latent)
    cells = np.flatnonzero(types == exclusive)
    neighbours = nn.kneighbors(latent[cells], return_distance=False)[:, 1:]
    return float((types[neighbours] == exclusive).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        adata = simulate_batches(n_cells=2000, n_genes=500, n_batches=3, n_cell_types=5,
                                 batch_effect=0.5, type_only_in_batch={4: 0}, seed=seed)
        types = adata.obs["cell_type"].to_numpy()
        settings = [("SCVI", None, 0.0)] + [
            (variant, variant == "conditional", w)
            for w in (10.0, 100.0, 1000.0) for variant in ("plain", "conditional")]
        for name, conditional, weight in settings:
            scvi.settings.seed = seed
            data = adata.copy()
            SCVIMMD.setup_anndata(data, batch_key="batch", labels_key="cell_type")
            kwargs = {} if conditional is None else {**KERNEL, "mmd_conditional": conditional}
            model = SCVIMMD(data, mmd_weight=weight, **kwargs)
            model.train(max_epochs=args.epochs, enable_progress_bar=False)
            latent = model.get_latent_representation()
            rows.append({"seed": seed, "mmd": name, "mmd_weight": weight,
                         "batch_mixing": batch_mixing(latent, data.obs["batch"]),
                         "type_purity": label_purity(latent, types),
                         "exclusive_type_purity": exclusive_purity(latent, types, "type_4")})
            print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=len(rows) == 1),
                  flush=True)
    table = pd.DataFrame(rows)
    summary = table.groupby(["mmd", "mmd_weight"])[
        ["batch_mixing", "type_purity", "exclusive_type_purity"]].agg(["mean", "std"])
    print(summary.round(3).to_string())
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
