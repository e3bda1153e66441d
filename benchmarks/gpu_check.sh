#!/usr/bin/env bash
# GPU checks, for a machine with CUDA (none was lent to the sessions so far: not yet run).
#   bash benchmarks/gpu_check.sh            # prints everything; commit what it prints
# 1. the test suite (scvi-tools trains on the GPU when one is visible: accelerator "auto");
# 2. host synchronisations per training step of the default (torch's sync debug mode);
# 3. scale.py at 100k (ratios to SCVI) and 1M cells from a backed file; step_cost.py;
# 4. DDP on every visible GPU, as scvi-tools 1.5 documents it.
set -uo pipefail
cd "$(dirname "$0")/.."
nvidia-smi || { echo "gpu_check: no CUDA device"; exit 1; }
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

echo "== 1. test suite on CUDA"
pytest -x -q -p no:cacheprovider

echo "== 2. host synchronisations per step"
python - <<'PY'
import warnings, scvi, torch
from scvi_mmd import SCVIMMD
from scvi_mmd.data import simulate_batches
adata = simulate_batches(n_cells=20000, n_genes=1000, n_batches=64, seed=0)
SCVIMMD.setup_anndata(adata, batch_key="batch")
model = SCVIMMD(adata)
model.train(max_epochs=2, accelerator="gpu", enable_progress_bar=False)  # past the warm-up
steps = 50
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    torch.cuda.set_sync_debug_mode("warn")
    model.train(max_epochs=1, accelerator="gpu", enable_progress_bar=False,
                datasplitter_kwargs={}, plan_kwargs={}, limit_train_batches=steps)
    torch.cuda.set_sync_debug_mode(0)
syncs = [w for w in caught if "synchroniz" in str(w.message)]
print(f"host synchronisations: {len(syncs)} in {steps} steps ({len(syncs) / steps:.2f} per step)")
for w in syncs[:10]:
    print("  ", w.filename, w.lineno, str(w.message)[:120])
PY

echo "== 3. scale"
python benchmarks/scale.py --cells 100000 --batches 4,64,512 --in-memory --rounds 2 --workdir /tmp/scale
python benchmarks/scale.py --cells 1000000 --batches 512 --epochs 1 --methods SCVI,default --workdir /tmp/scale

echo "== 3b. the term's cost per step on the GPU (steps alternated with SCVI's)"
python benchmarks/step_cost.py --device cuda --batches 4,64,512
python benchmarks/step_cost.py --device cuda --batches 4,64 --batch-size 1024

echo "== 4. DDP on all GPUs"
python - <<'PY'
import torch, scvi
from scvi_mmd import SCVIMMD
from scvi_mmd.data import simulate_batches
n = torch.cuda.device_count()
print("GPUs:", n)
if n > 1:
    adata = simulate_batches(n_cells=20000, n_genes=1000, n_batches=16, seed=0)
    SCVIMMD.setup_anndata(adata, batch_key="batch")
    model = SCVIMMD(adata, mmd_ddp_gather=True)
    model.train(max_epochs=5, accelerator="gpu", devices=n,
                strategy="ddp_find_unused_parameters_true", enable_progress_bar=False)
    print(model.mmd_strength_state)
PY
