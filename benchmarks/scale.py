"""Scale: seconds per epoch, peak memory and latent time, training from a backed h5ad.

Usage::

    python benchmarks/scale.py --cells 10000,100000 --batches 4,64,512 --epochs 1
    python benchmarks/scale.py --cells 1000000 --batches 512 --epochs 1 --methods default
    python benchmarks/scale_report.py                  # summary.md and the log-log plot

For each number of cells and batches, a sparse count matrix (2,000 genes, about 7 % non-zero,
8 cell types, a gene-wise batch effect) is written once to ``--workdir`` (chunk by chunk, never
whole in memory) and each method trains in its own process from
``anndata.read_h5ad(path, backed="r")``: ``SCVI`` and the default ``SCVIMMD`` (rounds
interleaved, ``--rounds``), both reading the file in chunks of rows
(:class:`scvi_mmd.data.ChunkedDataModule`, SCVIMMD's default for backed data). Per fit:
seconds per epoch (wall time of ``train`` over the epochs), the median training step (without
data loading; robust to the machine's slow spells), peak RSS of the process, seconds of
``get_latent_representation`` over all cells.
Rows go to ``benchmarks/results/scale/scale.csv`` as they come.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from lightning.pytorch import Callback

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "results" / "scale"
N_GENES, N_TYPES, CHUNK = 2000, 8, 50_000
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "scvi_mmd_scale"


def write_counts(path: Path, n_cells: int, n_batches: int, seed: int = 0) -> None:
    """A backed-ready h5ad of simulated counts, written in chunks of cells."""
    import anndata
    import h5py
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import sparse_dataset, write_elem

    rng = np.random.default_rng(seed)
    base = rng.normal(-1.0, 1.0, N_GENES)
    types = rng.normal(0.0, 1.0, (N_TYPES, N_GENES)) * (rng.random((N_TYPES, N_GENES)) < 0.05)
    batches = rng.normal(0.0, 0.3, (n_batches, N_GENES))
    cell_batch = np.arange(n_cells) % n_batches
    cell_type = rng.integers(0, N_TYPES, n_cells)
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        for start in range(0, n_cells, CHUNK):
            b, t = cell_batch[start:start + CHUNK], cell_type[start:start + CHUNK]
            rate = np.exp(base + 2.5 * types[t] + batches[b] - 2.2)  # ~7 % non-zero
            counts = sp.csr_matrix(rng.poisson(rate).astype(np.float32))
            if start == 0:
                write_elem(f, "X", counts)
            else:
                sparse_dataset(f["X"]).append(counts)
        obs = pd.DataFrame({"batch": pd.Categorical([f"b{i}" for i in cell_batch]),
                            "cell_type": pd.Categorical([f"t{i}" for i in cell_type])},
                           index=[f"c{i}" for i in range(n_cells)])
        write_elem(f, "obs", obs)
        write_elem(f, "var", pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)]))
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, key, {})
        f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
    os.replace(tmp, path)
    check = anndata.read_h5ad(path, backed="r")
    assert check.shape == (n_cells, N_GENES)


def counts_file(n_cells: int, n_batches: int, workdir: str | Path = DEFAULT_WORKDIR) -> Path:
    """The h5ad of :func:`write_counts` for these sizes in ``workdir``, written if missing."""
    path = Path(workdir) / f"counts_{n_cells}_{n_batches}.h5ad"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_counts(path, n_cells, n_batches)
    return path


class StepTimer(Callback):
    """Wall time of each training step (forward, backward, optimiser), without the data
    loading between steps. Its median is robust to the slow spells of a shared machine, which
    move whole-epoch times by +-10 %.
    """

    def __init__(self):
        self.times, self._start = [], 0.0

    def on_train_batch_start(self, *args):
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args):
        self.times.append(time.perf_counter() - self._start)

    def median_ms(self) -> float:
        return float(np.median(self.times) * 1e3) if self.times else float("nan")


def fit_one(path: str, method: str, epochs: int, batch_size: int, backed: bool = True) -> dict:
    """Train one model from the file, backed or loaded (run in its own process)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import anndata
    import scvi

    from scvi_mmd import SCVIMMD

    scvi.settings.seed = 0
    adata = anndata.read_h5ad(path, backed="r" if backed else None)
    from scvi_mmd.data import ChunkedDataModule, ordered_loader

    cls = scvi.model.SCVI if method == "SCVI" else SCVIMMD
    cls.setup_anndata(adata, batch_key="batch")
    model = cls(adata)
    # SCVI reads a backed file as SCVIMMD does (SCVIMMD's default for backed data): the ratio
    # is the cost of the MMD term, not of the reading
    datamodule = ChunkedDataModule(model.adata_manager, batch_size, train_size=1.0) \
        if backed and method == "SCVI" else None
    steps = StepTimer()
    start = time.perf_counter()
    model.train(max_epochs=epochs, batch_size=batch_size, enable_progress_bar=False,
                train_size=1.0, check_val_every_n_epoch=None, datamodule=datamodule,
                callbacks=[steps])
    per_epoch = (time.perf_counter() - start) / epochs
    start = time.perf_counter()
    if backed and method == "SCVI":
        latent = model.get_latent_representation(
            dataloader=ordered_loader(model.adata_manager, batch_size=4096))
    else:
        latent = model.get_latent_representation(batch_size=4096)
    latent_seconds = time.perf_counter() - start
    state = getattr(model, "mmd_strength_state", None)
    return {"seconds_per_epoch": per_epoch, "median_step_ms": steps.median_ms(),
            "latent_seconds": latent_seconds,
            "latent_finite": bool(np.isfinite(latent).all()),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "phase": None if state is None else state["phase"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="10000,100000")
    parser.add_argument("--batches", default="4,64,512")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--methods", default="SCVI,default")
    parser.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    parser.add_argument("--in-memory", action="store_true",
                        help="load the file into memory instead of training from disk")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one fit, in this process
        path, method, epochs, batch_size, backed = args.child
        print("RESULT " + json.dumps(fit_one(path, method, int(epochs), int(batch_size),
                                             backed == "backed")))
        return
    import pandas as pd

    OUT.mkdir(parents=True, exist_ok=True)
    rows, out = [], OUT / "scale.csv"
    if out.exists():
        rows = pd.read_csv(out).to_dict("records")
    methods = args.methods.split(",")
    for n_cells in (int(c) for c in args.cells.split(",")):
        for n_batches in (int(b) for b in args.batches.split(",")):
            path = counts_file(n_cells, n_batches, args.workdir)
            for rnd in range(args.rounds):
                order = methods if rnd % 2 == 0 else methods[::-1]  # interleaved rounds
                for method in order:
                    done = subprocess.run(
                        [sys.executable, __file__, "--child", str(path), method,
                         str(args.epochs), str(args.batch_size),
                         "memory" if args.in_memory else "backed"],
                        capture_output=True, text=True, check=False)
                    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                    if not line:
                        print(done.stderr[-2000:], file=sys.stderr)
                        continue
                    row = {"n_cells": n_cells, "n_batches": n_batches, "method": method,
                           "data": "memory" if args.in_memory else "backed",
                           "round": rnd, "epochs": args.epochs,
                           "batch_size": args.batch_size, **json.loads(line[0][7:])}
                    rows.append(row)
                    print(row, flush=True)
                    pd.DataFrame(rows).to_csv(out, index=False)


if __name__ == "__main__":
    main()
