"""Session 20 probe (history only; python benchmarks/probe_degree_run.py norestart cbs 0,1 and norestart cb1.0 0,1,2): default vs degree-weighted MMD (clusters as strata, guard subsumed) on
the three simulations of tests/test_atlas.py and more."""
import os, sys, numpy as np, scvi, anndata, pandas as pd, torch
sys.path.insert(0, "benchmarks"); sys.path.insert(0, "benchmarks")
from common import purity_by_type, KANG, release
from probe_degree_weights import degree_weights
from scvi_mmd import SCVIMMD
from scvi_mmd.data import simulate_batches
from scvi_mmd.metrics import batch_mixing
from scvi_mmd.module._penalty import MMDPenalty, shared_strata
from scvi_mmd.mmd import weighted_kernel_sum
from scvi_mmd.mmd._kernels import _neg_sq_distances

NOCLUST = os.environ.get("NOCLUST") == "1"
def pooled(self, z, batch_index, padding=None, with_null=False):
    groups = batch_index.reshape(-1).long()
    neg_sq = _neg_sq_distances(z)
    assigned = strata = None
    if self.clusters is not None and self.clusters.is_shared and not NOCLUST:
        codes = z.detach() if z.dim() == 2 else z.detach()[0]
        learning = self.training and not self._frozen
        assigned = self.clusters.update(codes) if learning else self.clusters.assign(codes)
        k = self.clusters.n_clusters
        strata = shared_strata(groups, assigned, k)
        if learning:
            self.clusters.observe_purity(strata == k)
        if not self.clusters.is_shared:
            assigned = strata = None
    k = self.selector.n_neighbors if self.selector is not None else 3
    def wf(g, st):
        return degree_weights(g, neg_sq, st, k=k, unbiased=self.mode == "unbiased", dtype=z.dtype)
    extra = None
    if with_null:
        permuted = groups[self._null_order(groups)]
        extra = wf(permuted, None if assigned is None else shared_strata(permuted, assigned, self.clusters.n_clusters))
    weights = wf(groups, strata)
    result = weighted_kernel_sum(z, weights, self.gamma(z, strata), neg_sq=neg_sq, symmetric=True, extra_weights=extra)
    if with_null:
        return tuple(v if v.dim() == 0 else v.mean() for v in result)
    return result if result.dim() == 0 else result.mean()

def data(name, seed=0):
    if name == "types24":
        rng = np.random.default_rng(seed)
        mixes = rng.dirichlet(np.full(24, 0.7), 8)
        return simulate_batches(n_cells=2400, n_genes=200, n_batches=8, n_cell_types=24, batch_effect=0.3, type_effect=1.5, type_proportions=mixes, seed=seed), 30, 64
    if name == "batches16":
        return simulate_batches(n_cells=1600, n_genes=200, n_batches=16, n_cell_types=4, batch_effect=0.4, type_effect=1.5, seed=5 + seed), 30, 64
    if name == "mixes3":
        mixes = [[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.4, 0.2, 0.4]]
        return simulate_batches(n_cells=1500, n_genes=200, n_batches=3, n_cell_types=3, batch_effect=0.3, type_effect=1.5, type_proportions=mixes, seed=7 + seed), 30, 64
    if name == "null16":
        one = simulate_batches(n_cells=1600, n_genes=200, n_batches=1, n_cell_types=4, batch_effect=0.4, type_effect=1.5, seed=6 + seed)
        one.obs["batch"] = pd.Categorical(np.random.default_rng(seed).integers(0, 16, one.n_obs).astype(str))
        return one, 30, 64
    if name == "excl":
        return simulate_batches(900, 200, 2, 3, batch_effect=0.6, type_effect=1.5, type_only_in_batch={2: 0}, seed=3 + seed), 40, 64
    if name == "excl4":  # equal-ish effect, an exclusive type, 4 batches, types apart
        return simulate_batches(3000, 500, 4, 6, batch_effect=0.4, type_effect=1.5, type_only_in_batch={5: 0}, seed=seed), 40, 128
    if name == "mix8":
        rng = np.random.default_rng(seed)
        mixes = rng.dirichlet(np.full(8, 0.7), 8)
        return simulate_batches(n_cells=4000, n_genes=500, n_batches=8, n_cell_types=8, batch_effect=0.3, type_effect=1.5, type_proportions=mixes, seed=seed), 30, 128
    if name == "b64":
        return simulate_batches(n_cells=6000, n_genes=500, n_batches=64, n_cell_types=8, batch_effect=0.3, type_effect=1.5, seed=seed), 30, 128
    if name.startswith("cbs"):  # the test suite's smaller version
        mixes = np.array([[.4, .3, .1, .1, .1], [.1, .2, .3, .2, .2], [.2, .1, .1, .3, .3], [.6, .3, .1, 0, 0], [.1, .3, .6, 0, 0]])
        return simulate_batches(n_cells=1500, n_genes=200, n_batches=5, n_cell_types=5, batch_effect=1.0, type_effect=1.5, type_proportions=mixes, seed=seed), 30, 64
    if name.startswith("cb"):  # cell-line-like: 5 batches, 2 of 5 types in batches 0-2 only, mixes differ
        eff = float(name[2:])
        mixes = np.array([[.4, .3, .1, .1, .1], [.1, .2, .3, .2, .2], [.2, .1, .1, .3, .3],
                          [.6, .3, .1, 0, 0], [.1, .3, .6, 0, 0]])
        return simulate_batches(n_cells=2500, n_genes=500, n_batches=5, n_cell_types=5, batch_effect=eff, type_effect=1.5, type_proportions=mixes, seed=seed), 60, 128
    import scanpy as sc
    a = anndata.read_h5ad(KANG)
    sc.pp.highly_variable_genes(a, flavor="seurat_v3", n_top_genes=2000, batch_key="batch", subset=True)
    return a, 100, 128

