# ruff: noqa
"""Probe: after the clusters are dropped (split regime), keep learning them (re-seeded at the
restart) and take the kernel's bandwidth within them, as with the clusters kept; the
comparison stays whole-batch."""
import torch
from scvi_mmd.module._penalty import MMDPenalty, shared_strata
from scvi_mmd.mmd import pooled_weights, weighted_kernel_sum
from scvi_mmd.mmd._kernels import _neg_sq_distances
from scvi_mmd.train import MMDTrainingPlan

_orig_restart = MMDTrainingPlan._restart_if_split
_orig_pooled = MMDPenalty.pooled


def _restart(self):
    had = self._initial_state is not None
    _orig_restart(self)
    cl = self.module.penalty.clusters
    if had and self._initial_state is None and cl is not None and not cl.is_shared:
        cl.filled.fill_(False); cl.counts.zero_(); cl._seeded = False
        self.module.penalty._local_bw = True
        print("RESTART: local bandwidth", flush=True)


def pooled(self, z, batch_index, padding=None, with_null=False):
    if self.clusters is None or self.clusters.is_shared:  # (from the drop on: the warm-up's
        return _orig_pooled(self, z, batch_index, padding, with_null)  # second half too)
    groups = batch_index.reshape(-1).long()
    neg_sq = _neg_sq_distances(z)
    codes = z.detach() if z.dim() == 2 else z.detach()[0]
    learning = self.training and not self._frozen
    assigned = self.clusters.update(codes) if learning else self.clusters.assign(codes)

    def weights_for(g):
        ignore = None
        if self.selector is not None:
            ignore = ~self.selector.keep_pooled(g, neg_sq)
        return pooled_weights(g, strata=None, ignore=ignore, dtype=z.dtype,
                              unbiased=self.mode == "unbiased")

    extra = weights_for(groups[self._null_order(groups)]) if with_null else None
    weights = weights_for(groups)
    result = weighted_kernel_sum(z, weights, self.gamma(z, assigned), neg_sq=neg_sq,
                                 symmetric=True, extra_weights=extra)
    if with_null:
        return tuple(v if v.dim() == 0 else v.mean() for v in result)
    return result if result.dim() == 0 else result.mean()


def install():
    MMDTrainingPlan._restart_if_split = _restart
    MMDPenalty.pooled = pooled


# ---- the runner (as run: `python probe_local_bandwidth.py 0,1`: the 2-batch simulation with
# a type in one batch, data seeds 3 / 4, 40 epochs) ----
import sys
import numpy as np
import scvi
from scvi_mmd import SCVIMMD
from scvi_mmd.data import simulate_batches
from scvi_mmd.metrics import batch_mixing, purity_by_type

if __name__ == "__main__":
    for seed in [int(x) for x in sys.argv[1].split(",")]:
        a0 = simulate_batches(900, 200, 2, 3, batch_effect=0.6, type_effect=1.5,
                              type_only_in_batch={2: 0}, seed=3 + seed)
        for v in ("scvi", "default", "localbw"):
            MMDPenalty.pooled, MMDTrainingPlan._restart_if_split = _orig_pooled, _orig_restart
            if v == "localbw":
                install()
            scvi.settings.seed = seed
            a = a0.copy()
            SCVIMMD.setup_anndata(a, batch_key="batch")
            m = SCVIMMD(a, n_hidden=64, **({"mmd_weight": 0.0} if v == "scvi" else {}))
            m.train(max_epochs=40, batch_size=128, enable_progress_bar=False,
                    check_val_every_n_epoch=40)
            z = m.get_latent_representation()
            pur = purity_by_type(z, a.obs["cell_type"])
            if v == "scvi":
                ref = pur
            lost = {t: round(ref[t] - p, 3) for t, p in pur.items() if p < ref[t] - 0.02}
            print(f"excl s{seed} {v:8s} mix {batch_mixing(z, a.obs['batch'].to_numpy(), 15):.3f}"
                  f" lost {len(lost)}/{len(pur)} {lost} w {m.mmd_weight:.1f}", flush=True)
