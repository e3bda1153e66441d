"""Session 20 probe (kept in history only): Kang with a gene-wise factor on STIM (log-normal sd, Poisson resampled), 60 epochs: the default, scvi (weight 0), norestart, keep (clusters never dropped). Run from the repo root: python benchmarks/probe_kang_split.py default|scvi|norestart|keep 1.5,2.0 0,1"""
import sys, numpy as np, scvi, anndata, scipy.sparse as sp
sys.path.insert(0, "benchmarks")
from common import fit, purity_by_type, KANG, release
from scvi_mmd.metrics import batch_mixing
from scvi_mmd.module._clusters import OnlineKMeans
variant, sds, seeds = sys.argv[1], [float(x) for x in sys.argv[2].split(",")], [int(x) for x in sys.argv[3].split(",")]
if variant == "keep":  # the clusters are never dropped (and so no restart)
    orig = OnlineKMeans.observe_purity
    def obs(self, pure):
        orig(self, pure); self.shared.fill_(True); self._shared = True
    OnlineKMeans.observe_purity = obs
if variant == "norestart":
    from scvi_mmd.train import MMDTrainingPlan
    MMDTrainingPlan._restart_if_split = lambda self: None
import scanpy as sc
base = anndata.read_h5ad(KANG)
sc.pp.highly_variable_genes(base, flavor="seurat_v3", n_top_genes=1000, batch_key="batch", subset=True)
for sd in sds:
  for seed in seeds:
    rng = np.random.default_rng(seed)
    a = base.copy()
    x = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
    f = np.exp(rng.normal(0, sd, a.n_vars))
    stim = (a.obs["batch"] == "STIM").to_numpy()
    x[stim] = rng.poisson(x[stim] * f)
    a.X = sp.csr_matrix(x.astype(np.float32))
    kw = dict(mmd_weight=0.0) if variant == "scvi" else {}
    m, sec = fit(a, "batch", seed, 60, **kw)
    z = m.get_latent_representation()
    pur = purity_by_type(z, a.obs["cell_type"])
    cl = m.module.penalty.clusters
    print(variant, "sd", sd, "seed", seed, "mix %.3f" % batch_mixing(z, a.obs["batch"], 15), "minpur %.3f" % min(pur.values()),
          " ".join("%s:%.3f" % (k[:6], v) for k, v in pur.items()),
          "pure %.2f shared %s w %.1f phase %s %.0fs" % (float(cl.pure_share), cl.is_shared, m.mmd_weight, m.mmd_strength_state.get("phase") if kw == {} else "-", sec), flush=True)
    release(m)
