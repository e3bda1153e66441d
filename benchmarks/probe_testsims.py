# ruff: noqa
# Session 24 probe (kept in git history only; removed in the next commit).
import warnings, logging, sys
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
import numpy as np, pandas as pd, scvi
from scvi_mmd import SCVIMMD
from scvi_mmd.data import simulate_batches
def fit(adata, epochs=30, seed=0, **kw):
    scvi.settings.seed = seed
    adata = adata.copy(); SCVIMMD.setup_anndata(adata, batch_key="batch")
    m = SCVIMMD(adata, n_hidden=64, **kw)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m.train(max_epochs=epochs, batch_size=128, enable_progress_bar=False, check_val_every_n_epoch=epochs)
    rising = [str(x.message)[:60] for x in w if "still rising" in str(x.message)]
    st = m.mmd_strength_state
    return m, (st["phase"], round(st["weight"], 2), round(m.module.strength.late_rise(), 3), rising)
which = sys.argv[1]
for seed in (0, 1):
  if which == "types24":
    rng = np.random.default_rng(0); mixes = rng.dirichlet(np.full(24, 0.7), 8)
    a = simulate_batches(n_cells=2400, n_genes=200, n_batches=8, n_cell_types=24, batch_effect=0.3, type_effect=1.5, type_proportions=mixes, seed=0)
  elif which == "many":
    a = simulate_batches(n_cells=1600, n_genes=200, n_batches=16, n_cell_types=4, batch_effect=0.4, type_effect=1.5, seed=5)
  elif which == "props":
    mixes = [[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.4, 0.2, 0.4]]
    a = simulate_batches(n_cells=1500, n_genes=200, n_batches=3, n_cell_types=3, batch_effect=0.3, type_effect=1.5, type_proportions=mixes, seed=7)
  elif which == "cellline":
    mixes = [[.4, .3, .1, .1, .1], [.1, .2, .3, .2, .2], [.2, .1, .1, .3, .3], [.6, .3, .1, 0, 0], [.1, .3, .6, 0, 0]]
    a = simulate_batches(n_cells=1500, n_genes=200, n_batches=5, n_cell_types=5, batch_effect=1.0, type_effect=1.5, type_proportions=mixes, seed=0)
  elif which == "shifted":
    a = simulate_batches(n_cells=768, n_genes=200, n_batches=2, n_cell_types=3, batch_effect=0.6, type_effect=1.5, seed=3)
  from scvi_mmd.metrics import purity_by_type, batch_mixing
  ep = 40 if which == "shifted" else 30
  m0, _ = fit(a, seed=seed, epochs=ep, mmd_weight=0.0) if False else (None, None)
  scvi.settings.seed = seed
  b = a.copy(); SCVIMMD.setup_anndata(b, batch_key="batch"); m0 = SCVIMMD(b, n_hidden=64, mmd_weight=0.0)
  m0.train(max_epochs=ep, batch_size=128, enable_progress_bar=False, check_val_every_n_epoch=ep)
  m, info = fit(a, seed=seed, epochs=ep)
  z0, z = m0.get_latent_representation(), m.get_latent_representation()
  p0, p = purity_by_type(z0, a.obs["cell_type"], 15), purity_by_type(z, a.obs["cell_type"], 15)
  drops = {t: round(p[t] - v, 3) for t, v in p0.items()}
  bm = batch_mixing(z0, a.obs["batch"].to_numpy(), 15), batch_mixing(z, a.obs["batch"].to_numpy(), 15)
  print(which, "seed", seed, info, "mix %.3f -> %.3f" % bm, "lost", sum(v < -0.02 for v in drops.values()), "worst", min(drops.values()), flush=True)
