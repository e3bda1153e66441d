"""The scvi-mmd command line, through its entry function and once as a console script."""

import hashlib
import os
import shutil
import subprocess

import anndata
import numpy as np
import pytest

from scvi_mmd import DEFAULT_STRENGTH, SCVIMMD, cli
from scvi_mmd.data import simulate_batches

FAST = ["--max-epochs", "2", "--n-top-genes", "60"]


@pytest.fixture
def h5ad(tmp_path):
    adata = simulate_batches(n_cells=240, n_genes=120, n_batches=2, n_cell_types=3, seed=1)
    adata.obs["one_batch"] = "a"
    adata.layers["lognorm"] = adata.X.copy()
    adata.layers["lognorm"].data = np.log1p(adata.layers["lognorm"].data) + 0.5
    for name, value in (("nan", np.nan), ("negative", -2.0)):
        adata.layers[name] = adata.X.copy()
        adata.layers[name].data[7] = value
    path = tmp_path / "input.h5ad"
    adata.write_h5ad(path)
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_error(capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("scvi-mmd: error:"), err
    assert "\n" not in err and "Traceback" not in err
    return err


def test_integrate_happy_path(h5ad, tmp_path, capsys):
    before = digest(h5ad)
    out, model_dir, plots = tmp_path / "out.h5ad", tmp_path / "model", tmp_path / "plots"
    code = cli.main(["integrate", str(h5ad), "--batch-key", "batch", "--labels-key", "cell_type",
                     *FAST, "-o", str(out), "--model-dir", str(model_dir), "--plots", str(plots)])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "batch mixing" in stdout and "cell-type purity" in stdout
    assert digest(h5ad) == before  # the input is never modified

    original, result = anndata.read_h5ad(h5ad), anndata.read_h5ad(out)
    assert result.obsm["X_scvi_mmd"].shape == (original.n_obs, 10)
    assert np.isfinite(result.obsm["X_scvi_mmd"]).all()
    assert (result.obs_names == original.obs_names).all()
    assert (result.var_names == original.var_names).all()  # all genes kept, not only HVGs
    assert (result.X != original.X).nnz == 0
    assert result.obs.equals(original.obs)
    # the default: the library's default strength, the pooled MMD within clusters
    record = result.uns["scvi_mmd"]
    assert record["mmd_weight"] == "strength" and record["mmd_guard"] == "unshared clusters"
    assert record["mmd_pairs"] == "pooled" and record["mmd_clusters"] == 16
    assert 0 <= record["clusters_pure_share"] < 0.5  # the clusters were kept
    assert record["strength"]["strength"] == DEFAULT_STRENGTH
    assert record["mmd_mode"] == "unbiased" and "auto" not in record and "curve" not in record
    assert "strength" in stdout and "within 16 clusters" in stdout
    assert {p.name for p in plots.iterdir()} == {"training_curves.png", "umap.png"}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    model = SCVIMMD.load(str(model_dir))
    assert model.module.mmd_kernel_gamma == "median"
    state = model.mmd_strength_state
    assert state["phase"] == record["strength"]["phase"]
    assert state["weight"] == pytest.approx(float(record["strength"]["weight"]))


def test_strength_and_weight_exclude_each_other(h5ad, tmp_path, capsys):
    base = ["integrate", str(h5ad), "--batch-key", "batch", *FAST, "-o", str(tmp_path / "o.h5ad")]
    assert "not both" in run_error(capsys, base + ["--strength", "0.5", "--mmd-weight", "10"])
    assert "[0, 1]" in run_error(capsys, base + ["--strength", "1.5"])
    assert not (tmp_path / "o.h5ad").exists()


def test_integrate_fixed_weight_without_guard(h5ad, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    code = cli.main(["integrate", str(h5ad), "--batch-key", "batch", *FAST, "--mmd-weight",
                     "100", "--mmd-pairs", "sequential", "--no-guard", "-o", str(out)])
    assert code == 0
    assert "guard against over-correction: off" in capsys.readouterr().out
    record = anndata.read_h5ad(out).uns["scvi_mmd"]
    assert record["mmd_weight"] == 100.0 and record["mmd_guard"] == "none"
    assert "auto" not in record and "curve" not in record


def test_summary_says_when_the_clusters_split_the_batches(tmp_path, capsys):
    # batches further apart than the types: the clusters are dropped and the guard checks every
    # cell; the summary and the record say so instead of "within 16 clusters"
    adata = simulate_batches(n_cells=240, n_genes=120, n_batches=2, n_cell_types=3,
                             batch_effect=2.0, seed=1)
    path, out = tmp_path / "split.h5ad", tmp_path / "out.h5ad"
    adata.write_h5ad(path)
    code = cli.main(["integrate", str(path), "--batch-key", "batch", "--max-epochs", "8",
                     "--n-top-genes", "60", "-o", str(out)])
    assert code == 0
    stdout = " ".join(capsys.readouterr().out.split())
    assert "compared as wholes: the latent clusters split them (pure_share" in stdout
    assert "within 16 clusters" not in stdout and "cells checked: all" in stdout
    record = anndata.read_h5ad(out).uns["scvi_mmd"]
    assert record["mmd_guard"] == "all" and record["clusters_pure_share"] >= 0.5


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--mmd-mode", "fast", "--guard"], "exact estimator"),
     (["--mmd-weight", "auto"], "not a number"),        # retired: the strength replaces it
     (["--mmd-weight", "1:100"], "not a number"),       # retired: one loss-conditional training
     (["--mmd-weight", "-1"], ">= 0"),                  # the library's check, in one line
     (["--mmd-kernel-gamma", "0"], "> 0"),
     (["--mmd-pairs", "pooled", "--mmd-mode", "fast"], "exact estimator")],
)
def test_setting_errors_are_the_librarys_in_one_line(h5ad, tmp_path, capsys, args, message):
    argv = ["integrate", str(h5ad), "--batch-key", "batch", *args, "-o", str(tmp_path / "o.h5ad")]
    assert message in run_error(capsys, argv)
    assert not (tmp_path / "o.h5ad").exists()


