# ruff: noqa
# Session 24 probe (kept in git history only; removed in the next commit).
"""Does the controller's end state (D against its target, the weight's late rise) tell runs
that merged types from runs that did not? Default fits matching committed benchmark rows."""
import sys, json, warnings, logging
warnings.filterwarnings("ignore"); logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
sys.path.insert(0, "/work/main/benchmarks")
import numpy as np, pandas as pd
from atlas import simulate
from common import fit, kang, kang_donors, release
from scvi_mmd.cli.benchmark import select_genes
from scvi_mmd.metrics import purity_by_type, batch_mixing
R = "/work/main/benchmarks/results/atlas/"
SETS = {
 "types32_B8": (lambda s: simulate(8, s, mixes=True, n_types=32), 30, "many_types_probe.csv"),
 "types16_B8": (lambda s: simulate(8, s, mixes=True, n_types=16), 30, "many_types_ladder.csv"),
 "mixes_B8": (lambda s: simulate(8, s, mixes=True), 30, "mixes_3seeds.csv"),
 "sim_B4": (lambda s: simulate(4, s), 30, "batches_3seeds.csv"),
 "sim_B16": (lambda s: simulate(16, s), 30, "batches_3seeds.csv"),
 "sim_B4_e0.8": (lambda s: simulate(4, s, batch_effect=0.8), 30, "batches_effect08.csv"),
 "pancreas_e0.4": (lambda s: simulate(9, s, mixes=True, n_types=14, batch_effect=0.4, alpha=0.5, exclusive=False), 40, "pancreas_3seeds.csv"),
 "pancreas_e0.8": (lambda s: simulate(9, s, mixes=True, n_types=14, batch_effect=0.8, alpha=0.5, exclusive=False), 40, "pancreas_3seeds.csv"),
 "kang": (lambda s: kang(s, shift=False), 100, "kang_3seeds.csv"),
 "kang_shifted": (lambda s: kang(s), 100, "kang_shifted_3seeds.csv"),
 "kang_donors": (lambda s: kang_donors(s), 100, "kang_donors_3seeds.csv"),
 "types24_B8": (lambda s: simulate(8, s, mixes=True, n_types=24), 30, "many_types_ladder.csv"),
 "mixes_B32": (lambda s: simulate(32, s, mixes=True), 30, "mixes_3seeds.csv"),
 "sim_B64": (lambda s: simulate(64, s), 30, "batches_3seeds.csv"),
}
CONF = {"": {}, "s25": {"mmd_strength": 0.25}, "s50": {"mmd_strength": 0.5}}
for spec in sys.argv[1].split(","):
    name, seed, ep, conf = (spec.split(":") + ["", "", ""])[:4]
    seed = int(seed or 0)
    build, epochs, csv = SETS[name]
    epochs = int(ep or epochs)
    if ep and name.startswith("kang"):
        csv = csv.replace("3seeds", f"{ep}epochs")
    ad = select_genes(build(seed), "batch", n_top_genes=0)
    ref = pd.read_csv(R + csv)
    ref = ref[(ref.data == name) & (ref.seed == seed)]
    model, sec = fit(ad, "batch", seed, epochs, **CONF[conf])
    z = model.get_latent_representation()
    pur = purity_by_type(z, ad.obs["cell_type"], 15)
    sc = ref[ref.method == "SCVI"].iloc[0] if (ref.method == "SCVI").any() else None; de = ref[ref.method == "default"]
    drops = {t: v - (float(sc[f"purity_{t}"]) if sc is not None else 1.0) for t, v in pur.items()}
    h = model.history
    w = np.asarray(h["mmd_weight_train"]).ravel(); d = np.asarray(h["mmd_discrepancy_train"]).ravel()
    st = model.mmd_strength_state
    out = dict(name=name + (f":{ep}" if ep else "") + (f":{conf}" if conf else ""), seed=seed, mixing=batch_mixing(z, ad.obs["batch"].to_numpy(), 15),
               committed_mixing=float(de.knn_batch_mixing.iloc[0]) if len(de) else None,
               worst=min(drops.values()), lost=sum(v < -0.02 for v in drops.values()),
               target=st["target"], nu=st["null_noise"], D0=st["baseline"], phase=st["phase"],
               late=model.module.strength.late_rise(), cap=model.module.strength.reached_cap, weights=[round(float(x), 3) for x in w], D=[round(float(x), 5) for x in d], sec=sec)
    print(json.dumps(out), flush=True)
    release(model)
