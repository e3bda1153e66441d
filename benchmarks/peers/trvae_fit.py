"""Fit scArches TRVAE over its knob ``beta``; run inside the TRVAE environment.

Called by ``benchmarks/peers.py`` (not imported: scarches cannot share the project's
environment, see ``requirements-trvae.txt``)::

    .venv-trvae/bin/python benchmarks/peers/trvae_fit.py IN.h5ad OUT.npz \
        --batch-key batch --betas 1,10,100,1000 --epochs 100 --seed 0

``IN.h5ad`` holds raw counts in ``X`` (the genes the other methods use). Set up as the scArches
trVAE tutorial does: ``TRVAE(adata, condition_key, conditions, hidden_layer_sizes=[128, 128],
recon_loss="nb")``, latent size 10, KL annealing over the first 40 % of the epochs (the
tutorial's 200 of 500); early stopping off, so that every method trains the same epochs.
Writes one latent (``get_latent(mean=True)``, the posterior means) per beta, ``X_trvae_<beta>``, and
``fit_seconds_<beta>``.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

warnings.filterwarnings("ignore")
logging.getLogger().setLevel(logging.ERROR)

import anndata
import numpy as np
import scarches as sca
import torch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--batch-key", default="batch")
    parser.add_argument("--betas", default="1,10,100,1000")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    adata = anndata.read_h5ad(args.data)
    adata.X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    conditions = list(adata.obs[args.batch_key].astype(str).unique())
    adata.obs[args.batch_key] = adata.obs[args.batch_key].astype(str)
    result = {}
    for beta in (float(b) for b in args.betas.split(",")):
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
        model = sca.models.TRVAE(adata=adata, condition_key=args.batch_key,
                                 conditions=conditions, hidden_layer_sizes=[128, 128],
                                 latent_dim=10, recon_loss="nb", beta=beta)
        start = time.perf_counter()
        model.train(n_epochs=args.epochs, alpha_epoch_anneal=max(1, int(0.4 * args.epochs)),
                    use_early_stopping=False, monitor=False, seed=args.seed)
        seconds = time.perf_counter() - start
        result[f"X_trvae_{beta:g}"] = np.asarray(model.get_latent(mean=True), dtype=np.float32)
        result[f"fit_seconds_{beta:g}"] = np.array(seconds)
        print(f"TRVAE beta={beta:g}: {seconds:.1f} s", flush=True)
    np.savez(args.out, **result)


if __name__ == "__main__":
    main()