def pooled_hybrid(self, z, batch_index, padding=None, with_null=False):
    base = orig(self, z, batch_index, padding, with_null)
    if self.clusters is None or self.clusters.is_shared:
        return base
    groups = batch_index.reshape(-1).long()
    neg_sq = _neg_sq_distances(z)
    w = degree_weights(groups, neg_sq, None, k=self.selector.n_neighbors, unbiased=self.mode == "unbiased", dtype=z.dtype)
    deg = weighted_kernel_sum(z, w, self.gamma(z, None), neg_sq=neg_sq, symmetric=True)
    deg = deg if deg.dim() == 0 else deg.mean()
    if with_null:
        term, null = base
        return deg + (term - deg).detach(), null
    return deg + (base - deg).detach()

from scvi_mmd.train import MMDTrainingPlan
_orig_restart = MMDTrainingPlan._restart_if_split
def _relearn(self):
    had = self._initial_state is not None
    _orig_restart(self)
    cl = self.module.penalty.clusters
    if had and self._initial_state is None and not cl.is_shared and abs(self.module.weight_rule.current_weight - 10.0) < 1e-6:
        cl.start(0); cl.filled.fill_(False); cl.counts.zero_(); cl._seeded = False
variants = sys.argv[1].split(",") if __name__ == "__main__" else []
names = sys.argv[2].split(",") if __name__ == "__main__" else []
seeds = [int(x) for x in sys.argv[3].split(",")] if __name__ == "__main__" and len(sys.argv) > 3 else [0]
orig = MMDPenalty.pooled
for name in names:
  for seed in seeds:
    a0, ep, hidden = data(name, seed)
    ref = None
    for v in ["scvi"] + variants:
        MMDPenalty.pooled = pooled if v == "degree" else pooled_hybrid if v == "hybrid" else orig
        MMDTrainingPlan._restart_if_split = _relearn if v == "relearn" else (lambda self: None) if v == "norestart" else _orig_restart
        scvi.settings.seed = seed
        a = a0.copy()
        SCVIMMD.setup_anndata(a, batch_key="batch")
        kw = {"mmd_weight": 0.0} if v == "scvi" else ({"mmd_weight": float(v[5:])} if v.startswith("fixed") else {})
        if v.startswith("s0"):
            kw = {"mmd_strength": float(v[1:])}
        m = SCVIMMD(a, n_hidden=hidden, **kw)
        m.train(max_epochs=ep, batch_size=128, enable_progress_bar=False, check_val_every_n_epoch=ep)
        z = m.get_latent_representation()
        pur = purity_by_type(z, a.obs["cell_type"])
        if v == "scvi":
            ref, zref = pur, z
        lost = {t: round(ref[t] - p, 3) for t, p in pur.items() if p < ref[t] - 0.02}
        st = m.mmd_strength_state if (not kw or 'mmd_strength' in kw) else {}
        cl = m.module.penalty.clusters
        print(" ".join(f"{t[-1]}:{p:.3f}" for t, p in pur.items()), "pure %.2f" % float(cl.pure_share))
        print(f"{name} s{seed} {v:8s} mix {batch_mixing(z, a.obs['batch'].to_numpy(), 15):.3f} meanpur {np.mean(list(pur.values())):.3f} lost {len(lost)}/{len(pur)} worst {max(lost.values()) if lost else 0:.3f} "
              f"w {m.mmd_weight:.1f} phase {st.get('phase', '-')} D0 {st.get('baseline', float('nan')):.4f}", flush=True)
        release(m)
