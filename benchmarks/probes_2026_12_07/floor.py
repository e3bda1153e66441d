"""Probe: the composition floor of the discrepancy from scVI's own decoder (post hoc, weight 0)."""
import sys, warnings, logging
warnings.filterwarnings("ignore"); logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
from pathlib import Path; sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]
import numpy as np, torch, scvi
from run import fit
from traj import get
from scvi_mmd import SCVIMMD
from scvi_mmd.module import MMDPenalty
from scvi_mmd.data import simulate_batches

def data(name, seed):
    if name == "types24_even":
        return simulate_batches(n_cells=2400, n_genes=200, n_batches=8, n_cell_types=24, batch_effect=0.3,
                                type_effect=1.5, seed=0), 30, 64
    return get(name, seed)

def d_of(pen, z, codes, g, draws=200):
    vals = []
    with torch.no_grad():
        for _ in range(draws):
            idx = torch.randperm(len(z), generator=g)[:128]
            t, n = pen.term_and_null(z[idx], codes[idx]); vals.append(float(t - n))
    return np.mean(vals), np.std(vals) / np.sqrt(draws)

for name in sys.argv[1].split(","):
    adata, epochs, nh = data(name, 0)
    m, lat, _ = fit(SCVIMMD, adata, epochs, 0, nh, mmd_weight=0.0)
    mod = m.module.eval()
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    x = torch.tensor(X, dtype=torch.float32)
    b = torch.tensor(m.adata_manager.get_from_registry("batch")).reshape(-1, 1).long()
    with torch.no_grad():
        inf = mod.inference(x, b)
        z, lib = inf["qz"].loc, inf["library"]
        def recode(batch):
            px = mod.generative(z, lib, batch)["px"]
            return mod.inference(px.mu, batch)["qz"].loc
        z_own = recode(b)
        ref = torch.mode(b.reshape(-1)).values
        z_ref = recode(torch.full_like(b, int(ref)))
    g = torch.Generator().manual_seed(0)
    out = {}
    for label, zz in (("z", z), ("own", z_own), ("ref", z_ref)):
        pen = MMDPenalty(mod.n_batch, clusters=16, n_latent=zz.shape[1]); pen.train()
        with torch.no_grad():
            for _ in range(300):
                idx = torch.randperm(len(zz), generator=g)[:128]; pen(zz[idx], b[idx])
        pen.eval(); out[label] = d_of(pen, zz, b, g)
    print(f"{name}: D(z) {out['z'][0]:.4f}+-{out['z'][1]:.4f}  D(own) {out['own'][0]:.4f}+-{out['own'][1]:.4f}  "
          f"D(ref) {out['ref'][0]:.4f}+-{out['ref'][1]:.4f}  share {out['ref'][0]/out['own'][0]:.2f}", flush=True)
