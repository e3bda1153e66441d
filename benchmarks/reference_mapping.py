"""Reference mapping: plain scArches surgery vs surgery with the stored reference sample.

Usage::

    python benchmarks/reference_mapping.py [--epochs 60] [--weight 100] [--seed 0]

On the built-in simulation (4 batches, 6 cell types), batch_3 is held out as the query. A
reference SCVIMMD is trained on the other batches and stores a sample of reference latent
codes (``mmd_reference_size``, :meth:`SCVIMMD.set_reference_sample`). The query is mapped with
``load_query_data`` and trained twice with the same settings: without the sample (plain
surgery: query minibatches hold no reference cell, so the batch MMD cannot act) and with it.
Printed: kNN mixing of query vs reference cells and cell-type purity on the joint latent.
"""

import argparse
import json
import logging
import tempfile
import warnings

warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

import numpy as np
import scvi

from scvi_mmd import SCVIMMD
from scvi_mmd.data import simulate_batches
from scvi_mmd.metrics import batch_mixing, label_purity


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--weight", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    scvi.settings.seed = args.seed
    adata = simulate_batches(n_cells=3000, n_genes=500, n_batches=4, n_cell_types=6,
                             batch_effect=0.5, seed=args.seed)
    is_query = adata.obs["batch"].to_numpy() == "batch_3"
    reference, query = adata[~is_query].copy(), adata[is_query].copy()
    SCVIMMD.setup_anndata(reference, batch_key="batch")
    model = SCVIMMD(reference, mmd_weight=args.weight, mmd_kernel_gamma="median",
                    mmd_kernel_scales=[0.25, 0.5, 1.0, 2.0, 4.0], mmd_reference_size=2000,
                    encode_covariates=True)  # scArches: query batches enter the encoder
    model.train(max_epochs=args.epochs, enable_progress_bar=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model.save(f"{tmp}/plain", overwrite=True)  # sample not stored: plain surgery
        model.set_reference_sample()
        model.save(f"{tmp}/sample", overwrite=True)
        for name in ("plain", "sample"):
            scvi.settings.seed = args.seed
            mapped = SCVIMMD.load_query_data(query.copy(), f"{tmp}/{name}")
            mapped.train(max_epochs=args.epochs, enable_progress_bar=False,
                         plan_kwargs={"weight_decay": 0.0})
            joint = np.concatenate([mapped.get_latent_representation(reference),
                                    mapped.get_latent_representation()])
            origin = np.array(["reference"] * reference.n_obs + ["query"] * query.n_obs)
            types = np.concatenate([reference.obs["cell_type"], query.obs["cell_type"]])
            rows.append({"surgery": name, "query_vs_reference_mixing":
                         round(batch_mixing(joint, origin), 3),
                         "cell_type_purity": round(label_purity(joint, types), 3),
                         "query_purity": round(label_purity(joint[origin == "query"],
                                               query.obs["cell_type"]), 3)})
            print("RESULT " + json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