def test_missing_batch_values_are_named(tmp_path, capsys):
    adata = simulate_batches(n_cells=200, n_genes=60, n_batches=2, seed=1)
    batch = adata.obs["batch"].astype(object)
    batch.iloc[:7] = np.nan
    adata.obs["batch"] = batch
    adata.write_h5ad(tmp_path / "in.h5ad")
    err = run_error(capsys, ["integrate", str(tmp_path / "in.h5ad"), "--batch-key", "batch",
                             "-o", str(tmp_path / "o.h5ad")])
    assert "'batch'" in err and "7 of 200 cells" in err


def test_integrate_backed_input(h5ad, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    code = cli.main(["integrate", str(h5ad), "--batch-key", "batch", "--backed",
                     "--n-top-genes", "0", "--max-epochs", "2", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    result, original = anndata.read_h5ad(out), anndata.read_h5ad(h5ad)
    assert result.obsm["X_scvi_mmd"].shape == (original.n_obs, 10)
    assert (result.X != original.X).nnz == 0
    err = run_error(capsys, ["integrate", str(h5ad), "--batch-key", "batch", "--backed",
                             "--n-top-genes", "60", "-o", str(tmp_path / "o2.h5ad")])
    assert "--n-top-genes 0" in err


def test_integrate_label_aware_with_partial_labels(tmp_path, capsys):
    adata = simulate_batches(n_cells=240, n_genes=120, n_batches=2, n_cell_types=3, seed=3)
    labels = adata.obs["cell_type"].astype(str).to_numpy().copy()
    labels[::3] = "unknown"
    adata.obs["partial"] = labels
    adata.write_h5ad(tmp_path / "in.h5ad")
    out, model_dir = tmp_path / "out.h5ad", tmp_path / "model"
    code = cli.main(["integrate", str(tmp_path / "in.h5ad"), "--batch-key", "batch",
                     "--labels-key", "partial", "--label-aware", "--unlabeled-category",
                     "unknown", "--mmd-mode", "unbiased", *FAST, "-o", str(out),
                     "--model-dir", str(model_dir)])
    assert code == 0, capsys.readouterr().err
    result = anndata.read_h5ad(out)
    assert result.uns["scvi_mmd"]["mmd_conditional"]
    assert result.uns["scvi_mmd"]["mmd_mode"] == "unbiased"
    assert result.uns["scvi_mmd"]["labels_key"] == "partial"
    model = SCVIMMD.load(str(model_dir))
    assert model.module.mmd_conditional and model.module.mmd_mode == "unbiased"
    mapping = list(model.registry_["field_registries"]["labels"]["state_registry"][
        "categorical_mapping"])
    assert model.module.mmd_unlabeled_code == mapping.index("unknown")


def test_demo_runs_without_input(tmp_path, capsys):
    code = cli.main(["integrate", "--max-epochs", "2", "-o", str(tmp_path / "demo.h5ad")])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "1500 cells" in stdout and "batch mixing" in stdout
    assert "X_scvi_mmd" in anndata.read_h5ad(tmp_path / "demo.h5ad").obsm


def test_existing_output_needs_overwrite(h5ad, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    out.write_bytes(b"keep me")
    argv = ["integrate", str(h5ad), "--batch-key", "batch", *FAST, "-o", str(out)]
    assert "--overwrite" in run_error(capsys, argv)
    assert out.read_bytes() == b"keep me"
    assert cli.main([*argv, "--overwrite"]) == 0
    assert "X_scvi_mmd" in anndata.read_h5ad(out).obsm


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}", "--batch-key", "batch"], "not found"),
        (["{text}", "--batch-key", "batch"], "not a readable h5ad"),
        (["{input}", "--batch-key", "donor"], "batch key 'donor' not in obs"),
        (["{input}", "--batch-key", "one_batch"], "1 batch"),
        (["{input}", "--batch-key", "batch", "--layer", "lognorm"], "raw counts"),
        (["{input}", "--batch-key", "batch", "--layer", "nope"], "layer 'nope'"),
        (["{input}", "--batch-key", "batch", "--layer", "nan"], "1 NaN or infinite"),
        (["{input}", "--batch-key", "batch", "--layer", "negative"], "1 negative"),
        (["{empty}", "--batch-key", "batch"], "0 cells"),
        (["{input}", "--batch-key", "batch", "--labels-key", "nope"], "labels key"),
        (["{input}"], "--batch-key is required"),
        (["{input}", "--batch-key", "batch", "--label-aware"], "needs --labels-key"),
        (["{input}", "--batch-key", "batch", "--labels-key", "cell_type",
          "--unlabeled-category", "x"], "only with --label-aware"),
    ],
)
def test_bad_input_gives_one_line(h5ad, tmp_path, capsys, args, message):
    text = tmp_path / "notes.h5ad"
    text.write_text("not an h5ad")
    empty = tmp_path / "empty.h5ad"
    anndata.read_h5ad(h5ad)[:0].copy().write_h5ad(empty)
    names = {"missing": tmp_path / "missing.h5ad", "text": text, "input": h5ad, "empty": empty}
    argv = ["integrate", *[a.format(**names) for a in args], "-o", str(tmp_path / "o.h5ad")]
    before = digest(h5ad)
    assert message in run_error(capsys, argv)
    assert digest(h5ad) == before
    assert not (tmp_path / "o.h5ad").exists()


def test_bad_output_paths(h5ad, tmp_path, capsys, monkeypatch):
    base = ["integrate", str(h5ad), "--batch-key", "batch", "-o"]
    assert "does not exist" in run_error(capsys, [*base, str(tmp_path / "no" / "o.h5ad")])
    assert "must differ from INPUT" in run_error(capsys, [*base, str(h5ad), "--overwrite"])
    assert ".h5ad" in run_error(capsys, [*base, str(tmp_path / "o.csv")])
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert "not writable" in run_error(capsys, [*base, str(tmp_path / "o.h5ad")])


def test_bad_numbers_are_one_line_errors(h5ad, tmp_path, capsys):
    for flag, value in (("--mmd-weight", "-1"), ("--mmd-weight", "nan"),
                        ("--max-epochs", "0"), ("--mmd-kernel-gamma", "0"),
                        ("--batch-size", "1"), ("--mmd-weight", "10:1"),
                        ("--mmd-weight", "0:10"), ("--mmd-weight", "a:b"),
                        ("--strength", "1.5"), ("--mmd-kernel-scales", "1,-2")):
        out = tmp_path / "x.h5ad"
        run_error(capsys, ["integrate", str(h5ad), "--batch-key", "batch", flag, value,
                           "-o", str(out)])
        assert not out.exists()


def test_interrupted_run_leaves_no_output(h5ad, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SCVIMMD, "train", interrupted)
    out = tmp_path / "out.h5ad"
    code = cli.main(["integrate", str(h5ad), "--batch-key", "batch", *FAST, "-o", str(out)])
    assert code == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.h5ad"]


def test_console_script_is_installed():
    script = shutil.which("scvi-mmd")
    assert script is not None, "the scvi-mmd console script is not on PATH (pip install -e .)"
    done = subprocess.run([script, "integrate", "--help"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0 and "--mmd-weight" in done.stdout


def test_many_small_batches_rank_genes_over_all_cells(tmp_path, capsys):
    # donors as the batch key: seurat_v3 cannot fit its curve within batches of a few cells;
    # the genes are then ranked over all cells, with a warning, and the run goes on
    from scvi_mmd.cli._common import highly_variable

    rng = np.random.default_rng(0)
    adata = anndata.AnnData(rng.poisson(0.3, (200, 300)).astype(np.float32))
    adata.X[:, :30] = rng.poisson(3.0, (200, 30))  # some genes expressed throughout
    adata.obs["batch"] = (np.arange(200) % 50).astype(str)  # 50 donors of 4 cells
    with pytest.warns(UserWarning, match="ranking them over all cells"):
        mask = highly_variable(adata, 100, "batch")
    assert mask.dtype == bool and mask.sum() == 100
    path = tmp_path / "donors.h5ad"
    adata.write_h5ad(path)
    out = tmp_path / "out.h5ad"
    with pytest.warns(UserWarning, match="ranking them over all cells"):
        code = cli.main(["integrate", str(path), "--batch-key", "batch", *FAST,
                         "--n-top-genes", "100", "-o", str(out)])
    assert code == 0 and anndata.read_h5ad(out).n_vars == 300
