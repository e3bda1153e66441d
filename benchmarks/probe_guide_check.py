# ruff: noqa
"""Session 21's third probe, kept in history only (removed in the next commit): the guide's
purity check on the 1,500-cell cell-line-like simulation (seed 0, 30 epochs): the default,
strength 0.5, the label-aware MMD under the controller and at a fixed weight of 10.

    python benchmarks/probe_guide_check.py   (needs snippet.py beside it: the first part below)
"""
# --- snippet.py ---
# import warnings
# import numpy as np
# from sklearn.neighbors import NearestNeighbors
# from scvi_mmd import SCVIMMD
# from scvi_mmd.data import simulate_batches
# 
# mixes = [[.4, .3, .1, .1, .1], [.1, .2, .3, .2, .2], [.2, .1, .1, .3, .3], [.6, .3, .1, 0, 0], [.1, .3, .6, 0, 0]]
# adata = simulate_batches(n_cells=1500, n_genes=200, n_batches=5, n_cell_types=5, batch_effect=1.0, type_effect=1.5, type_proportions=mixes, seed=0)
# SCVIMMD.setup_anndata(adata, batch_key="batch")
# 
# # --- the guide's snippet ---
# def purity_by_type(latent, labels, n_neighbors=15):
#     """Per type: the mean share of a cell's neighbours with its type."""
#     labels = np.asarray(labels)
#     index = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(latent).kneighbors(latent)[1]
#     same = labels[index[:, 1:]] == labels[:, None]
#     return {t: float(same[labels == t].mean()) for t in np.unique(labels)}
# 
# model = SCVIMMD(adata)
# model.train(max_epochs=30)
# print(float(model.module.penalty.clusters.pure_share))
# scvi_model = SCVIMMD(adata, mmd_weight=0.0)  # scVI exactly
# scvi_model.train(max_epochs=30)
# labels = adata.obs["cell_type"]
# before = purity_by_type(scvi_model.get_latent_representation(), labels)
# after = purity_by_type(model.get_latent_representation(), labels)
# fallen = {t: round(before[t] - after[t], 3) for t in before if after[t] < before[t] - 0.02}
# print(fallen)
# if fallen:
#     model = SCVIMMD(adata, mmd_strength=float(__import__("os").environ.get("S", "0.5")))
#     model.train(max_epochs=30)
#     after = purity_by_type(model.get_latent_representation(), labels)
#     print({t: round(before[t] - after[t], 3) for t in before if after[t] < before[t] - 0.02})
# --- cond.py ---
import numpy as np, scvi
exec(open("snippet.py").read().split("# --- the guide's snippet ---")[0].replace('SCVIMMD.setup_anndata(adata, batch_key="batch")', 'SCVIMMD.setup_anndata(adata, batch_key="batch", labels_key="cell_type")'))
exec(open("snippet.py").read().split("# --- the guide's snippet ---")[1].split("model = SCVIMMD(adata)")[0])
from scvi_mmd.metrics import batch_mixing
scvi.settings.seed = 0
labels = adata.obs["cell_type"]
s = SCVIMMD(adata, mmd_weight=0.0); s.train(max_epochs=30, enable_progress_bar=False)
before = purity_by_type(s.get_latent_representation(), labels)
for kw in [dict(), dict(mmd_strength=0.5), dict(mmd_conditional=True), dict(mmd_conditional=True, mmd_weight=10.0)]:
    scvi.settings.seed = 0
    m = SCVIMMD(adata, **kw); m.train(max_epochs=30, enable_progress_bar=False)
    z = m.get_latent_representation(); after = purity_by_type(z, labels)
    print(kw, "mix %.3f" % batch_mixing(z, adata.obs["batch"].to_numpy(), 15), {t: round(before[t] - after[t], 3) for t in before if after[t] < before[t] - 0.02}, "w %.1f" % m.mmd_weight, flush=True)
print("scvi mix %.3f" % batch_mixing(s.get_latent_representation(), adata.obs["batch"].to_numpy(), 15))
