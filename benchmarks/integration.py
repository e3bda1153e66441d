"""Benchmark of the knob on an h5ad: scib-metrics over mmd_weight vs SCVI, Harmony, Scanorama.

Usage::

    python benchmarks/integration.py kang      # ../shared/data/kang_pbmc_ifnb.h5ad
    python benchmarks/integration.py sim       # built-in simulation, 4 batches
    python benchmarks/integration.py FILE.h5ad --batch-key batch --labels-key cell_type

Writes ``benchmarks/results/<name>/results.csv`` and PNG plots (see benchmarks/README.md).
Only the public API of scvi_mmd is used (``scvi_mmd.benchmark``, ``scvi_mmd.data``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anndata
import numpy as np

from scvi_mmd.benchmark import run_sweep
from scvi_mmd.data import simulate_batches

ROOT = Path(__file__).resolve().parent
KANG = ROOT.parent.parent / "shared" / "data" / "kang_pbmc_ifnb.h5ad"

# the original design (gamma = 1, sequential pairs) and the median-heuristic multi-scale kernel
CONFIGS = {
    "gamma1": {},
    "median_multiscale": {"mmd_kernel_gamma": "median",
                          "mmd_kernel_scales": [0.25, 0.5, 1.0, 2.0, 4.0]},
}
# label-aware MMD with all, half or a tenth of the cells labelled (issue: pay no biology)
for fraction in (100, 50, 10):
    CONFIGS[f"conditional_{fraction}"] = {
        **CONFIGS["median_multiscale"], "mmd_conditional": True,
        "setup": {"labels_key": f"labels_{fraction}", "unlabeled_category": "Unknown"},
    }
WEIGHTS = {
    "gamma1": [0.0, 1.0, 10.0, 100.0, 1e3, 1e4],
    "median_multiscale": [0.1, 1.0, 10.0, 100.0, 1e3],
    **{f"conditional_{f}": [10.0, 100.0, 1e3] for f in (100, 50, 10)},
}


def add_partial_labels(adata, labels_key: str, seed: int = 0) -> None:
    """obs columns labels_100 / labels_50 / labels_10: the labels of a random subset."""
    rng = np.random.default_rng(seed)
    draw = rng.random(adata.n_obs)
    for fraction in (100, 50, 10):
        labels = adata.obs[labels_key].astype(str).to_numpy().copy()
        labels[draw >= fraction / 100] = "Unknown"
        adata.obs[f"labels_{fraction}"] = labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="'kang', 'sim' or an h5ad path")
    parser.add_argument("--batch-key", default="batch")
    parser.add_argument("--labels-key", default="cell_type")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--modes", default="normal")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--weights", default=None,
                        help="comma-separated mmd_weight grid for every config (default: "
                             "each config's own grid)")
    parser.add_argument("--baselines", default="pca,scvi,harmony,scanorama")
    parser.add_argument("--out", default=None, help="output folder (default: results/<data>)")
    args = parser.parse_args(argv)

    if args.data == "kang":
        adata, name = anndata.read_h5ad(KANG), "kang"
    elif args.data == "sim":
        adata = simulate_batches(n_cells=4000, n_genes=2000, n_batches=4, n_cell_types=6,
                                 batch_effect=0.5, seed=0)
        name = "sim"
    else:
        adata, name = anndata.read_h5ad(args.data), Path(args.data).stem
    configs = {c: CONFIGS[c] for c in args.configs.split(",") if c}
    if any(c.startswith("conditional") for c in configs):
        add_partial_labels(adata, args.labels_key)
    run_sweep(
        adata, args.batch_key, args.labels_key,
        weights={c: ([float(w) for w in args.weights.split(",")] if args.weights
                     else WEIGHTS[c]) for c in configs},
        modes=args.modes.split(","),
        seeds=[int(s) for s in args.seeds.split(",")],
        baselines=tuple(b for b in args.baselines.split(",") if b),
        max_epochs=args.max_epochs, configs=configs,
        output_dir=Path(args.out) if args.out else ROOT / "results" / name,
    )


if __name__ == "__main__":
    main()
