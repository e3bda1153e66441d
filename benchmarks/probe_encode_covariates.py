# ruff: noqa
"""Probe: the default with the batch given to the encoder (encode_covariates=True)."""
import sys, time, warnings
sys.path.insert(0, "/work/main/benchmarks")
import numpy as np
import pandas as pd
import scvi
from atlas import simulate
from common import kang, release
from scvi_mmd import SCVIMMD
from scvi_mmd.data import simulate_batches
from scvi_mmd.metrics import batch_mixing, purity_by_type

warnings.filterwarnings("ignore")
OUT = "/tmp/enc.csv"
rows = []


def fit(adata, seed, epochs, **kw):
    scvi.settings.seed = seed
    data = adata.copy()
    SCVIMMD.setup_anndata(data, batch_key="batch")
    m = SCVIMMD(data, **kw)
    t = time.perf_counter()
    m.train(max_epochs=epochs, batch_size=128, enable_progress_bar=False,
            check_val_every_n_epoch=epochs)
    return m, time.perf_counter() - t


def cellline(seed, n=1500, g=200):
    mixes = [[.4, .3, .1, .1, .1], [.1, .2, .3, .2, .2], [.2, .1, .1, .3, .3],
             [.6, .3, .1, 0, 0], [.1, .3, .6, 0, 0]]
    return simulate_batches(n_cells=n, n_genes=g, n_batches=5, n_cell_types=5,
                            batch_effect=1.0, type_effect=1.5, type_proportions=mixes, seed=seed)


def types24(seed):
    rng = np.random.default_rng(seed)
    mixes = rng.dirichlet(np.full(24, 0.7), 8)
    return simulate_batches(n_cells=2400, n_genes=200, n_batches=8, n_cell_types=24,
                            batch_effect=0.3, type_effect=1.5, type_proportions=mixes, seed=seed)


SETS = {
    "cellline1500": lambda s: (cellline(0), 30),
    "types24": lambda s: (types24(0), 30),
    "B4_e0.8": lambda s: (simulate(4, s, batch_effect=0.8), 30),
    "pancreas_e0.8": lambda s: (simulate(9, s, mixes=True, n_types=14, batch_effect=0.8,
                                         alpha=0.5, exclusive=False), 40),
    "pancreas_e0.4": lambda s: (simulate(9, s, mixes=True, n_types=14, batch_effect=0.4,
                                         alpha=0.5, exclusive=False), 40),
    "kang": lambda s: (kang(s, shift=False), 100),
    "kang_shifted": lambda s: (kang(s), 100),
    "types32": lambda s: (simulate(8, s, mixes=True, n_types=32), 30),
    "mixes8": lambda s: (simulate(8, s, mixes=True), 30),
    "B16": lambda s: (simulate(16, s), 30),
}
CONFIGS = {"scvi": dict(mmd_weight=0.0), "scvi_enc": dict(mmd_weight=0.0, encode_covariates=True),
           "default": {}, "default_enc": dict(encode_covariates=True)}

if __name__ == "__main__":
    names = sys.argv[1].split(",")
    seeds = [int(s) for s in sys.argv[2].split(",")]
    configs = sys.argv[3].split(",") if len(sys.argv) > 3 else list(CONFIGS)
    for name in names:
        for seed in seeds:
            adata, epochs = SETS[name](seed)
            ref = {}
            for c in configs:
                m, sec = fit(adata, seed, epochs, **CONFIGS[c])
                z = m.get_latent_representation()
                pur = purity_by_type(z, adata.obs["cell_type"], 15)
                base = "scvi_enc" if c.endswith("enc") and "scvi_enc" in ref else "scvi"
                if c.startswith("scvi"):
                    ref[c] = pur
                r = ref.get(base, ref.get("scvi"))
                drops = {t: pur[t] - r[t] for t in pur} if r else {}
                lost = sorted(t for t, d in drops.items() if d < -0.02)
                st = m.mmd_strength_state
                row = dict(data=name, seed=seed, config=c, sec=round(sec),
                           mixing=round(batch_mixing(z, adata.obs["batch"].to_numpy(), 15), 3),
                           n_lost=len(lost), worst=round(min(drops.values()), 3) if drops else None,
                           weight=None if st is None else round(st["weight"], 1),
                           phase=None if st is None else st["phase"],
                           late=None if st is None else round(m.module.strength.late_rise(), 2),
                           cap=None if st is None else m.module.strength.reached_cap,
                           pure=None if st is None or m.module.penalty.clusters is None else
                           round(float(m.module.penalty.clusters.pure_share), 2))
                print(row, flush=True)
                rows.append(row)
                pd.DataFrame(rows).to_csv(OUT + "." + "_".join(names) + ".csv", index=False)
                release(m)
