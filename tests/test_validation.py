"""Bad input is stopped before training with a clear error (issue: hardening)."""

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import TRAIN_KWARGS

from scvi_mmd import SCVIMMD


def _with_bad_entry(adata, value, sparse, layer=None):
    matrix = adata.X.astype(np.float32)
    matrix[3, 5] = value
    matrix[7, 2] = value
    matrix = sp.csr_matrix(matrix) if sparse else matrix
    if layer is None:
        adata.X = matrix
    else:
        adata.layers[layer] = matrix
    return adata


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize(("value", "what"), [(np.nan, "2 NaN or infinite"),
                                             (np.inf, "2 NaN or infinite"),
                                             (-1.0, "2 negative")])
@pytest.mark.parametrize("layer", [None, "counts"])
def test_bad_counts_raise_at_setup_naming_cells_and_genes(synthetic, value, what, sparse, layer):
    adata = _with_bad_entry(synthetic, value, sparse, layer)
    cell, gene = adata.obs_names[3], adata.var_names[5]
    with pytest.raises(ValueError, match=what) as error:
        SCVIMMD.setup_anndata(adata, batch_key="batch", layer=layer)
    assert f"({cell}, {gene})" in str(error.value)
    assert ("adata.X" if layer is None else "'counts'") in str(error.value)


def test_bad_counts_in_validation_split_cannot_train_silently(synthetic):
    # a bad cell that would land in the validation split used to train without a word
    adata = _with_bad_entry(synthetic, np.nan, sparse=True)
    with pytest.raises(ValueError, match="NaN"):
        SCVIMMD.setup_anndata(adata, batch_key="batch")


def test_missing_layer_is_a_clear_error(synthetic):
    with pytest.raises(ValueError, match="Layer 'nope'"):
        SCVIMMD.setup_anndata(synthetic, batch_key="batch", layer="nope")


@pytest.mark.parametrize("shape", ["no cells", "no genes"])
def test_empty_anndata_raises(synthetic, shape):
    adata = synthetic[:0].copy() if shape == "no cells" else synthetic[:, :0].copy()
    with pytest.raises(ValueError, match="needs at least one cell and one gene"):
        SCVIMMD.setup_anndata(adata, batch_key="batch")


def _model(adata):
    SCVIMMD.setup_anndata(adata, batch_key="batch")
    return SCVIMMD(adata, mmd_weight=1.0)


@pytest.mark.parametrize("batch_size", [1, 0, 1.5, True])
def test_batch_size_below_two_raises_before_training(synthetic, batch_size):
    model = _model(synthetic)
    with pytest.raises(ValueError, match="batch_size"):
        model.train(max_epochs=1, batch_size=batch_size, enable_progress_bar=False)
    assert not model.is_trained


def test_one_cell_last_minibatch_is_dropped_and_trains(synthetic):
    # 400 cells, train_size 0.8025 -> 321 training cells = 40 * 8 + 1: without handling, the
    # last training minibatch holds one cell and BatchNorm fails
    model = _model(synthetic)
    kwargs = {**TRAIN_KWARGS, "train_size": 0.8025}
    model.train(batch_size=8, **kwargs)
    assert model.is_trained
    assert np.isfinite(model.history["elbo_train"].to_numpy(dtype=float)).all()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_saved_model_names_the_file(synthetic, tmp_path, damage):
    model = _model(synthetic)
    model.train(**TRAIN_KWARGS)
    model.save(tmp_path / "m", overwrite=True)
    path = tmp_path / "m" / "model.pt"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="Could not read the saved model .*model.pt"):
        SCVIMMD.load(tmp_path / "m", adata=synthetic)
    with pytest.raises(ValueError, match="Could not read the saved model"):
        SCVIMMD.load_query_data(synthetic.copy(), str(tmp_path / "m"))


def test_query_with_bad_counts_raises(synthetic, tmp_path):
    model = _model(synthetic)
    model.train(**TRAIN_KWARGS)
    query = _with_bad_entry(synthetic.copy(), np.nan, sparse=False)
    with pytest.raises(ValueError, match="NaN"):
        SCVIMMD.load_query_data(query, model)
