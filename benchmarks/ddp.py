"""DDP on CPU: MMD per process ("local") vs all-gathered latents ("gather"), 2 processes.

Usage::

    python benchmarks/ddp.py local [EPOCHS] [WEIGHT]
    python benchmarks/ddp.py gather [EPOCHS] [WEIGHT]

Trains SCVIMMD on the built-in simulation with Lightning DDP (gloo, 2 CPU processes) and
prints, from rank 0, the seconds, the final MMD term and the kNN batch mixing / cell-type purity.
"""

import json
import logging
import sys
import time
import warnings

warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

import scvi
import torch

from scvi_mmd import SCVIMMD
from scvi_mmd.data import simulate_batches
from scvi_mmd.metrics import batch_mixing, label_purity


def main(mode: str, epochs: int = 30, weight: float = 10.0) -> None:
    torch.set_num_threads(1)
    scvi.settings.seed = 0
    adata = simulate_batches(n_cells=2000, n_genes=500, n_batches=4, n_cell_types=5,
                             batch_effect=0.5, seed=0)
    SCVIMMD.setup_anndata(adata, batch_key="batch")
    model = SCVIMMD(adata, mmd_weight=weight, mmd_kernel_gamma="median",
                    mmd_kernel_scales=[0.25, 0.5, 1.0, 2.0, 4.0],
                    mmd_ddp_gather=mode == "gather")
    start = time.perf_counter()
    model.train(max_epochs=epochs, accelerator="cpu", devices=2, batch_size=128,
                strategy="ddp_find_unused_parameters_true", enable_progress_bar=False)
    seconds = time.perf_counter() - start
    if torch.distributed.get_rank() == 0:
        latent = model.get_latent_representation()
        print("RESULT " + json.dumps({
            "mode": mode, "epochs": epochs, "mmd_weight": weight, "seconds": round(seconds, 1),
            "mmd_loss_train_last": float(model.history["mmd_loss_train"].iloc[-1, 0]),
            "batch_mixing": round(batch_mixing(latent, adata.obs["batch"]), 3),
            "label_purity": round(label_purity(latent, adata.obs["cell_type"]), 3),
        }))


if __name__ == "__main__":
    main(sys.argv[1], *(int(sys.argv[2]),) if len(sys.argv) > 2 else (),
         *(float(sys.argv[3]),) if len(sys.argv) > 3 else ())
