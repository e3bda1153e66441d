"""SCVIMMD end to end on scvi-tools' synthetic data."""

import math

import numpy as np
import pytest
import torch
from conftest import TRAIN_KWARGS

from scvi_mmd import MMDVAE, SCVIMMD, MMDTrainingPlan
from scvi_mmd.mmd import median_heuristic_gamma

HISTORY_KEYS = ("mmd_loss_train", "mmd_loss_validation", "mmd_weight_train")


def make_model(adata, **kwargs):
    SCVIMMD.setup_anndata(adata, batch_key="batch")
    return SCVIMMD(adata, **kwargs)


@pytest.mark.parametrize("mode", ["normal", "unbiased", "fast"])
def test_train_logs_mmd_history(synthetic, mode):
    model = make_model(synthetic, mmd_mode=mode, mmd_weight=5.0)
    assert isinstance(model.module, MMDVAE)
    model.train(**TRAIN_KWARGS)
    for key in HISTORY_KEYS:
        values = model.history[key][key].to_numpy(dtype=float)
        assert len(values) == TRAIN_KWARGS["max_epochs"], key
        assert np.isfinite(values).all(), key
    assert (model.history["mmd_weight_train"].to_numpy(dtype=float) == 5.0).all()
    mmd = model.history["mmd_loss_train"].to_numpy(dtype=float)
    if mode == "unbiased":  # a U-statistic may be slightly negative
        assert (mmd != 0).all()
    else:
        assert mmd.max() > 0

    value = model.get_mmd_loss()
    assert math.isfinite(value)
    state = torch.get_rng_state()
    assert model.get_mmd_loss() == value  # reproducible ...
    assert torch.equal(state, torch.get_rng_state())  # ... without touching the global RNG
    assert model.get_latent_representation().shape == (synthetic.n_obs, 10)


def test_training_plan_is_mmd_plan(synthetic):
    model = make_model(synthetic)
    assert model._training_plan_cls is MMDTrainingPlan


def test_weight_zero_is_exactly_scvi(synthetic, scvi_module):
    scvi = scvi_module
    kwargs = {**TRAIN_KWARGS, "max_epochs": 3}

    scvi.settings.seed = 0
    scvi.model.SCVI.setup_anndata(synthetic, batch_key="batch")
    reference = scvi.model.SCVI(synthetic, n_latent=5)
    reference.train(**kwargs)

    scvi.settings.seed = 0
    model = make_model(synthetic.copy(), mmd_weight=0.0, n_latent=5)
    model.train(**kwargs)

    for key in ("train_loss", "elbo_train", "elbo_validation", "reconstruction_loss_train"):
        np.testing.assert_array_equal(model.history[key].to_numpy(),
                                      reference.history[key].to_numpy())
    # computed, but not applied (the default U-statistic can be negative: compare with 0)
    mmd = model.history["mmd_loss_train"].to_numpy(dtype=float)
    assert np.isfinite(mmd).all() and np.abs(mmd).max() > 0
    np.testing.assert_array_equal(
        model.get_latent_representation(), reference.get_latent_representation()
    )


def test_mmd_weight_changes_training(synthetic, scvi_module):
    losses = []
    for weight in (0.0, 50.0):
        scvi_module.settings.seed = 0
        model = make_model(synthetic.copy(), mmd_weight=weight)
        model.train(**TRAIN_KWARGS)
        losses.append(model.history["train_loss"].to_numpy(dtype=float))
    assert not np.array_equal(*losses)


def test_save_load_round_trip(synthetic, tmp_path):
    model = make_model(
        synthetic, mmd_mode="fast", mmd_weight=3.5, mmd_kernel_gamma=0.25, n_latent=4, n_hidden=32
    )
    model.train(**TRAIN_KWARGS)
    model.save(tmp_path / "model", overwrite=True)
    loaded = SCVIMMD.load(tmp_path / "model", adata=synthetic)
    assert isinstance(loaded.module, MMDVAE)
    assert loaded.module.mmd_mode == "fast"
    assert loaded.module.mmd_weight == 3.5
    assert loaded.module.mmd_kernel_gamma == 0.25
    assert loaded.module.n_latent == 4 and loaded.module.n_hidden == 32
    assert loaded.init_params_ == model.init_params_
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(), rtol=0, atol=0
    )
    assert loaded.get_mmd_loss() == pytest.approx(model.get_mmd_loss())


