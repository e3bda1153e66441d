"""Session 20 probe (kept in history only; python benchmarks/probe_structure.py types24,batches16,mixes3): does a label-free measure of the latent's cluster structure fall when types merge
and not when batches are corrected? R = between-cluster SS / total SS of k-means(k) on the
latent, read every few epochs of the default's training."""
import sys, numpy as np, scvi, anndata, pandas as pd
from lightning.pytorch.callbacks import Callback
from sklearn.cluster import KMeans
sys.path.insert(0, "/work/main/benchmarks")
from common import purity_by_type, KANG, release
from scvi_mmd import SCVIMMD
from scvi_mmd.data import simulate_batches
from scvi_mmd.metrics import batch_mixing

def ratio(z, k, seed=0):
    km = KMeans(k, n_init=3, random_state=seed).fit(z)
    tot = ((z - z.mean(0)) ** 2).sum()
    return 1 - km.inertia_ / tot

def data(name):
    if name == "types24":
        rng = np.random.default_rng(0)
        mixes = rng.dirichlet(np.full(24, 0.7), 8)
        return simulate_batches(n_cells=2400, n_genes=200, n_batches=8, n_cell_types=24, batch_effect=0.3, type_effect=1.5, type_proportions=mixes, seed=0), 30, 64
    if name == "batches16":
        return simulate_batches(n_cells=1600, n_genes=200, n_batches=16, n_cell_types=4, batch_effect=0.4, type_effect=1.5, seed=5), 30, 64
    if name == "mixes3":
        mixes = [[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.4, 0.2, 0.4]]
        return simulate_batches(n_cells=1500, n_genes=200, n_batches=3, n_cell_types=3, batch_effect=0.3, type_effect=1.5, type_proportions=mixes, seed=7), 30, 64
    import scanpy as sc
    a = anndata.read_h5ad(KANG)
    sc.pp.highly_variable_genes(a, flavor="seurat_v3", n_top_genes=2000, batch_key="batch", subset=True)
    return a, 100, 128

class Probe(Callback):
    def __init__(self, model, adata, every): self.model, self.adata, self.every, self.rows = model, adata, every, []
    def on_train_epoch_end(self, trainer, pl):
        e = trainer.current_epoch + 1
        if e % self.every and e != 1: return
        was = pl.module.training
        self.model.is_trained_ = True
        z = self.model.get_latent_representation()
        self.model.is_trained_ = False
        pl.module.train(was)
        pur = purity_by_type(z, self.adata.obs["cell_type"])
        self.rows.append(dict(epoch=e, w=self.model.module.weight_rule.current_weight,
                              mix=batch_mixing(z, self.adata.obs["batch"].to_numpy(), 15),
                              minpur=min(pur.values()), meanpur=float(np.mean(list(pur.values()))),
                              R8=ratio(z, 8), R16=ratio(z, 16), R32=ratio(z, 32)))

for name in sys.argv[1].split(","):
    for weight in (None, 0.0):
        a, ep, hidden = data(name)
        scvi.settings.seed = 0
        a = a.copy()
        SCVIMMD.setup_anndata(a, batch_key="batch")
        m = SCVIMMD(a, n_hidden=hidden, mmd_weight=weight)
        p = Probe(m, a, max(ep // 10, 1))
        m.train(max_epochs=ep, batch_size=128, enable_progress_bar=False, check_val_every_n_epoch=ep, callbacks=[p])
        df = pd.DataFrame(p.rows)
        print(name, "default" if weight is None else "scvi")
        print(df.round(3).to_string(index=False), flush=True)
        release(m)
