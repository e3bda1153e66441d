# ruff: noqa
"""Probe: after the restart (clusters split the batches), keep learning the clusters on the
whole-batch-corrected latent and switch back to the within-cluster comparison once the
clusters are shared again (EMA of the pure share below THRESH)."""
import os
import torch
from scvi_mmd.module._penalty import MMDPenalty, shared_strata
from scvi_mmd.mmd import pooled_weights, weighted_kernel_sum
from scvi_mmd.mmd._kernels import _neg_sq_distances
from scvi_mmd.train import MMDTrainingPlan

THRESH = float(os.environ.get("RS_THRESH", "0.5"))
WAIT = float(os.environ.get("RS_WAIT", "1.0"))  # in warm-ups
ALPHA = 0.05
_orig_restart = MMDTrainingPlan._restart_if_split


def _restart(self):
    had = self._initial_state is not None
    _orig_restart(self)
    cl = self.module.penalty.clusters
    if had and self._initial_state is None and cl is not None and not cl.is_shared:
        pen = self.module.penalty
        pen._monitor = {"wait": int(WAIT * self.module.weight_rule.warmup_steps), "ema": None,
                        "steps": 0}
        cl.filled.fill_(False); cl.counts.zero_(); cl._seeded = False
        print("RESTART monitor wait", pen._monitor["wait"], flush=True)


def pooled(self, z, batch_index, padding=None, with_null=False):
    groups = batch_index.reshape(-1).long()
    neg_sq = _neg_sq_distances(z)
    assigned = strata = None
    mon = getattr(self, "_monitor", None)
    learning = self.training and not self._frozen
    if self.clusters is not None and not self.clusters.is_shared and mon is not None and learning:
        codes = z.detach() if z.dim() == 2 else z.detach()[0]
        a = self.clusters.update(codes)
        k = self.clusters.n_clusters
        pure = float((shared_strata(groups, a, k) == k).float().mean())
        mon["steps"] += 1
        mon["ema"] = pure if mon["ema"] is None else mon["ema"] + ALPHA * (pure - mon["ema"])
        if mon["steps"] % 200 == 0:
            print(f"  mon step {mon['steps']} ema {mon['ema']:.3f}", flush=True)
        if mon["steps"] > mon["wait"] and mon["ema"] < THRESH:
            self.clusters.shared.fill_(True); self.clusters._shared = True
            print(f"  SWITCH at mon step {mon['steps']} ema {mon['ema']:.3f} weight "
                  f"{self._plan_rule.current_weight:.1f}", flush=True)
            self._monitor = None
            if os.environ.get("RS_CAP") == "1":  # the weight may fall, not rise, from here
                self._plan_rule.max_weight = self._plan_rule.current_weight
    if self.clusters is not None and self.clusters.is_shared:
        codes = z.detach() if z.dim() == 2 else z.detach()[0]
        assigned = self.clusters.update(codes) if learning else self.clusters.assign(codes)
        k = self.clusters.n_clusters
        strata = shared_strata(groups, assigned, k)
        if learning:
            self.clusters.observe_purity(strata == k)
        if not self.clusters.is_shared:
            assigned = strata = None

    def weights_for(codes, strata):
        ignore, checked = padding, None
        if self.guard_unshared_only and strata is not None:
            checked = strata == self.clusters.n_clusters
        if self.selector is not None and (checked is None or bool(checked.any())):
            unmatched = ~self.selector.keep_pooled(codes, neg_sq)
            if checked is not None:
                unmatched = unmatched & checked
            ignore = unmatched if ignore is None else ignore | unmatched
        return pooled_weights(codes, strata=strata, ignore=ignore, dtype=z.dtype,
                              unbiased=self.mode == "unbiased")

    extra = None
    if with_null:
        permuted = groups[self._null_order(groups)]
        extra = weights_for(permuted, None if assigned is None else shared_strata(
            permuted, assigned, self.clusters.n_clusters))
    weights = weights_for(groups, strata)
    result = weighted_kernel_sum(z, weights, self.gamma(z, strata), neg_sq=neg_sq,
                                 symmetric=True, extra_weights=extra)
    if with_null:
        return tuple(v if v.dim() == 0 else v.mean() for v in result)
    return result if result.dim() == 0 else result.mean()


def install():
    MMDTrainingPlan._restart_if_split = _restart
    MMDPenalty.pooled = pooled
    _ots = MMDTrainingPlan.on_train_start

    def ots(self):
        _ots(self)
        self.module.penalty._plan_rule = self.module.weight_rule
    MMDTrainingPlan.on_train_start = ots


# ---- the runner (as run: `python probe_restrat.py default,restrat panc0.8 0,1`; with the cap:
# `RS_CAP=1 python probe_restrat.py restrat panc0.8 0`; the other data sets came from
# session 21's runner, commit d6a2f68, and this session's 4-batch set at batch effect 0.8) ----
import sys
import numpy as np
import scvi
from scvi_mmd import SCVIMMD
from scvi_mmd.data import simulate_batches
from scvi_mmd.metrics import batch_mixing, purity_by_type

_plain_pooled, _plain_restart = MMDPenalty.pooled, MMDTrainingPlan._restart_if_split


def data(name, seed=0):  # pancreas-like: 14 types, 9 batches, Dirichlet(0.5) mixes
    rng = np.random.default_rng(100 + seed)
    mixes = rng.dirichlet(np.full(14, 0.5), 9)
    return simulate_batches(n_cells=6000, n_genes=1000, n_batches=9, n_cell_types=14,
                            batch_effect=float(name[4:] or 0.4), type_effect=1.5,
                            type_proportions=mixes, seed=seed), 40, 128


if __name__ == "__main__":
    variants, names = sys.argv[1].split(","), sys.argv[2].split(",")
    for name in names:
        for seed in [int(x) for x in sys.argv[3].split(",")]:
            a0, epochs, hidden = data(name, seed)
            for v in ["scvi"] + variants:
                MMDPenalty.pooled, MMDTrainingPlan._restart_if_split = _plain_pooled, _plain_restart
                if v == "restrat":
                    install()
                scvi.settings.seed = seed
                a = a0.copy()
                SCVIMMD.setup_anndata(a, batch_key="batch")
                m = SCVIMMD(a, n_hidden=hidden, **({"mmd_weight": 0.0} if v == "scvi" else {}))
                m.train(max_epochs=epochs, batch_size=128, enable_progress_bar=False,
                        check_val_every_n_epoch=epochs)
                z = m.get_latent_representation()
                pur = purity_by_type(z, a.obs["cell_type"])
                if v == "scvi":
                    ref = pur
                lost = {t: round(ref[t] - p, 3) for t, p in pur.items() if p < ref[t] - 0.02}
                print(f"{name} s{seed} {v:8s} mix {batch_mixing(z, a.obs['batch'].to_numpy(), 15):.3f}"
                      f" meanpur {np.mean(list(pur.values())):.3f} lost {len(lost)}/{len(pur)}"
                      f" worst {max(lost.values()) if lost else 0:.3f} w {m.mmd_weight:.1f}",
                      flush=True)