def test_summary_shows_mmd_settings(synthetic, capsys):
    print(make_model(synthetic, mmd_mode="fast", mmd_weight=2.0, mmd_kernel_gamma=0.5))
    text = " ".join(capsys.readouterr().out.split())
    assert "SCVIMMD model" in text
    assert "mmd_mode: fast" in text and "mmd_weight: 2.0" in text
    assert "mmd_kernel_gamma: 0.5" in text
    print(make_model(synthetic))  # the defaults as resolved, not None
    text = " ".join(capsys.readouterr().out.split())
    assert "mmd_pairs: pooled" in text and "mmd_clusters: 16" in text
    assert "mmd_guard: unshared clusters" in text


def test_mmd_warmup(synthetic):
    model = make_model(synthetic, mmd_weight=8.0)
    model.train(
        **{**TRAIN_KWARGS, "max_epochs": 3}, plan_kwargs={"n_epochs_mmd_warmup": 2}
    )
    assert model.history["mmd_weight_train"]["mmd_weight_train"].tolist() == [0.0, 4.0, 8.0]


def test_bad_warmup_raises(synthetic):
    model = make_model(synthetic)
    with pytest.raises(ValueError, match="n_epochs_mmd_warmup"):
        model.train(**TRAIN_KWARGS, plan_kwargs={"n_epochs_mmd_warmup": -1})


def test_get_mmd_loss_mixes_batches_of_sorted_data(synthetic):
    """AnnData sorted by batch: unshuffled minibatches of 50 would hold one batch each."""
    adata = synthetic[np.argsort(synthetic.obs["batch"].to_numpy(), kind="stable")].copy()
    model = make_model(adata, mmd_weight=1.0)
    assert model.get_mmd_loss(batch_size=50) != 0.0  # (the U-statistic can be negative)
    assert model.get_mmd_loss(indices=np.arange(100), batch_size=50) == 0.0  # batch 0 only
    with pytest.raises(ValueError, match="no cells"):
        model.get_mmd_loss(indices=[])


def test_scvi_methods_keep_working(synthetic):
    model = make_model(synthetic, mmd_weight=1.0)
    model.train(**{**TRAIN_KWARGS, "max_epochs": 1})
    assert np.isfinite(float(model.get_elbo()))
    assert np.isfinite(model.get_marginal_ll(n_mc_samples=4, n_mc_samples_per_pass=2))
    assert np.isfinite(float(model.get_reconstruction_error()["reconstruction_loss"]))
    expression = model.get_normalized_expression(n_samples=2, return_mean=True)
    assert expression.shape == synthetic.shape
    de = model.differential_expression(groupby="labels", group1="label_0", batch_size=100)
    assert len(de) == synthetic.n_vars


def test_sample_dimension_in_loss(synthetic):
    model = make_model(synthetic, mmd_weight=1.0)
    tensors = next(iter(model._make_data_loader(synthetic, batch_size=64)))
    inference, generative, losses = model.module(tensors, inference_kwargs={"n_samples": 3})
    assert inference["z"].shape == (3, 64, 10)
    assert losses.extra_metrics["mmd_loss"].shape == ()
    assert torch.isfinite(losses.loss)


