"""Does one strength mean the same with more batches and more genes?

Usage::

    python benchmarks/strength_scaling.py --seeds 0 --strength 0.9

The simulator of ``strength.py sim`` (one type in one batch only) with 2, 4 and 8 batches
(500 genes) and with 300 and 2,000 genes (3 batches), 500 cells per batch; one fit at the
strength per setting. Per fit: shared-type kNN batch mixing, the exclusive type's purity and
intrusion, the weight reached and what the controller measured. Rows go to
``benchmarks/results/strength/scaling.csv``.
"""

from __future__ import annotations

import argparse

import pandas as pd

from scvi_mmd.benchmark import select_genes
from scvi_mmd.data import simulate_batches
from scvi_mmd.metrics import exclusive_type_report

from strength import OUT, fit  # noqa: E402  (benchmarks/strength.py)

SETTINGS = [(2, 500), (4, 500), (8, 500), (3, 300), (3, 2000)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--strength", type=float, default=0.9)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args(argv)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for n_batches, n_genes in SETTINGS:
            adata = simulate_batches(n_cells=500 * n_batches, n_genes=n_genes,
                                     n_batches=n_batches, n_cell_types=5, batch_effect=0.5,
                                     type_effect=1.0, type_only_in_batch={4: 0}, seed=seed)
            adata = select_genes(adata, "batch", n_top_genes=0)
            model, seconds = fit(adata, "batch", seed, args.epochs, mmd_strength=args.strength)
            latent = model.get_latent_representation()
            state = model.mmd_strength_state
            rows.append({"seed": seed, "n_batches": n_batches, "n_genes": n_genes,
                         "strength": args.strength, "fit_seconds": seconds,
                         "final_weight": state["weight"], "phase": state["phase"],
                         "baseline": state["baseline"], "target": state["target"],
                         **exclusive_type_report(latent, adata.obs["cell_type"],
                                                 adata.obs["batch"])})
            print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=False),
                  flush=True)
            pd.DataFrame(rows).to_csv(OUT / "scaling.csv", index=False)
    table = pd.DataFrame(rows)
    print(table.groupby(["n_batches", "n_genes"])[["shared_batch_mixing", "min_purity",
                                                   "max_intrusion"]].mean().round(3))


if __name__ == "__main__":
    main()
