# ruff: noqa
"""Probe: the MMD over the minibatch plus R extra cells encoded afresh each step (no grad)."""
import contextlib, sys, time, warnings
sys.path.insert(0, "/work/main/benchmarks")
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import numpy as np
import pandas as pd
import scvi
import torch
from scvi import REGISTRY_KEYS
from scvi_mmd import SCVIMMD
from scvi_mmd.module import MMDVAE
from scvi_mmd.module._mmdvae import MMD_LOSS_KEY, MMD_NULL_KEY
from scvi_mmd.metrics import batch_mixing, purity_by_type
from common import release

warnings.filterwarnings("ignore")


class FreshVAE(MMDVAE):
    extra = None  # (X, b, R)

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight=1.0,
             mmd_weight=None, compute_null=False, compute_term=True):
        elbo_output = super(MMDVAE, self).loss(tensors, inference_outputs, generative_outputs,
                                               kl_weight)
        if mmd_weight is None:
            mmd_weight = self.mmd_weight
        untrained = isinstance(mmd_weight, int | float) and mmd_weight == 0
        if untrained and not compute_term and not compute_null:
            return elbo_output
        codes = self.mmd_codes(inference_outputs)
        batch_index = tensors[REGISTRY_KEYS.BATCH_KEY].reshape(-1)
        if self.extra is not None and self.training:
            X, b, R = self.extra
            pick = torch.randint(0, X.shape[0], (R,))
            with torch.no_grad():
                self.z_encoder.eval()
                out = self.inference(x=X[pick], batch_index=b[pick][:, None])
                self.z_encoder.train()
            codes = torch.cat([codes, out["qz"].loc.detach()])
            batch_index = torch.cat([batch_index, b[pick]])
        with torch.no_grad() if untrained else contextlib.nullcontext():
            if compute_null and self.n_batch >= 2:
                mmd, null = self.penalty.term_and_null(codes, batch_index, None)
                elbo_output.extra_metrics[MMD_NULL_KEY] = null.detach()
            else:
                mmd = self.penalty(codes, batch_index, None)
        scale = codes.shape[0] / tensors[REGISTRY_KEYS.BATCH_KEY].shape[0]
        if getattr(self, "rescale", False) and scale > 1 and not untrained:
            trained = mmd + (scale - 1) * (mmd - mmd.detach())  # per-cell force as at n cells
        else:
            trained = mmd
        elbo_output.loss = elbo_output.loss + mmd_weight * trained
        elbo_output.extra_metrics[MMD_LOSS_KEY] = mmd
        return elbo_output


from scvi_mmd.module._strength import StrengthController
_orig_end = StrengthController._end_warmup


def _end_scaled(self, final=True):
    _orig_end(self, final)
    F = getattr(self, "nu_factor", 1.0)
    if F != 1.0 and self.phase_name == "control":
        nu = float(self.null_noise) * F
        d0 = float(self.baseline)
        target = nu * (d0 / nu) ** (1 - self.strength) if d0 > nu else d0
        self._set(null_noise=nu, target=target)


StrengthController._end_warmup = _end_scaled


class Fresh(SCVIMMD):
    _module_cls = FreshVAE


def fit(adata, seed, epochs, extra=0, rescale=False, nu_factor=1.0, **kw):
    scvi.settings.seed = seed
    data = adata.copy()
    cls = Fresh if extra else SCVIMMD
    cls.setup_anndata(data, batch_key="batch")
    m = cls(data, **kw)
    if extra:
        X = torch.tensor(np.asarray(data.X.todense() if hasattr(data.X, "todense") else data.X),
                         dtype=torch.float32)
        b = torch.tensor(np.asarray(m.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY))
                         .reshape(-1), dtype=torch.long)
        m.module.extra = (X, b, extra)
        m.module.rescale = rescale
        if m.module.strength is not None:
            m.module.strength.nu_factor = nu_factor
    t = time.perf_counter()
    m.train(max_epochs=epochs, batch_size=128, enable_progress_bar=False,
            check_val_every_n_epoch=epochs)
    return m, time.perf_counter() - t


if __name__ == "__main__":
    from probe_encode_covariates import SETS  # (commit 2efa6d7)
    CONFIGS = {"scvi": dict(mmd_weight=0.0), "default": {},
               "fresh384": dict(extra=384), "fresh384_c64": dict(extra=384, mmd_clusters=64),
               "fresh896_c64": dict(extra=896, mmd_clusters=64),
               "c64": dict(mmd_clusters=64),
               "fresh896_c64_nu8": dict(extra=896, mmd_clusters=64, nu_factor=8.0),
               "fresh896_c64_x8": dict(extra=896, mmd_clusters=64, rescale=True)}
    names = sys.argv[1].split(",")
    seeds = [int(s) for s in sys.argv[2].split(",")]
    configs = sys.argv[3].split(",")
    rows = []
    for name in names:
        for seed in seeds:
            adata, epochs = SETS[name](seed)
            ref = None
            for c in configs:
                m, sec = fit(adata, seed, epochs, **CONFIGS[c])
                z = m.get_latent_representation()
                pur = purity_by_type(z, adata.obs["cell_type"], 15)
                if c == "scvi":
                    ref = pur
                drops = {t: pur[t] - ref[t] for t in pur} if ref else {}
                lost = [t for t, d in drops.items() if d < -0.02]
                st = m.mmd_strength_state
                row = dict(data=name, seed=seed, config=c, sec=round(sec),
                           mixing=round(batch_mixing(z, adata.obs["batch"].to_numpy(), 15), 3),
                           n_lost=len(lost), worst=round(min(drops.values()), 3) if drops else None,
                           weight=None if st is None else round(st["weight"], 1),
                           phase=None if st is None else st["phase"],
                           D0=None if st is None else round(st["baseline"], 4),
                           late=None if st is None else round(m.module.strength.late_rise(), 2),
                           cap=None if st is None else m.module.strength.reached_cap,
                           pure=None if st is None or m.module.penalty.clusters is None else
                           round(float(m.module.penalty.clusters.pure_share), 2))
                print(row, flush=True)
                rows.append(row)
                pd.DataFrame(rows).to_csv(f"/tmp/fresh_{'_'.join(names)}_{sys.argv[2]}.csv",
                                          index=False)
                release(m)