def test_fast_mode_with_one_cell_batch_trains(scvi_module):
    scvi_module.settings.seed = 0
    adata = scvi_module.data.synthetic_iid(batch_size=100, n_genes=50, n_batches=3)
    keep = np.ones(adata.n_obs, dtype=bool)
    keep[np.flatnonzero(adata.obs["batch"].to_numpy() == "batch_2")[1:]] = False
    adata = adata[keep].copy()
    model = make_model(adata, mmd_mode="fast", mmd_weight=10.0)
    model.train(**TRAIN_KWARGS)
    assert np.isfinite(model.history["mmd_loss_train"].to_numpy(dtype=float)).all()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mmd_mode": "exact"}, "mmd_mode"),
        ({"mmd_weight": -1.0}, "mmd_weight"),
        ({"mmd_weight": float("nan")}, "mmd_weight"),
        ({"mmd_weight": float("inf")}, "mmd_weight"),
        ({"mmd_weight": "10"}, "mmd_weight"),
        ({"mmd_kernel_gamma": 0.0}, "mmd_kernel_gamma"),
        ({"mmd_kernel_gamma": -2.0}, "mmd_kernel_gamma"),
        ({"mmd_kernel_gamma": float("nan")}, "mmd_kernel_gamma"),
        ({"mmd_kernel_gamma": "mean"}, "mmd_kernel_gamma"),
        ({"mmd_kernel_scales": []}, "mmd_kernel_scales"),
        ({"mmd_kernel_scales": [1.0, -1.0]}, "mmd_kernel_scales"),
        ({"mmd_pairs": "nearest"}, "mmd_pairs"),
        ({"mmd_reference_size": -1}, "mmd_reference_size"),
        ({"mmd_reference_size": 2.5}, "mmd_reference_size"),
        ({"mmd_reference_size": True}, "mmd_reference_size"),
        ({"mmd_reference_size": float("nan")}, "mmd_reference_size"),
        ({"mmd_conditional": "yes"}, "mmd_conditional"),
        ({"mmd_clusters": -1}, "mmd_clusters"),
    ],
)
def test_bad_arguments_raise_at_construction(synthetic, kwargs, match):
    SCVIMMD.setup_anndata(synthetic, batch_key="batch")
    with pytest.raises(ValueError, match=match):
        SCVIMMD(synthetic, **kwargs)
    with pytest.raises(ValueError, match=match):
        MMDVAE(n_input=10, n_batch=2, **kwargs)


def test_one_batch_warns(synthetic):
    SCVIMMD.setup_anndata(synthetic)  # no batch key
    with pytest.warns(UserWarning, match="Only 1 batch"):
        SCVIMMD(synthetic)


def test_non_count_data_warns(synthetic):
    # negative counts are an error now: tests/test_validation.py
    synthetic.X = synthetic.X.astype(np.float32) + 0.5
    with pytest.warns(UserWarning, match="count"):
        SCVIMMD.setup_anndata(synthetic, batch_key="batch")


@pytest.mark.parametrize("mode", ["normal", "fast"])
def test_kernel_and_pairing_options_train_and_round_trip(synthetic, tmp_path, mode):
    options = {"mmd_kernel_gamma": "median", "mmd_kernel_scales": [0.5, 1.0, 2.0],
               "mmd_pairs": "all"}
    model = make_model(synthetic, mmd_mode=mode, mmd_weight=10.0, **options)
    model.train(**TRAIN_KWARGS)
    assert np.isfinite(model.history["mmd_loss_train"].to_numpy(dtype=float)).all()
    model.save(tmp_path / "m", overwrite=True)
    loaded = SCVIMMD.load(tmp_path / "m", adata=synthetic)
    for name, value in options.items():
        assert getattr(loaded.module, name) == value
    assert loaded.get_mmd_loss() == pytest.approx(model.get_mmd_loss())


# ---------------------------------------------------------------- label-aware MMD


def test_conditional_needs_labels(synthetic):
    SCVIMMD.setup_anndata(synthetic, batch_key="batch")
    with pytest.raises(ValueError, match="labels_key"):
        SCVIMMD(synthetic, mmd_conditional=True)
    with pytest.raises(ValueError, match="labels_key"):
        SCVIMMD.setup_anndata(synthetic, batch_key="batch", unlabeled_category="Unknown")


