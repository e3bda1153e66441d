"""Smoke test of the knob benchmark: the pipeline runs end to end on a few hundred cells."""

import pandas as pd
import pytest

pytest.importorskip("scib_metrics", reason="needs the benchmark extra (scib-metrics)")
pytest.importorskip("harmonypy", reason="needs the benchmark extra (harmonypy)")
pytest.importorskip("scanorama", reason="needs the benchmark extra (scanorama)")

from scvi_mmd.cli.benchmark import run_sweep
from scvi_mmd.data import simulate_batches


def test_sweep_writes_csv_and_plots(tmp_path):
    adata = simulate_batches(n_cells=300, n_genes=200, n_batches=2, n_cell_types=3, seed=2)
    results = run_sweep(
        adata, "batch", "cell_type", weights=[0.0, 10.0], modes=["normal"], seeds=[0],
        n_top_genes=100, max_epochs=2, output_dir=tmp_path, accelerator="cpu",
    )
    table = pd.read_csv(tmp_path / "results.csv")
    assert len(table) == len(results) == 6  # PCA, SCVI, Harmony, Scanorama, 2 weights
    for column in ("method", "config", "mmd_mode", "mmd_weight", "seed", "max_epochs",
                   "fit_seconds",
                   "Batch correction", "Bio conservation", "Total", "Silhouette label"):
        assert column in table.columns, column
    assert set(table["method"]) == {"Unintegrated PCA", "SCVI", "Harmony", "Scanorama",
                                    "SCVIMMD"}
    assert table[["Batch correction", "Bio conservation", "Total"]].notna().all().all()
    assert (table["max_epochs"] == 2).all()
    for png in ("tradeoff.png", "metrics_vs_weight.png", "umaps.png"):
        assert (tmp_path / png).stat().st_size > 0


def test_cli_sweep(tmp_path, capsys):
    from scvi_mmd import cli

    adata = simulate_batches(n_cells=240, n_genes=150, n_batches=2, n_cell_types=3, seed=5)
    adata.write_h5ad(tmp_path / "in.h5ad")
    out = tmp_path / "sweep"
    code = cli.main(["sweep", str(tmp_path / "in.h5ad"), "--batch-key", "batch",
                     "--labels-key", "cell_type", "--weights", "0,10", "--max-epochs", "2",
                     "--n-top-genes", "100", "--baselines", "pca", "--accelerator", "cpu",
                     "-o", str(out)])
    assert code == 0
    table = pd.read_csv(out / "results.csv")
    assert list(table["method"]) == ["Unintegrated PCA", "SCVIMMD", "SCVIMMD"]
    assert "results.csv" in capsys.readouterr().out
    assert cli.main(["sweep", str(tmp_path / "in.h5ad"), "--batch-key", "batch",
                     "--labels-key", "cell_type", "--baselines", "umap", "-o",
                     str(tmp_path / "other")]) == 2
