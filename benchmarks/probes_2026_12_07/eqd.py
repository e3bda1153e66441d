"""Equilibrium D/target at fixed weights, measured after training on random minibatches of 128."""
import sys, warnings, logging
warnings.filterwarnings("ignore"); logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
from pathlib import Path; sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]
import numpy as np, torch, scvi
from run import purity, fit
from traj import get
from scvi_mmd import SCVIMMD
from scvi_mmd.metrics import batch_mixing

def post_d(model, adata_batches, draws=300, seed=0):
    """Mean D = term - null over random 128-cell minibatches of the trained latent (train-mode BN off)."""
    z = torch.tensor(model.get_latent_representation())
    codes = torch.tensor(model.adata_manager.get_from_registry("batch")).reshape(-1, 1)
    pen = model.module.penalty
    pen.eval()
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for _ in range(draws):
            idx = torch.randperm(len(z), generator=g)[:128]
            t, n = pen.term_and_null(z[idx], codes[idx])
            out.append(float(t - n))
    return float(np.mean(out)), float(np.std(out) / np.sqrt(draws))

names = sys.argv[1].split(","); weights = [float(w) for w in sys.argv[2].split(",")]
for name in names:
    seed = 0
    adata, epochs, nh = get(name, seed)
    ct = adata.obs["cell_type"]; b = adata.obs["batch"].astype(str).to_numpy()
    m0, ref, _ = fit(SCVIMMD, adata, epochs, seed, nh, mmd_weight=0.0)
    md, lat, _ = fit(SCVIMMD, adata, epochs, seed, nh)
    tgt = float(md.mmd_strength_state["target"]); d0 = float(md.mmd_strength_state["baseline"])
    pref = purity(ref, ct)
    # the post-hoc D uses the default model's penalty (its clusters) for every latent
    def report(label, model, lat):
        dd, se = post_d(md, None) if model is md else (None, None)
        p = purity(lat, ct)
        lost = [t for t, v in pref.items() if p[t] < v - 0.02]
        return p, lost
    rows = []
    for label, model, lat in [("SCVI", m0, ref), ("default", md, lat)] + [
            (f"f{w:g}", *fit(SCVIMMD, adata, epochs, seed, nh, mmd_weight=w)[:2]) for w in weights]:
        from scvi_mmd.module import MMDPenalty
        zlat = torch.tensor(lat)
        codes = torch.tensor(md.adata_manager.get_from_registry("batch")).reshape(-1, 1)
        pen = MMDPenalty(md.module.n_batch, clusters=16, n_latent=zlat.shape[1])
        g = torch.Generator().manual_seed(0)
        pen.train()
        with torch.no_grad():
            for _ in range(300):
                idx = torch.randperm(len(zlat), generator=g)[:128]
                pen(zlat[idx], codes[idx])
        pen.eval(); vals = []
        with torch.no_grad():
            for _ in range(300):
                idx = torch.randperm(len(zlat), generator=g)[:128]
                t, n = pen.term_and_null(zlat[idx], codes[idx]); vals.append(float(t - n))
        p = purity(lat, ct); lost = [t for t, v in pref.items() if p[t] < v - 0.02]
        print(f"{name} {label:8s} mix {batch_mixing(lat, b, 15):.3f} lost {len(lost)}/{len(pref)} "
              f"D/t {np.mean(vals)/tgt:6.2f} (+-{np.std(vals)/np.sqrt(300)/tgt:.2f}) D0/t {d0/tgt:.1f}", flush=True)