@pytest.mark.parametrize(("mode", "gamma"), [("normal", 1.0), ("unbiased", "median")])
def test_conditional_trains_with_partial_labels_and_round_trips(synthetic, tmp_path, mode,
                                                                gamma):
    labels = synthetic.obs["labels"].astype(str).to_numpy().copy()
    labels[::2] = "Unknown"
    synthetic.obs["partial"] = labels
    SCVIMMD.setup_anndata(synthetic, batch_key="batch", labels_key="partial",
                          unlabeled_category="Unknown")
    model = SCVIMMD(synthetic, mmd_conditional=True, mmd_weight=10.0, mmd_mode=mode,
                    mmd_kernel_gamma=gamma, mmd_kernel_scales=[0.5, 2.0])
    codes = list(model.adata_manager.get_state_registry("labels")["categorical_mapping"])
    unknown = codes.index("Unknown")
    assert model.module.mmd_unlabeled_code == unknown
    model.train(**TRAIN_KWARGS)
    assert np.isfinite(model.history["mmd_loss_train"].to_numpy(dtype=float)).all()
    assert np.isfinite(model.get_mmd_loss())
    if mode == "normal":
        assert model.get_mmd_loss() > 0
    else:  # the median bandwidth of the conditional MMD is taken within labels
        z = torch.randn(40, model.module.n_latent)
        codes = torch.arange(40)[:, None] % 3
        expected = median_heuristic_gamma(z, codes, ignore=unknown)[None] * torch.tensor(
            [0.5, 2.0])
        torch.testing.assert_close(model.module.mmd_gamma(z, codes), expected)
        assert not torch.allclose(model.module.mmd_gamma(z, codes), model.module.mmd_gamma(z))
    model.save(tmp_path / "m", overwrite=True)
    loaded = SCVIMMD.load(tmp_path / "m", adata=synthetic)
    assert loaded.module.mmd_conditional is True
    assert loaded.module.mmd_unlabeled_code == model.module.mmd_unlabeled_code
    assert loaded.get_mmd_loss() == pytest.approx(model.get_mmd_loss())


# ---------------------------------------------------------------- reference mapping


def test_load_query_data_keeps_mmd_settings_and_reference_sample(scvi_module, tmp_path):
    from scvi_mmd.data import simulate_batches

    scvi_module.settings.seed = 0
    adata = simulate_batches(n_cells=300, n_genes=60, n_batches=3, n_cell_types=3, seed=4)
    is_query = adata.obs["batch"].to_numpy() == "batch_2"
    reference, query = adata[~is_query].copy(), adata[is_query].copy()
    SCVIMMD.setup_anndata(reference, batch_key="batch")
    model = SCVIMMD(reference, mmd_mode="fast", mmd_weight=7.0, mmd_kernel_gamma="median",
                    mmd_reference_size=50)
    model.train(**TRAIN_KWARGS)
    with pytest.raises(ValueError, match="mmd_reference_size"):
        make_model(reference.copy()).set_reference_sample()
    assert model.module.reference_mmd(torch.zeros(4, 10), torch.zeros(4, 1)).item() == 0.0
    model.set_reference_sample()
    stored = model.module.mmd_reference_z.clone()
    assert stored.abs().sum() > 0 and int(model.module.mmd_reference_n_batch) == 2
    model.save(tmp_path / "ref", overwrite=True)

    mapped = SCVIMMD.load_query_data(query, str(tmp_path / "ref"))
    assert mapped.module.mmd_mode == "fast" and mapped.module.mmd_weight == 7.0
    assert mapped.module.mmd_kernel_gamma == "median"
    torch.testing.assert_close(mapped.module.mmd_reference_z, stored)
    z = torch.randn(8, 10)
    query_codes = torch.full((8, 1), 2)  # the new batch's code
    assert mapped.module.reference_mmd(z, query_codes).item() != 0.0
    assert mapped.module.reference_mmd(z, torch.zeros(8, 1)).item() == 0.0  # reference cells
    mapped.train(**{**TRAIN_KWARGS, "max_epochs": 2}, plan_kwargs={"weight_decay": 0.0})
    assert np.isfinite(mapped.history["mmd_loss_train"].to_numpy(dtype=float)).all()
    assert mapped.history["mmd_loss_train"].to_numpy(dtype=float).max() > 0
