"""scvi-mmd beside its tunable peers: scArches TRVAE and scvi-tools SysVI, each over its knob.

Usage::

    bash benchmarks/peers/make_trvae_env.sh               # once: TRVAE's own environment
    python benchmarks/peers.py kang --seeds 0,1,2         # ../shared/data/kang_pbmc_ifnb.h5ad
    python benchmarks/peers.py sim --seeds 0,1,2 --epochs 300   # simulation, exclusive type
    python benchmarks/peers.py kang_shifted --seeds 0,1,2       # atlas.py's shifted Kang
    python benchmarks/peers.py kang_donors --seeds 0,1,2        # atlas.py's 8 pseudo-donors
    python benchmarks/peers.py pancreas_e0.8 --seeds 0,1,2      # atlas.py's pancreas shape
    python benchmarks/peers_report.py                     # table, trade-off plot, UMAP grid

Per data set and seed, on the same genes (``benchmarks/common.py``'s data: 2,000 HVGs of Kang,
the 500 simulated genes), the same epochs for every method (``--epochs``; default Kang 100,
simulation 60), latent size 10 and seed. The committed simulation results use 300 epochs:
at 60 (~840 steps on 2,000 cells) TRVAE and SysVI had not yet learnt the cell types (seed 0:
kNN purity of the exclusive type 0.21-0.37 for TRVAE and 0.22-0.25 for SysVI, 0.995 for
SCVI); at 300 the kNN label purity of TRVAE (beta 1) was 0.999.

* fixed methods: unintegrated PCA, SCVI, Harmony, Scanorama (``scvi_mmd.cli.benchmark``);
* ``scvi-mmd (strength)``: the library default at strengths 0.25 / 0.5 / 0.75 / 0.9 / 1;
* ``scvi-mmd (separate fits)``: one fixed-weight model per ``--mmd-weights`` value (the rest
  of the default configuration);
* ``SysVI`` (``scvi.external.SysVI``), as its tutorial sets it up: normalised log counts,
  VampPrior, no KL warm-up; knob ``z_distance_cycle_weight`` over ``--sysvi-weights``
  (the tutorial's range 2-50);
* ``TRVAE`` (``scarches.models.TRVAE``, raw counts, ``recon_loss="nb"``); knob ``beta`` over
  ``--trvae-betas``; fitted in its own environment by ``benchmarks/peers/trvae_fit.py``
  (``--trvae-python``; scarches cannot share the project's environment).

Every embedding of a data set and seed is scored in ONE scib-metrics Benchmarker call; plus
kNN batch mixing and, where some batch lacks a type, that type's kNN purity, its intrusion
into the batches that lack it and the batch mixing of the shared types
(:func:`scvi_mmd.metrics.exclusive_type_report`). Fit seconds are wall time on this machine.
Results: ``benchmarks/results/peers/<dataset>.csv``; latents of each seed in
``results/peers/embeddings/`` (not committed) for the UMAP grid.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("scvi").setLevel(logging.ERROR)

import numpy as np
import pandas as pd
import scvi
from common import EPOCHS, fit, load

from scvi_mmd.cli.benchmark import (
    fit_harmony,
    fit_pca,
    fit_scanorama,
    fit_scvi,
    score,
)
from scvi_mmd.metrics import batch_mixing, exclusive_type_report, purity_by_type

STRENGTHS = (0.25, 0.5, 0.75, 0.9, 1.0)

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "results" / "peers"
TRVAE_FIT = ROOT / "peers" / "trvae_fit.py"
DEFAULT_TRVAE_PYTHON = ROOT / ".venv-trvae" / "bin" / "python"
SCIB_COLUMNS = ("Batch correction", "Bio conservation", "Total")


def fit_sysvi(adata, batch_key: str, seed: int, epochs: int, cycle_weight: float):
    """SysVI on ``layers["lognorm"]``, latent size 10; returns (latent, seconds)."""
    from scvi.external import SysVI

    scvi.settings.seed = seed
    data = adata.copy()
    SysVI.setup_anndata(data, batch_key=batch_key, layer="lognorm")
    model = SysVI(data, n_latent=10)
    start = time.perf_counter()
    model.train(max_epochs=epochs, plan_kwargs={"z_distance_cycle_weight": cycle_weight},
                enable_progress_bar=False, check_val_every_n_epoch=epochs)
    return model.get_latent_representation(), time.perf_counter() - start


def fit_trvae(adata, batch_key: str, seed: int, epochs: int, betas: list[float],
              python: Path) -> dict[float, tuple[np.ndarray, float]]:
    """TRVAE for each beta, in its own environment; {beta: (latent, seconds)}."""
    if not Path(python).exists():
        raise SystemExit(f"{python} not found: run `bash benchmarks/peers/make_trvae_env.sh` "
                         "or pass --trvae-python (or --skip trvae)")
    with tempfile.TemporaryDirectory() as tmp:
        counts = adata.copy()
        del counts.layers["lognorm"]
        counts.obsm.clear()
        counts.write_h5ad(Path(tmp) / "counts.h5ad")
        out = Path(tmp) / "trvae.npz"
        subprocess.run(
            [str(python), str(TRVAE_FIT), str(Path(tmp) / "counts.h5ad"), str(out),
             "--batch-key", batch_key, "--betas", ",".join(f"{b:g}" for b in betas),
             "--epochs", str(epochs), "--seed", str(seed)],
            check=True,
        )
        saved = np.load(out)
        return {b: (saved[f"X_trvae_{b:g}"], float(saved[f"fit_seconds_{b:g}"]))
                for b in betas}


def run(args) -> pd.DataFrame:
    mmd_weights = [float(w) for w in args.mmd_weights.split(",")]
    sysvi_weights = [float(w) for w in args.sysvi_weights.split(",")]
    trvae_betas = [float(b) for b in args.trvae_betas.split(",")]
    skip = set(args.skip.split(",")) if args.skip else set()
    (OUT / "embeddings").mkdir(parents=True, exist_ok=True)
    path = OUT / f"{args.dataset}.csv"
    rows = pd.read_csv(path).to_dict("records") if args.append and path.exists() else []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows = [r for r in rows if r["seed"] != seed]
        adata, batch_key, labels_key = load(args.dataset, seed)
        epochs = args.epochs or EPOCHS[args.dataset]
        keys = []

        def record(key, method, knob, value, latent, seconds):
            adata.obsm[key] = np.asarray(latent, dtype=np.float32)
            keys.append(key)
            rows.append({"dataset": args.dataset, "seed": seed, "method": method,
                         "knob": knob, "knob_value": value, "max_epochs": epochs,
                         "fit_seconds": seconds, "embedding": key,
                         "knn_batch_mixing": batch_mixing(latent, adata.obs[batch_key]),
                         **exclusive_type_report(latent, adata.obs[labels_key],
                                                 adata.obs[batch_key]),
                         **{f"type_purity[{t}]": v for t, v in  # every type, 15 neighbours
                            purity_by_type(latent, adata.obs[labels_key], 15).items()}})
            print(pd.DataFrame(rows[-1:]).drop(columns=["dataset"]).round(3)
                  .to_string(index=False, header=False), flush=True)

        seconds = fit_pca(adata)
        record("X_pca", "Unintegrated (PCA)", "", np.nan, adata.obsm["X_pca"], seconds)
        for name, fitter in (("Harmony", fit_harmony), ("Scanorama", fit_scanorama)):
            seconds = fitter(adata, batch_key, key="tmp", seed=seed)
            record(f"X_{name.lower()}", name, "", np.nan, adata.obsm.pop("tmp"), seconds)
        seconds = fit_scvi(adata, batch_key, "tmp", seed=seed, max_epochs=epochs)
        record("X_scvi", "SCVI", "", np.nan, adata.obsm.pop("tmp"), seconds)

        if "scvi-mmd" not in skip:
            for s in (float(v) for v in args.strengths.split(",")):
                model, seconds = fit(adata, batch_key, seed, epochs, mmd_strength=s)
                record(f"X_mmd_strength_{s:g}", "scvi-mmd (strength)", "mmd_strength", s,
                       model.get_latent_representation(), seconds)
            for w in mmd_weights:
                model, seconds = fit(adata, batch_key, seed, epochs, mmd_weight=w)
                record(f"X_mmd_fixed_{w:g}", "scvi-mmd (separate fits)", "mmd_weight", w,
                       model.get_latent_representation(), seconds)
        if "sysvi" not in skip:
            for w in sysvi_weights:
                latent, seconds = fit_sysvi(adata, batch_key, seed, epochs, w)
                record(f"X_sysvi_{w:g}", "SysVI", "z_distance_cycle_weight", w, latent,
                       seconds)
        if "trvae" not in skip:
            fitted = fit_trvae(adata, batch_key, seed, epochs, trvae_betas, args.trvae_python)
            for b, (latent, seconds) in fitted.items():
                record(f"X_trvae_{b:g}", "TRVAE", "beta", b, latent, seconds)

        np.savez_compressed(OUT / "embeddings" / f"{args.dataset}_s{seed}.npz",
                            batch=adata.obs[batch_key].astype(str).to_numpy(),
                            labels=adata.obs[labels_key].astype(str).to_numpy(),
                            **{k: adata.obsm[k] for k in keys})
        if not args.no_scib:
            table = score(adata, batch_key, labels_key, keys).set_index("embedding")
            for row in rows:
                if row["seed"] == seed:
                    for column in SCIB_COLUMNS:
                        row[column] = float(table.loc[row["embedding"], column])
        pd.DataFrame(rows).to_csv(path, index=False)
    return pd.DataFrame(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", choices=["kang", "kang_shifted", "kang_donors", "sim",
                                            "pancreas_e0.4", "pancreas_e0.8"])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--strengths", default=",".join(f"{s:g}" for s in STRENGTHS))
    parser.add_argument("--mmd-weights", default="1,10,100,1000")
    parser.add_argument("--sysvi-weights", default="2,10,50")
    parser.add_argument("--trvae-betas", default="1,10,100,1000")
    parser.add_argument("--trvae-python", type=Path, default=DEFAULT_TRVAE_PYTHON,
                        help="python of the TRVAE environment (make_trvae_env.sh)")
    parser.add_argument("--skip", default="", help="comma-separated: scvi-mmd,sysvi,trvae")
    parser.add_argument("--append", action="store_true",
                        help="keep the other seeds' rows already in <dataset>.csv")
    parser.add_argument("--no-scib", action="store_true", help="skip scib-metrics")
    args = parser.parse_args(argv)
    table = run(args)
    cols = [c for c in (*SCIB_COLUMNS, "knn_batch_mixing", "min_purity", "fit_seconds")
            if c in table]
    print(table.groupby(["method", "knob_value"], sort=False, dropna=False)[cols]
          .mean().round(3).to_string())


if __name__ == "__main__":
    sys.exit(main())
