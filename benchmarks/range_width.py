"""How the width of a loss-conditional model's weight range sets its strength.

Usage::

    python benchmarks/range_width.py sim --ranges 0.1:1000,1:1000,10:1000 --seeds 0
    python benchmarks/range_width.py kang --ranges 1:1000,10:1000 --seeds 0

Per data set, range and seed: one guarded loss-conditional SCVIMMD over the range (recommended
kernel, the epochs of ``benchmarks/guard.py``), read at each of ``--weights`` inside the range:
kNN batch mixing, kNN label purity and the worst purity of a type some batch lacks
(:func:`scvi_mmd.metrics.exclusive_type_report`). Label-free to train; labels only score. No
scib-metrics here (this is a probe of the knob, not a benchmark of the method). Only the public
API is used; results go to ``benchmarks/results/range_width/``.
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

from scvi_mmd.metrics import batch_mixing, exclusive_type_report, label_purity  # noqa: E402

from guard import EPOCHS, load  # noqa: E402  (benchmarks/guard.py: same data and epochs)
from knob import KERNEL, fit  # noqa: E402  (benchmarks/knob.py: same fit and kernel)

OUT = Path(__file__).resolve().parent / "results" / "range_width"


def run(args) -> pd.DataFrame:
    weights = [float(w) for w in args.weights.split(",")]
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        adata, batch_key, labels_key = load(args.dataset, seed)
        labels, batches = adata.obs[labels_key].to_numpy(), adata.obs[batch_key].to_numpy()
        epochs = args.epochs or EPOCHS[args.dataset]
        for text in args.ranges.split(","):
            low, high = (float(v) for v in text.split(":"))
            model, seconds = fit(adata, batch_key, seed, epochs, mmd_weight=(low, high),
                                 **KERNEL)
            for w in (w for w in weights if low <= w <= high):
                latent = model.get_latent_representation(mmd_weight=w)
                report = exclusive_type_report(latent, labels, batches)
                rows.append({"dataset": args.dataset, "seed": seed, "range": text,
                             "mmd_weight": w, "max_epochs": epochs, "fit_seconds": seconds,
                             "knn_batch_mixing": batch_mixing(latent, batches),
                             "label_purity": label_purity(latent, labels),
                             "min_exclusive_purity": report["min_purity"]})
                print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=False),
                      flush=True)
    return pd.DataFrame(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", choices=["kang", "sim", "hard"])
    parser.add_argument("--ranges", default="0.1:1000,1:1000,10:1000")
    parser.add_argument("--weights", default="0.1,1,10,100,1000")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    table = run(args)
    table.to_csv(OUT / f"{args.dataset}.csv", index=False)
    print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
