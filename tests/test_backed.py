"""Training from data on disk (a backed AnnData), read in chunks of rows.

A backed AnnData trains from :class:`~scvi_mmd.data.ChunkedDataModule`: each epoch must visit
every training cell once, with the values in the file, in an order that mixes the file (a
file sorted by batch still gives minibatches of many batches); the same datamodule must give
the same training from disk and from memory, weight 0 must be SCVI's training on the same
minibatches, and a trained model reads the same latent from disk and from memory (any
``indices``, any order), and after save / load.
"""

import anndata
import numpy as np
import pytest
import scvi

from scvi_mmd import SCVIMMD
from scvi_mmd.data import ChunkedDataModule, simulate_batches


def _fit(cls, adata, datamodule=None, **kwargs):
    scvi.settings.seed = 0
    cls.setup_anndata(adata, batch_key="batch")
    model = cls(adata, n_hidden=32, **kwargs)
    if datamodule is not None:
        datamodule = ChunkedDataModule(model.adata_manager, batch_size=64, chunk_size=8,
                                       chunks_per_buffer=4)
    model.train(max_epochs=8, batch_size=64, enable_progress_bar=False, datamodule=datamodule)
    return model


@pytest.fixture
def sorted_file(tmp_path):
    """Counts of 12 batches, written sorted by batch (as files concatenated per sample are)."""
    adata = simulate_batches(n_cells=480, n_genes=40, n_batches=12, seed=4)
    adata = adata[np.argsort(adata.obs["batch"].cat.codes.to_numpy(), kind="stable")].copy()
    path = tmp_path / "sorted.h5ad"
    adata.write_h5ad(path)
    return path


def _registered(path, backed):
    adata = anndata.read_h5ad(path, backed="r" if backed else None)
    SCVIMMD.setup_anndata(adata, batch_key="batch")
    return SCVIMMD(adata, n_hidden=16)


def test_an_epoch_visits_every_training_cell_once_with_its_values(sorted_file):
    model = _registered(sorted_file, backed=True)
    dense = anndata.read_h5ad(sorted_file).X.toarray()
    module = ChunkedDataModule(model.adata_manager, batch_size=32, train_size=0.8,
                               chunk_size=8, chunks_per_buffer=6, seed=1)
    assert (module.n_train, module.n_val) == (384, 96)
    assert not set(module.train_idx) & set(module.val_idx)
    orders = []
    for _ in range(2):
        loader = module.train_dataloader()
        batches = list(loader)
        assert len(batches) == len(loader) == 12
        x = np.concatenate([b["X"].numpy() for b in batches])
        codes = np.concatenate([b["batch"].numpy() for b in batches]).ravel()
        rows = np.array([np.flatnonzero((dense == r).all(1))[0] for r in x])
        np.testing.assert_array_equal(np.sort(rows), module.train_idx)  # each once
        np.testing.assert_array_equal(codes, model.adata_manager.get_from_registry(
            "batch").ravel()[rows])  # the batch travels with its cell
        orders.append(rows)
    assert not np.array_equal(*orders)  # a new order each epoch
    # a file sorted by batch still mixes: 32 contiguous rows hold 1-2 of its 12 batches (40
    # cells each), a minibatch drawn from 6 random chunks of 8 holds about 5
    mixed = [len(np.unique(b["batch"].numpy())) for b in module.train_dataloader()]
    assert np.mean(mixed) >= 4


def test_ordered_reading_keeps_the_order_asked_for(sorted_file):
    model = _registered(sorted_file, backed=True)
    dense = anndata.read_h5ad(sorted_file).X.toarray()
    asked = np.array([479, 3, 3, 250, 0, 251])
    loader = model._make_data_loader(model.adata, indices=asked, batch_size=4)
    x = np.concatenate([b["X"].numpy() for b in loader])
    np.testing.assert_array_equal(x, dense[asked])


def test_the_same_minibatches_train_the_same_from_disk_and_from_memory(tmp_path):
    path = tmp_path / "counts.h5ad"
    simulate_batches(n_cells=320, n_genes=60, n_batches=4, seed=2).write_h5ad(path)
    on_disk = _fit(SCVIMMD, anndata.read_h5ad(path, backed="r"), datamodule=True)
    in_memory = _fit(SCVIMMD, anndata.read_h5ad(path), datamodule=True)
    np.testing.assert_allclose(on_disk.get_latent_representation(),
                               in_memory.get_latent_representation(), rtol=1e-5, atol=1e-6)
    assert on_disk.mmd_strength_state == in_memory.mmd_strength_state


def test_backed_anndata_trains(tmp_path):
    path = tmp_path / "counts.h5ad"
    simulate_batches(n_cells=320, n_genes=60, n_batches=4, seed=2).write_h5ad(path)
    backed = anndata.read_h5ad(path, backed="r")
    on_disk = _fit(SCVIMMD, backed)  # the chunked datamodule is the default for backed data
    assert on_disk.mmd_strength_state["phase"] != "warmup"  # the controller ran
    assert len(on_disk.train_indices) == 288  # scvi-tools' default split: 0.9 trains
    latent = on_disk.get_latent_representation()
    assert np.isfinite(latent).all()
    in_memory = anndata.read_h5ad(path)
    np.testing.assert_allclose(on_disk.get_latent_representation(in_memory), latent,
                               rtol=1e-5, atol=1e-6)
    some = [300, 2, 17]
    np.testing.assert_allclose(on_disk.get_latent_representation(indices=some), latent[some],
                               rtol=1e-5, atol=1e-6)
    on_disk.save(str(tmp_path / "model"))
    loaded = SCVIMMD.load(str(tmp_path / "model"), adata=backed)
    np.testing.assert_array_equal(loaded.get_latent_representation(), latent)
    assert loaded.mmd_strength_state == on_disk.mmd_strength_state


def test_weight_zero_on_disk_is_scvi_on_the_same_minibatches(tmp_path):
    path = tmp_path / "counts.h5ad"
    simulate_batches(n_cells=256, n_genes=50, n_batches=3, seed=3).write_h5ad(path)
    mmd = _fit(SCVIMMD, anndata.read_h5ad(path, backed="r"), datamodule=True, mmd_weight=0.0)
    plain = _fit(scvi.model.SCVI, anndata.read_h5ad(path, backed="r"), datamodule=True)
    np.testing.assert_allclose(mmd.get_latent_representation(),
                               plain.get_latent_representation(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"chunk_size": 1.5},
                                    {"chunks_per_buffer": True}, {"train_size": 0},
                                    {"train_size": 1.2}])
def test_bad_chunking_is_a_value_error(sorted_file, kwargs):
    model = _registered(sorted_file, backed=True)
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ChunkedDataModule(model.adata_manager, **kwargs)


def test_a_backed_anndata_rejects_loader_settings_it_cannot_use(tmp_path):
    path = tmp_path / "counts.h5ad"
    simulate_batches(n_cells=100, n_genes=20, n_batches=2, seed=5).write_h5ad(path)
    backed = anndata.read_h5ad(path, backed="r")
    SCVIMMD.setup_anndata(backed, batch_key="batch")
    model = SCVIMMD(backed, n_hidden=8)
    with pytest.raises(ValueError, match="num_workers"):
        model.train(max_epochs=1, datasplitter_kwargs={"num_workers": 2})
