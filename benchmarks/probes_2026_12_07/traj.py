"""Controller trajectories of the default: does D stay above target at the end (winding up)?"""
import sys, time, warnings, logging
warnings.filterwarnings("ignore"); logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
from pathlib import Path; sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]
import numpy as np, scvi
from run import data as small_data, purity, fit
from scvi_mmd import SCVIMMD
from scvi_mmd.metrics import batch_mixing
import atlas

def get(name, seed):
    if name in ("types24", "types24_g1000", "types24_lib10k", "b16", "mix3", "b4", "kang", "kang_shifted"):
        return small_data(name, seed)
    if name.startswith("many"):  # many32
        return atlas.simulate(8, seed, mixes=True, n_types=int(name[4:])), 30, 128
    if name.startswith("mixesB"):
        return atlas.simulate(int(name[6:]), seed, mixes=True), 30, 128
    if name.startswith("simB"):
        return atlas.simulate(int(name[4:]), seed), 30, 128
    if name == "kang_donors":
        return atlas.kang_donors(seed), 100, 128

if __name__ == '__main__':
    names = sys.argv[1].split(","); seeds = [int(s) for s in sys.argv[2].split(",")]
    epochs_override = int(sys.argv[3]) if len(sys.argv) > 3 else None
    for name in names:
        for seed in seeds:
            adata, epochs, nh = get(name, seed)
            epochs = epochs_override or epochs
            ct = adata.obs["cell_type"]; b = adata.obs["batch"].astype(str).to_numpy()
            _, ref, _ = fit(SCVIMMD, adata, epochs, seed, nh, mmd_weight=0.0)
            m, lat, sec = fit(SCVIMMD, adata, epochs, seed, nh)
            pref, p = purity(ref, ct), purity(lat, ct)
            lost = {t: round(p[t] - v, 3) for t, v in pref.items() if p[t] < v - 0.02}
            st = m.mmd_strength_state
            h = m.history
            d = h["mmd_discrepancy_train"].iloc[:, 0].to_numpy(dtype=float); w = h["mmd_weight_train"].iloc[:, 0].to_numpy(dtype=float)
            tgt = float(st["target"])
            n = len(d); q = n - max(n // 4, 1)
            ratio = d / tgt if tgt else d * np.nan
            pts = np.linspace(0, n - 1, 6).astype(int)
            wq = w[q - 1] if q > 0 else w[0]
            print(f"{name} s{seed} mix {batch_mixing(ref,b,15):.3f}->{batch_mixing(lat,b,15):.3f} lost {len(lost)}/{len(pref)} "
                  f"worst {min(lost.values()) if lost else 0:.3f} phase {st['phase']} w_end {w[-1]:.3g} "
                  f"efold_lastQ {np.log(max(w[-1],1e-9)/max(wq,1e-9)):.2f} D/t_lastQ {np.nanmean(ratio[q:]):.2f} "
                  f"frac_above {np.mean(ratio[q:] > 1):.2f} traj D/t {np.round(ratio[pts],2).tolist()} w {np.round(w[pts],2).tolist()}", flush=True)
