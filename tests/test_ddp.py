"""DDP training on CPU with two processes (gloo), through Lightning's own strategy."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, warnings
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import scvi, torch
    from scvi_mmd import SCVIMMD
    from scvi_mmd.data import simulate_batches

    torch.set_num_threads(1)
    scvi.settings.seed = 0
    split = sys.argv[1] == "split"  # batches scVI puts apart: every process must restart
    adata = simulate_batches(n_cells=300, n_genes=50, n_batches=2 if split else 3,
                             n_cell_types=3, batch_effect=1.5 if split else 0.5, seed=0)
    SCVIMMD.setup_anndata(adata, batch_key="batch")
    restarts = []
    if split:
        from scvi_mmd.module import StrengthController
        restart = StrengthController.restart
        StrengthController.restart = lambda self: (restarts.append(1), restart(self))
    # "strength": the default, whose controller reads the discrepancy averaged over processes
    strength = sys.argv[1] in ("strength", "split")
    weight = None if strength else 10.0
    model = SCVIMMD(adata, mmd_weight=weight, mmd_ddp_gather=sys.argv[1] == "gather")
    epochs = 8 if strength else 1  # past the controller's warm-up
    model.train(max_epochs=epochs, accelerator="cpu", devices=2,
                strategy="ddp_find_unused_parameters_true", check_val_every_n_epoch=1,
                enable_progress_bar=False, batch_size=64)
    # one file per process: two processes printing to one pipe interleave their lines
    rank = torch.distributed.get_rank()
    out = {"restarts": len(restarts),  # and the same parameters everywhere (DDP syncs gradients)
           "total": sum(float(p.detach().double().sum()) for p in model.module.parameters())}
    if rank == 0:
        out["history"] = {k: [float(x) for x in v.iloc[:, 0]] for k, v in model.history.items()}
        out["phase"] = model.mmd_strength_state["phase"] if strength else None
    with open(f"result_{rank}.json", "w") as f:
        json.dump(out, f)
    """
)


@pytest.mark.parametrize("mode", ["local", "gather", "strength", "split"])
def test_ddp_two_cpu_processes(tmp_path, mode):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads((tmp_path / f"result_{rank}.json").read_text()) for rank in (0, 1)]
    history = results[0]["history"]
    epochs = 8 if mode in ("strength", "split") else 1
    for key in ("mmd_loss_train", "mmd_loss_validation", "elbo_train", "mmd_weight_train"):
        assert len(history[key]) == epochs and np.isfinite(history[key]).all(), key
    if mode in ("strength", "split"):
        assert np.isfinite(history["mmd_discrepancy_train"]).all()
        assert results[0]["phase"] != "warmup"
    assert results[0]["total"] == results[1]["total"]  # the same parameters in each process
    if mode == "split":  # both processes restarted, once
        assert [r["restarts"] for r in results] == [1, 1]
