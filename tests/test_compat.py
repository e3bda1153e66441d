"""The private scvi-tools names the package uses (scvi_mmd/_compat.py) still work."""

import scvi
from scvi.data import synthetic_iid

from scvi_mmd import _compat


def test_inference_output_keys():
    scvi.model.SCVI.setup_anndata(adata := synthetic_iid(batch_size=50), batch_key="batch")
    model = scvi.model.SCVI(adata, n_latent=4)
    tensors = next(iter(model._make_data_loader(adata, batch_size=8)))
    out = model.module.inference(**model.module._get_inference_input(tensors))
    assert _compat.QZ_KEY in out and _compat.Z_KEY in out
    assert out[_compat.Z_KEY].shape == (8, 4)


def test_minify_type_of_full_data_is_none():
    assert _compat.adata_minify_type(synthetic_iid(batch_size=20)) is None


def test_n_train_cells_follows_the_data_splitter():
    assert _compat.n_train_cells(1000, None, None, 128) == 900
    assert _compat.n_train_cells(1000, 0.5, 0.2, 128) == 500
