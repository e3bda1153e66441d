"""The label-free guard and the automatic weight: plain vs guarded MMD, and the default.

Usage::

    python benchmarks/guard.py sim --seeds 0,1,2     # 3 batches, one type in one batch only
    python benchmarks/guard.py hard --seeds 0,1,2    # 4 batches, two types in two batches each,
                                                     # strong gene-wise batch effect
    python benchmarks/guard.py kang --seeds 0,1,2    # ../shared/data/kang_pbmc_ifnb.h5ad

Per seed, on the same genes, epochs and seed:

* ``SCVI`` (weight 0);
* ``plain`` and ``guarded`` SCVIMMD (``mmd_guard=False`` / ``True``), fixed weights
  ``--weights``, recommended kernel (median bandwidth, scales 0.25-4);
* ``conditional guarded``: one loss-conditional model over ``--range`` with the guard, read at
  ``--weights`` (the top of the range is the top of the documented knob);
* ``default (auto)``: what ``scvi-mmd integrate`` does with no flag: one guarded conditional
  model with ``mmd_weight="auto"`` chooses the weight from its label-free curve and gives its
  latent at that weight; ``auto weight, separate fit``: a guarded fixed-weight fit at the
  chosen weight, for comparison (not the default: it costs a second training).

All embeddings of a seed are scored in ONE scib-metrics Benchmarker call; plus, per
embedding, kNN batch mixing, the kNN purity of each type some batch lacks, the share of the
neighbours of cells from the batches lacking it that carry it ("intrusion"), and kNN batch
mixing among the cells of shared types (:func:`scvi_mmd.metrics.exclusive_type_report`).
``--default-only`` fits only the default (to ``{dataset}_default.csv``; the report then takes
the default's rows from there). ``--default-epochs cli`` trains the default as ``scvi-mmd
integrate`` does with no flag: scvi-tools' epoch heuristic (400 epochs up to 20,000 cells),
not the ``--epochs`` of the other fits; its rows are ``default (auto), CLI epochs`` (with
``--default-only``, in ``{dataset}_default_cli.csv``). Only the public API is used; results
go to ``benchmarks/results/guard/``.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("scvi").setLevel(logging.ERROR)

import pandas as pd  # noqa: E402

from scvi_mmd.benchmark import fit_pca, score_rows, select_genes  # noqa: E402
from scvi_mmd.data import simulate_batches  # noqa: E402
from scvi_mmd.metrics import batch_mixing, exclusive_type_report  # noqa: E402

from knob import KERNEL, fit  # noqa: E402  (benchmarks/knob.py: same fit, same kernel)
from knob import load as load_knob_data  # noqa: E402

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "results" / "guard"
EPOCHS = {"kang": 100, "sim": 60, "hard": 60}
WEIGHTS = {"kang": "100,1000", "sim": "10,100,1000", "hard": "10,100,1000"}


def load(dataset: str, seed: int):
    """(AnnData with counts in X and a lognorm layer, batch key, labels key)."""
    if dataset in ("kang", "sim"):  # the data of benchmarks/knob.py
        return load_knob_data(dataset, seed)
    # harder: 4 batches, two types in two batches each, strong gene-wise batch effect
    adata = simulate_batches(n_cells=2400, n_genes=500, n_batches=4, n_cell_types=6,
                             batch_effect=1.0, type_effect=1.0,
                             type_in_batches={4: [0, 1], 5: [1, 2]}, seed=seed)
    return select_genes(adata, "batch", n_top_genes=0), "batch", "cell_type"


def run(args) -> pd.DataFrame:
    weights = [float(w) for w in (args.weights or WEIGHTS[args.dataset]).split(",")]
    low, high = (float(v) for v in args.range.split(":"))
    OUT.mkdir(parents=True, exist_ok=True)
    cli_epochs = args.default_epochs == "cli"
    suffix = ("_default" + ("_cli" if cli_epochs else "")) if args.default_only else ""
    path = OUT / f"{args.dataset}{suffix}.csv"
    default_name = "default (auto), CLI epochs" if cli_epochs else "default (auto)"
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        adata, batch_key, labels_key = load(args.dataset, seed)
        epochs = args.epochs or EPOCHS[args.dataset]
        fit_pca(adata)
        keys = []

        def record(key, method, weight, latent, seconds, trained_epochs=epochs, **extra):
            adata.obsm[key] = latent
            keys.append(key)
            report = exclusive_type_report(latent, adata.obs[labels_key], adata.obs[batch_key])
            rows.append({"dataset": args.dataset, "seed": seed, "method": method,
                         "mmd_weight": weight, "max_epochs": trained_epochs,
                         "fit_seconds": seconds,
                         "embedding": key,
                         "knn_batch_mixing": batch_mixing(latent, adata.obs[batch_key]),
                         **report, **extra})
            print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=False),
                  flush=True)

        if args.default_only:
            weights = []
        else:
            model, seconds = fit(adata, batch_key, seed, epochs, mmd_weight=0.0)
            record("X_scvi", "SCVI", 0.0, model.get_latent_representation(), seconds)
        for w in weights:
            for guard in (False, True):
                model, seconds = fit(adata, batch_key, seed, epochs, mmd_weight=w,
                                     mmd_guard=guard, **KERNEL)
                name = "guarded" if guard else "plain"
                record(f"X_{name}_{w:g}", name, w, model.get_latent_representation(), seconds)
        # None: scvi-tools' heuristic, what the command line trains with no --max-epochs
        default_epochs = None if cli_epochs else args.default_epochs or epochs
        auto, auto_seconds = fit(adata, batch_key, seed, default_epochs, mmd_weight="auto",
                                 **KERNEL)
        choice = auto.mmd_weight_choice
        curve = auto.mmd_curve_.assign(dataset=args.dataset, seed=seed)
        curve.to_csv(OUT / f"curve_{args.dataset}{'_cli' if cli_epochs else ''}_s{seed}.csv",
                     index=False)
        conditional, cond_seconds = auto, auto_seconds
        if weights and ((low, high) != auto.mmd_weight_range or default_epochs != epochs):
            conditional, cond_seconds = fit(adata, batch_key, seed, epochs,
                                            mmd_weight=(low, high), **KERNEL)
        for w in weights:
            record(f"X_cond_{w:g}", "conditional guarded", w,
                   conditional.get_latent_representation(mmd_weight=w), cond_seconds)
        record("X_default", default_name, choice.weight,
               auto.get_latent_representation(), auto_seconds, reason=choice.reason,
               trained_epochs=len(auto.history["elbo_train"]))
        if not args.default_only:
            model, seconds = fit(adata, batch_key, seed, epochs, mmd_weight=choice.weight,
                                 **KERNEL)
            record("X_auto_refit", "auto weight, separate fit", choice.weight,
                   model.get_latent_representation(), auto_seconds + seconds,
                   reason=choice.reason)
        if not args.no_scib:
            score_rows(adata, batch_key, labels_key, [r for r in rows if r["seed"] == seed])
        pd.DataFrame(rows).to_csv(path, index=False)
    return pd.DataFrame(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", choices=["sim", "hard", "kang"])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--weights", default=None, help="fixed weights (comma-separated)")
    parser.add_argument("--range", default="0.1:1000", help="LOW:HIGH of the conditional model")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--no-scib", action="store_true", help="skip scib-metrics")
    parser.add_argument("--default-epochs", default=None,
                        type=lambda v: v if v == "cli" else int(v),
                        help="epochs of the default: 'cli' (scvi-tools' heuristic, as "
                             "`scvi-mmd integrate`) or a number; default: --epochs")
    parser.add_argument("--default-only", action="store_true",
                        help="only the default (auto) model, to {dataset}_default.csv")
    args = parser.parse_args(argv)
    table = run(args)
    cols = [c for c in ("Batch correction", "Bio conservation", "Total", "knn_batch_mixing",
                        "min_purity", "max_intrusion", "shared_batch_mixing") if c in table]
    print(table.groupby(["method", "mmd_weight"], sort=False)[cols].mean().round(3).to_string())


if __name__ == "__main__":
    main()
