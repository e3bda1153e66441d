# ruff: noqa
"""step_cost.py's alternated steps with three models: SCVI, the default (this code), the default (old package)."""
import sys, time, warnings, logging, copy
warnings.filterwarnings("ignore"); logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
sys.path.insert(0, "/work/main/benchmarks"); sys.path.insert(0, "/work/oldpkg")
import numpy as np, torch, anndata, scvi
from scale import counts_file
from scvi.dataloaders import AnnDataLoader
from scvi_mmd import SCVIMMD
from scvi_mmd_old import SCVIMMD as OldSCVIMMD
from scvi_mmd.train import MMDTrainingPlan
nb = int(sys.argv[1]) if len(sys.argv) > 1 else 4
path = counts_file(20000, nb)
scvi.settings.seed = 0
models = {}
for name, cls in (("SCVI", scvi.model.SCVI), ("new", SCVIMMD), ("old", OldSCVIMMD)):
    adata = anndata.read_h5ad(path); cls.setup_anndata(adata, batch_key="batch"); models[name] = cls(adata)
new = models["new"]
new.train(max_epochs=2, batch_size=128, enable_progress_bar=False, train_size=1.0, check_val_every_n_epoch=None)
models["old"].module.load_state_dict(new.module.state_dict())
old_rule = models["old"].module.weight_rule
for attr in ("_phase", "_log_weight", "_null_mean", "_mean", "_var", "step", "rate"):
    if hasattr(new.module.weight_rule, attr): setattr(old_rule, attr, copy.deepcopy(getattr(new.module.weight_rule, attr)))
for m in ("new", "old"):
    c = models[m].module.penalty.clusters
    c._seeded, c._shared = True, new.module.penalty.clusters.is_shared
weight, rule = new.mmd_weight, new.module.weight_rule
print("weight", weight, new.module.penalty.guard_scope, "old weight", models["old"].mmd_weight)
loader = AnnDataLoader(models["SCVI"].adata_manager, batch_size=128, shuffle=True)
mbs = [b for _, b in zip(range(200), loader)]
for m in models.values(): m.module.train()
opts = {k: torch.optim.Adam(m.module.parameters(), lr=1e-3) for k, m in models.items()}
times = {k: [] for k in models}
names = list(models)
for r in range(3):
    for i, t in enumerate(mbs):
        order = names[i % 3:] + names[:i % 3]
        for name in order:
            kw = {"kl_weight": 1.0}
            if name != "SCVI":
                kw.update(mmd_weight=weight, compute_null=rule.null_due(i), compute_term=True)
            mod = models[name].module
            s = time.perf_counter()
            loss = mod(t, loss_kwargs=kw)[2].loss; loss.backward(); opts[name].step(); opts[name].zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - s)
skip = 50
med = {k: np.median(v[skip:]) * 1e3 for k, v in times.items()}
print({k: round(v, 2) for k, v in med.items()}, "term new", round(med["new"] - med["SCVI"], 2), "term old", round(med["old"] - med["SCVI"], 2))
