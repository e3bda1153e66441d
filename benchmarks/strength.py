"""The correction strength on several kinds of data: what each ``mmd_strength`` gives.

Usage::

    python benchmarks/strength.py sim  --seeds 0,1,2     # 3 batches, one type in one batch only
    python benchmarks/strength.py hard --seeds 0,1,2     # 4 batches, two types in two batches each
    python benchmarks/strength.py kang --seeds 0,1,2     # ../shared/data/kang_pbmc_ifnb.h5ad
    python benchmarks/strength.py null --seeds 0,1,2     # Kang's STIM cells split at random
                                                         # into 3 batches: nothing to correct

Per seed, on the same genes and epochs: ``SCVI`` (weight 0); ``strength s`` for each ``s`` of
``--strengths`` (the library default otherwise: guard, U-statistic, median multi-scale
kernel); ``fixed w`` (``--fixed``, the same configuration at a fixed weight, for the cost);
for ``null``, also ``SCVI, second seed`` (seed + 100), the floor of what a refit changes.
Per embedding: kNN batch mixing, label purity, the exclusive-type report
(:func:`scvi_mmd.metrics.exclusive_type_report`), the share of each cell's 15 nearest
neighbours kept from the SCVI fit of the same seed, the weight the controller reached
(final and largest) and what it measured, the fit time; and scib-metrics batch / bio / total
(one Benchmarker call per seed; not for ``null``, which has one real batch). Only the public
API is used; rows go to ``benchmarks/results/strength/{dataset}.csv`` as they come.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("scvi").setLevel(logging.ERROR)

import numpy as np
import pandas as pd
from common import EPOCHS, fit, load, score_rows

from scvi_mmd.cli.benchmark import fit_pca
from scvi_mmd.metrics import batch_mixing, exclusive_type_report, label_purity

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "results" / "strength"
def neighbours(x: np.ndarray, k: int = 15) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)[:, 1:]


def kept_neighbours(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean share of each cell's 15 nearest neighbours in ``reference`` kept in ``other``."""
    a, b = neighbours(reference), neighbours(other)
    return float(np.mean([len(set(r) & set(q)) / len(r) for r, q in zip(a, b, strict=True)]))


def run(args) -> pd.DataFrame:
    strengths = [float(s) for s in args.strengths.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{args.dataset}{args.suffix}.csv"
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        adata, batch_key, labels_key = load(args.dataset, seed)
        epochs = args.epochs or EPOCHS[args.dataset]
        fit_pca(adata)
        keys, reference = [], None

        def record(key, method, model, seconds, strength=float("nan")):
            latent = model.get_latent_representation()
            adata.obsm[key] = latent
            keys.append(key)
            weights = np.asarray(model.history["mmd_weight_train"], float).ravel()
            state = model.mmd_strength_state or {}
            rows.append({
                "dataset": args.dataset, "seed": seed, "method": method, "strength": strength,
                "max_epochs": epochs, "fit_seconds": seconds, "embedding": key,
                "final_weight": model.mmd_weight_default, "max_weight": weights.max(),
                "phase": state.get("phase", ""), "baseline": state.get("baseline"),
                "null_noise": state.get("null_noise"), "target": state.get("target"),
                "knn_batch_mixing": batch_mixing(latent, adata.obs[batch_key]),
                "label_purity": label_purity(latent, adata.obs[labels_key]),
                "kept_from_scvi": 1.0 if reference is None else kept_neighbours(reference,
                                                                                 latent),
                **exclusive_type_report(latent, adata.obs[labels_key], adata.obs[batch_key]),
            })
            print(pd.DataFrame(rows[-1:]).drop(columns=["dataset", "embedding"]).round(3)
                  .to_string(index=False, header=False), flush=True)
            return latent

        model, seconds = fit(adata, batch_key, seed, epochs, mmd_weight=0.0)
        reference = record("X_scvi", "SCVI", model, seconds)
        if args.dataset == "null":
            model, seconds = fit(adata, batch_key, seed + 100, epochs, mmd_weight=0.0)
            record("X_scvi_seed2", "SCVI, second seed", model, seconds)
        for s in strengths:
            model, seconds = fit(adata, batch_key, seed, epochs, mmd_strength=s)
            record(f"X_strength_{s:g}", f"strength {s:g}", model, seconds, strength=s)
        for w in [float(w) for w in args.fixed.split(",") if w]:
            model, seconds = fit(adata, batch_key, seed, epochs, mmd_weight=w)
            record(f"X_fixed_{w:g}", f"fixed {w:g}", model, seconds)
        if args.dataset != "null" and not args.no_scib:
            score_rows(adata, batch_key, labels_key, [r for r in rows if r["seed"] == seed])
        pd.DataFrame(rows).to_csv(path, index=False)
    return pd.DataFrame(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", choices=["sim", "hard", "kang", "null"])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--strengths", default="0.25,0.5,0.75,0.9,1")
    parser.add_argument("--fixed", default="100", help="fixed weights for the cost (comma-separated)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--no-scib", action="store_true", help="skip scib-metrics")
    parser.add_argument("--suffix", default="", help="appended to the CSV name")
    args = parser.parse_args(argv)
    table = run(args)
    cols = [c for c in ("Batch correction", "Bio conservation", "Total", "knn_batch_mixing",
                        "label_purity", "min_purity", "max_intrusion", "kept_from_scvi",
                        "final_weight", "fit_seconds") if c in table]
    print(table.groupby("method", sort=False)[cols].mean().round(3).to_string())


if __name__ == "__main__":
    main()
