"""One check on real data: ../shared/data/kang_pbmc_ifnb.h5ad (skipped when absent)."""

import numpy as np
import pytest
from conftest import KANG_PATH

from scvi_mmd import SCVIMMD


@pytest.fixture(scope="module")
def kang():
    if not KANG_PATH.exists():
        pytest.skip(f"{KANG_PATH} not found (real-data test; the data live beside the repo)")
    import anndata
    import scanpy as sc

    adata = anndata.read_h5ad(KANG_PATH)
    sc.pp.highly_variable_genes(
        adata, flavor="seurat_v3", n_top_genes=1000, batch_key="batch", subset=True
    )
    return adata


def test_large_weight_lowers_mmd_on_kang(kang, scvi_module):
    mmd = {}
    for weight in (0.0, 1000.0):
        scvi_module.settings.seed = 0
        adata = kang.copy()
        SCVIMMD.setup_anndata(adata, batch_key="batch")
        model = SCVIMMD(adata, mmd_weight=weight)
        model.train(max_epochs=8, batch_size=256, enable_progress_bar=False)
        mmd[weight] = model.get_mmd_loss(batch_size=256)
        assert np.isfinite(model.history["elbo_train"].to_numpy(dtype=float)).all()
    # the exact estimate has a floor of about 2 / (cells per batch) from its diagonal
    assert mmd[1000.0] < 0.8 * mmd[0.0], mmd
