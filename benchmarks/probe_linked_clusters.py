# ruff: noqa
"""Session 21's probe, kept in history only (removed in the next commit; first in d6a2f68).

0. *A cap at the restart's weight with the clusters learnt and decided again after it*::

       python benchmarks/probe_linked_clusters.py relearncap10 excl,split4 0,1
       python benchmarks/probe_linked_clusters.py relearncap10 cb1.0 0,1,2
       python benchmarks/probe_linked_clusters.py relearncap10 panc0.8 0,1


1. *Clusters linked across batches* for the split regime (the warm-up's clusters split the
   batches): instead of one stratum of every matched cell, the clusters keep learning
   (re-seeded at the restart) and are joined into strata by the guard's mutual nearest
   neighbours (a link per pair of clusters with >= MIN_EDGES mutual pairs across batches,
   the strata their connected components), cells without a match left out::

       python benchmarks/probe_linked_clusters.py default,linked cb1.0 0,1,2
       python benchmarks/probe_linked_clusters.py default,linked excl,split4 0,1
       MIN_EDGES=3 python benchmarks/probe_linked_clusters.py linked excl 0,1

2. *A cap at the restart's weight* (the controller may lower the weight after the restart,
   never raise it above 10)::

       python benchmarks/probe_linked_clusters.py cap10 cb1.0 0,1,2
       python benchmarks/probe_linked_clusters.py cap10 excl,split4 0,1
       python benchmarks/probe_linked_clusters.py cap10 panc0.8 0,1

3. The default on a pancreas-like simulation (14 types, 9 batches, Dirichlet(0.5) mixes)::

       python benchmarks/probe_linked_clusters.py default,s0.75,s0.5,s0.25,fixed10 panc 0,1
       python benchmarks/probe_linked_clusters.py default,fixed10 panc0.8 0,1
"""
import math
import os
import sys

import anndata
import numpy as np
import pandas as pd
import scvi
import torch
from common import KANG, purity_by_type, release

from scvi_mmd import SCVIMMD
from scvi_mmd.data import simulate_batches
from scvi_mmd.metrics import batch_mixing

from scvi_mmd.module._penalty import MMDPenalty
from scvi_mmd.module._clusters import shared_strata
from scvi_mmd.mmd import weighted_kernel_sum, pooled_weights
from scvi_mmd.mmd._kernels import _neg_sq_distances
from scvi_mmd.train import MMDTrainingPlan

MIN_EDGES = int(os.environ.get("MIN_EDGES", "1"))
orig_pooled = MMDPenalty.pooled
orig_restart = MMDPenalty  # placeholder

def mutual_matrix(groups, neg_sq, k):
    n = groups.shape[0]
    other = groups[:, None] != groups[None, :]
    k = min(k, n - 1)
    score = neg_sq.detach().masked_fill(~other, float("-inf"))
    top = score.topk(k, dim=-1).indices
    near = torch.zeros(n, n, dtype=torch.bool)
    near.scatter_(1, top, True)
    near = near & other
    return near & near.T

def linked_strata(groups, assigned, n_clusters, neg_sq, k):
    mutual = mutual_matrix(groups, neg_sq, k)
    onehot = (assigned[:, None] == torch.arange(n_clusters)).float()
    edges = onehot.T @ mutual.float() @ onehot
    reach = (edges >= MIN_EDGES) | torch.eye(n_clusters, dtype=torch.bool)
    reach = reach | reach.T
    for _ in range(math.ceil(math.log2(n_clusters))):
        reach = (reach.float() @ reach.float()) > 0
    comp = reach.float().argmax(1)  # the first cluster of each component
    return comp[assigned], ~mutual.any(1)

def pooled(self, z, batch_index, padding=None, with_null=False):
    cl = self.clusters
    if cl is None or cl.is_shared:
        return orig_pooled(self, z, batch_index, padding, with_null)
    groups = batch_index.reshape(-1).long()
    neg_sq = _neg_sq_distances(z)
    codes = z.detach() if z.dim() == 2 else z.detach()[0]
    learning = self.training and not self._frozen
    assigned = cl.update(codes) if learning else cl.assign(codes)
    k = self.selector.n_neighbors
    def wf(g):
        strata, unmatched = linked_strata(g, assigned, cl.n_clusters, neg_sq, k)
        return pooled_weights(g, strata=strata, ignore=unmatched, dtype=z.dtype,
                              unbiased=self.mode == "unbiased"), strata
    extra = wf(groups[self._null_order(groups)])[0] if with_null else None
    weights, strata = wf(groups)
    result = weighted_kernel_sum(z, weights, self.gamma(z, strata), neg_sq=neg_sq,
                                 symmetric=True, extra_weights=extra)
    if with_null:
        return tuple(v if v.dim() == 0 else v.mean() for v in result)
    return result if result.dim() == 0 else result.mean()

_orig_restart = MMDTrainingPlan._restart_if_split
def restart(self):
    had = self._initial_state is not None
    _orig_restart(self)
    cl = self.module.penalty.clusters
    if had and self._initial_state is None and not cl.is_shared and os.environ.get("RESEED", "1") == "1":
        cl.filled.fill_(False); cl.counts.zero_(); cl._seeded = False

def install():
    MMDPenalty.pooled = pooled
    MMDTrainingPlan._restart_if_split = restart

def uninstall():
    MMDPenalty.pooled = orig_pooled
    MMDTrainingPlan._restart_if_split = _orig_restart


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
    if name.startswith("panc"):  # pancreas-like: 14 types, 9 batches, Dirichlet(0.5) mixes
        rng = np.random.default_rng(100 + seed)
        mixes = rng.dirichlet(np.full(14, 0.5), 9)
        eff = float(name[4:] or 0.4)
        return simulate_batches(n_cells=6000, n_genes=1000, n_batches=9, n_cell_types=14, batch_effect=eff, type_effect=1.5, type_proportions=mixes, seed=seed), 40, 128
    if name == "split4":
        return simulate_batches(3000, 500, 4, 6, batch_effect=1.0, type_effect=1.5, type_only_in_batch={5: 0}, seed=seed), 60, 128
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

variants = sys.argv[1].split(",") if __name__ == "__main__" else []
names = sys.argv[2].split(",") if __name__ == "__main__" else []
seeds = [int(x) for x in sys.argv[3].split(",")] if __name__ == "__main__" and len(sys.argv) > 3 else [0]
for name in names:
  for seed in seeds:
    a0, ep, hidden = data(name, seed)
    ref = None
    for v in ["scvi"] + variants:
        install() if v == "linked" else uninstall()
        if v == "relearncap10":  # the cap, and the clusters learnt and decided again
            def _rc(self, _o=_orig_restart):
                had = self._initial_state is not None
                _o(self)
                rule = self.module.weight_rule
                cl = self.module.penalty.clusters
                if had and self._initial_state is None and not cl.is_shared and abs(rule.current_weight - 10.0) < 1e-6:
                    rule.max_weight = rule.current_weight
                    cl.start(max(rule.warmup_steps // 2, 1)); cl.filled.fill_(False); cl.counts.zero_(); cl._seeded = False
            MMDTrainingPlan._restart_if_split = _rc
        if v == "cap10":  # the restart's weight (10) becomes the controller's cap
            def _cap(self, _o=_orig_restart):
                had = self._initial_state is not None
                _o(self)
                rule = self.module.weight_rule
                if had and self._initial_state is None and not self.module.penalty.clusters.is_shared and abs(rule.current_weight - 10.0) < 1e-6:
                    rule.max_weight = rule.current_weight
            MMDTrainingPlan._restart_if_split = _cap
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
