import sys, time, warnings, logging
warnings.filterwarnings("ignore"); logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
from pathlib import Path; sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]
import numpy as np, pandas as pd, scvi
from bias_route import BiasRouteSCVIMMD, BiasRouteVAE
from scvi_mmd import SCVIMMD
from scvi_mmd.data import simulate_batches
from scvi_mmd.metrics import batch_mixing
from sklearn.neighbors import NearestNeighbors

def purity(latent, labels, k=15):
    labels = np.asarray(labels).astype(str)
    idx = NearestNeighbors(n_neighbors=k + 1).fit(latent).kneighbors(latent, return_distance=False)[:, 1:]
    same = labels[idx] == labels[:, None]
    return {t: float(same[labels == t].mean()) for t in np.unique(labels)}

def fit(cls, adata, epochs, seed, n_hidden=64, **kw):
    scvi.settings.seed = seed
    adata = adata.copy()
    cls.setup_anndata(adata, batch_key="batch")
    m = cls(adata, n_hidden=n_hidden, **kw)
    t = time.time()
    m.train(max_epochs=epochs, batch_size=128, enable_progress_bar=False, check_val_every_n_epoch=epochs)
    return m, m.get_latent_representation(), time.time() - t

def data(name, seed):
    if name == "types24":
        rng = np.random.default_rng(0)
        mixes = rng.dirichlet(np.full(24, 0.7), 8)
        return simulate_batches(n_cells=2400, n_genes=200, n_batches=8, n_cell_types=24, batch_effect=0.3,
                                type_effect=1.5, type_proportions=mixes, seed=0), 30, 64
    if name.startswith("types24_"):
        rng = np.random.default_rng(0)
        mixes = rng.dirichlet(np.full(24, 0.7), 8)
        g, lib = {"types24_g1000": (1000, 3000), "types24_lib10k": (200, 10000), "types24_lib1k": (200, 1000)}[name]
        return simulate_batches(n_cells=2400, n_genes=g, n_batches=8, n_cell_types=24, batch_effect=0.3,
                                type_effect=1.5, type_proportions=mixes, library_size=lib, seed=0), 30, 64
    if name == "b16":
        return simulate_batches(n_cells=1600, n_genes=200, n_batches=16, n_cell_types=4, batch_effect=0.4,
                                type_effect=1.5, seed=5), 30, 64
    if name == "b4":
        return simulate_batches(n_cells=2000, n_genes=200, n_batches=4, n_cell_types=6, batch_effect=0.4,
                                type_effect=1.5, seed=3), 30, 64
    if name == "mix3":
        mixes = [[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.4, 0.2, 0.4]]
        return simulate_batches(n_cells=1500, n_genes=200, n_batches=3, n_cell_types=3, batch_effect=0.3,
                                type_effect=1.5, type_proportions=mixes, seed=7), 30, 64
    if name == "kang":
        from atlas import kang
        a = kang(seed, shift=False); return a, 100, 128
    if name == "kang_shifted":
        from atlas import kang
        a = kang(seed); return a, 100, 128

if __name__ == '__main__':
    names = sys.argv[1].split(","); seeds = [int(s) for s in sys.argv[2].split(",")]
    configs = sys.argv[3].split(",")
    for name in names:
        for seed in seeds:
            adata, epochs, nh = data(name, seed)
            ct = adata.obs["cell_type"]; b = adata.obs["batch"].astype(str).to_numpy()
            _m, ref, _ = fit(SCVIMMD, adata, epochs, seed, nh, mmd_weight=0.0)
            _recon = float(_m.history["reconstruction_loss_train"].iloc[-1, 0])
            pref = purity(ref, ct)
            print(f"{name} s{seed} SCVI mix {batch_mixing(ref, b, 15):.3f} recon {_recon:.1f}", flush=True)
            for c in configs:
                kw = {}
                cls = SCVIMMD
                if c.startswith("bias"):
                    cls = BiasRouteSCVIMMD; BiasRouteVAE.route = "bias"
                if ":" in c:
                    kw["mmd_weight"] = float(c.split(":")[1])
                m, lat, sec = fit(cls, adata, epochs, seed, nh, **kw)
                p = purity(lat, ct)
                lost = {t: round(p[t] - v, 3) for t, v in pref.items() if p[t] < v - 0.02}
                st = m.mmd_strength_state or {}
                print(f"{name} s{seed} {c:12s} mix {batch_mixing(lat, b, 15):.3f} lost {len(lost)}/{len(pref)} "
                      f"worst {min(lost.values()) if lost else 0:.3f} w {m.mmd_weight:.3g} {st.get('phase','')} "
                      f"D0 {st.get('baseline',0):.4f} {sec:.0f}s", flush=True)
