"""Session 20 probe (kept in history only): the restart at other training lengths. Run from the repo root: EPOCHS=80 JOBS=excl:3,excl:4 python benchmarks/probe_restart_length.py restart|before (and EPOCHS=160; EPOCHS=20 JOBS=sim4:0,sim4:1); the data are session 19's probe's (commit 5766b1f)."""
import sys, os, numpy as np, scvi, anndata, scipy.sparse as sp, torch
sys.path.insert(0, "/work/main/benchmarks")
from common import fit, purity_by_type, KANG, release
from scvi_mmd.data import simulate_batches
from scvi_mmd.metrics import batch_mixing, exclusive_type_report
from scvi_mmd.train import MMDTrainingPlan
variant = sys.argv[1]
orig = MMDTrainingPlan._restart_if_split
def relearn(self):
    had = self._initial_state is not None
    orig(self)
    cl = self.module.penalty.clusters
    if had and self._initial_state is None and abs(self.module.weight_rule.current_weight - 10.0) < 1e-6 \
            and not cl.is_shared:
        cl.start(0)  # shared again, never re-decided
        cl.filled.fill_(False); cl.counts.zero_(); cl._seeded = False
if variant == "before":
    MMDTrainingPlan._restart_if_split = lambda self: None
elif variant == "relearn":
    MMDTrainingPlan._restart_if_split = relearn
def data(name, seed):
    if name == "test":
        return simulate_batches(n_cells=768, n_genes=200, n_batches=2, n_cell_types=3, batch_effect=0.6, type_effect=1.5, seed=3), 40
    if name == "excl":
        return simulate_batches(900, 200, 2, 3, batch_effect=0.6, type_effect=1.5, type_only_in_batch={2: 0}, seed=seed), 40
    if name == "sim4":
        return simulate_batches(3000, 500, 4, 6, batch_effect=1.0, type_effect=1.5, type_only_in_batch={5: 0}, seed=seed), 60
    import scanpy as sc
    a = anndata.read_h5ad(KANG)
    rng = np.random.default_rng(seed)
    a = a.copy()
    sc.pp.highly_variable_genes(a, flavor="seurat_v3", n_top_genes=1000, batch_key="batch", subset=True)
    x = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
    f = np.exp(rng.normal(0, 1.0, a.n_vars))
    stim = (a.obs["batch"] == "STIM").to_numpy()
    x[stim] = rng.poisson(x[stim] * f)
    a.X = sp.csr_matrix(x.astype(np.float32))
    return a, 60
jobs = [(j.split(":")[0], int(j.split(":")[1]), 0.9) for j in os.environ["JOBS"].split(",")]
EP = int(os.environ.get("EPOCHS", "0"))
only = sys.argv[2].split(",") if len(sys.argv) > 2 else None
for name, seed, s in jobs:
    if only and name not in only:
        continue
    a, ep = data(name, seed)
    ep = EP or ep
    m, sec = fit(a, "batch", 0 if name == "test" else seed, ep, n_hidden=64 if name in ("test", "excl") else 128, mmd_strength=s)
    z = m.get_latent_representation()
    pur = purity_by_type(z, a.obs["cell_type"])
    cl = m.module.penalty.clusters
    print(variant, name, seed, s, "mix %.3f" % batch_mixing(z, a.obs["batch"], 15), "minpur %.3f" % min(pur.values()),
          " ".join("%s:%.2f" % (k[:6], v) for k, v in pur.items()),
          "ep %d pure %.2f shared %s w %.1f %.0fs" % (ep, float(cl.pure_share), cl.is_shared, m.mmd_weight, sec), flush=True)
    release(m)
