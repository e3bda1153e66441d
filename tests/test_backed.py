"""Training from data on disk (a backed AnnData).

scvi-tools reads the rows of a backed minibatch in sorted order (h5py needs it), so dropout and
the sampling noise fall on other cells than in memory and a backed training is not the
in-memory one bit for bit; what must hold is that weight 0 is SCVI's own backed training, that
a trained model reads the same latent from disk and from memory, and save / load.
"""

import anndata
import numpy as np
import scvi

from scvi_mmd import SCVIMMD
from scvi_mmd.data import simulate_batches


def _fit(cls, adata, **kwargs):
    scvi.settings.seed = 0
    cls.setup_anndata(adata, batch_key="batch")
    model = cls(adata, n_hidden=32, **kwargs)
    model.train(max_epochs=8, batch_size=64, enable_progress_bar=False)
    return model


def test_backed_anndata_trains(tmp_path):
    path = tmp_path / "counts.h5ad"
    simulate_batches(n_cells=320, n_genes=60, n_batches=4, seed=2).write_h5ad(path)
    backed = anndata.read_h5ad(path, backed="r")
    on_disk = _fit(SCVIMMD, backed)
    assert on_disk.mmd_strength_state["phase"] != "warmup"  # the controller ran
    latent = on_disk.get_latent_representation()
    assert np.isfinite(latent).all()
    in_memory = anndata.read_h5ad(path)
    np.testing.assert_allclose(on_disk.get_latent_representation(in_memory), latent,
                               rtol=1e-5, atol=1e-6)
    on_disk.save(str(tmp_path / "model"))
    loaded = SCVIMMD.load(str(tmp_path / "model"), adata=backed)
    np.testing.assert_array_equal(loaded.get_latent_representation(), latent)
    assert loaded.mmd_strength_state == on_disk.mmd_strength_state


def test_weight_zero_on_disk_is_scvi_on_disk(tmp_path):
    path = tmp_path / "counts.h5ad"
    simulate_batches(n_cells=256, n_genes=50, n_batches=3, seed=3).write_h5ad(path)
    mmd = _fit(SCVIMMD, anndata.read_h5ad(path, backed="r"), mmd_weight=0.0)
    plain = _fit(scvi.model.SCVI, anndata.read_h5ad(path, backed="r"))
    np.testing.assert_array_equal(mmd.get_latent_representation(),
                                  plain.get_latent_representation())
