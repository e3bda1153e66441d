"""The Open Problems method component runs on a file shaped like the task's test data."""

import importlib.util
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml

from scvi_mmd.data import simulate_batches

COMPONENT = Path(__file__).resolve().parents[1] / "openproblems" / "scvi_mmd"


def _task_dataset(path):
    """The task's dataset format (file_dataset.yaml): counts and normalized layers, obs
    batch / cell_type, var hvg / hvg_score / feature_name, obsm X_pca, uns ids."""
    sim = simulate_batches(n_cells=300, n_genes=80, n_batches=3, n_cell_types=3, seed=4)
    counts = sp.csr_matrix(sim.X, dtype=np.int32)
    normalized = sim.X.copy()
    normalized.data = np.log1p(normalized.data)
    score = np.asarray(sim.X.power(2).mean(0)).ravel()
    dataset = ad.AnnData(
        obs=pd.DataFrame({"batch": sim.obs["batch"].astype(str).to_numpy(),
                          "cell_type": sim.obs["cell_type"].astype(str).to_numpy()},
                         index=sim.obs_names),
        var=pd.DataFrame({"hvg": score >= np.median(score), "hvg_score": score,
                          "feature_name": sim.var_names}, index=sim.var_names),
        layers={"counts": counts, "normalized": normalized},
        obsm={"X_pca": np.random.default_rng(0).normal(size=(sim.n_obs, 10))},
        uns={"dataset_id": "sim_test", "normalization_id": "log_cp10k",
             "dataset_organism": "homo_sapiens"},
    )
    dataset.write_h5ad(path)
    return dataset


def test_component_writes_the_task_output(tmp_path):
    dataset = _task_dataset(tmp_path / "dataset.h5ad")
    spec = importlib.util.spec_from_file_location("op_script", COMPONENT / "script.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # not __main__: defines par, meta and main only
    par = {**script.par, "input": str(tmp_path / "dataset.h5ad"),
           "output": str(tmp_path / "integrated.h5ad"), "n_hvg": 40, "max_epochs": 3,
           "n_latent": 8}
    script.main(par, {"name": "scvi_mmd"})
    out = ad.read_h5ad(tmp_path / "integrated.h5ad")
    assert out.obsm["X_emb"].shape == (dataset.n_obs, 8)
    assert np.isfinite(out.obsm["X_emb"]).all()
    assert (out.obs_names == dataset.obs_names).all()
    assert out.uns["dataset_id"] == "sim_test" and out.uns["normalization_id"] == "log_cp10k"
    assert out.uns["method_id"] == "scvi_mmd"


def test_config_follows_the_method_api():
    config = yaml.safe_load((COMPONENT / "config.vsh.yaml").read_text())
    assert config["__merge__"] == "/src/api/comp_method.yaml"
    assert config["name"] == "scvi_mmd"
    assert config["info"]["method_types"] == ["embedding"]
    assert config["info"]["preferred_normalization"] == "counts"
    script = (COMPONENT / "script.py").read_text()
    for argument in config["arguments"]:
        name = argument["name"].lstrip("-")
        assert f'"{name}"' in script, name  # every argument reaches the script's par
    assert {r["path"] for r in config["resources"]} == {"script.py"}
    assert "## VIASH START" in script and "## VIASH END" in script
