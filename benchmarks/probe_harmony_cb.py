"""Session 20 probe (history only): Harmony on the cell-line-like simulation; python benchmarks/probe_harmony_cb.py (strengths: python benchmarks/probe_degree_run.py s0.5,s0.25 cb1.0 0,1,2)."""
import sys, numpy as np, scanpy as sc, harmonypy
sys.path.insert(0, "benchmarks")
from common import purity_by_type
from scvi_mmd.metrics import batch_mixing
from probe_degree_run import data
for eff in ("cb1.0", "cb0.4"):
    for seed in (0, 1, 2):
        a, _, _ = data(eff, seed)
        sc.pp.normalize_total(a); sc.pp.log1p(a); sc.pp.pca(a, n_comps=30)
        pca = a.obsm["X_pca"]
        ho = harmonypy.run_harmony(pca, a.obs, "batch", random_state=seed)
        zc = np.asarray(ho.Z_corr)
        zc = zc.T if zc.shape[0] != a.n_obs else zc
        for name, z in (("pca", pca), ("harmony", zc)):
            pur = purity_by_type(z, a.obs["cell_type"])
            print(eff, seed, name, "mix %.3f" % batch_mixing(z, a.obs["batch"].to_numpy(), 15), " ".join(f"{t[-1]}:{p:.3f}" for t, p in pur.items()), flush=True)
