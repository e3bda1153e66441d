"""The knob: pair-mean normalisation, MMD on means, and the loss-conditional model."""

import numpy as np
import pytest
import torch

from scvi_mmd import ORIGINAL_DESIGN, SCVIMMD, MMDVAE
from scvi_mmd.data import simulate_batches
from scvi_mmd.metrics import batch_mixing
from scvi_mmd.mmd import all_pairs, group_counts, grouped_mmd

from conftest import TRAIN_KWARGS

KERNEL = {"mmd_kernel_gamma": "median", "mmd_kernel_scales": [0.25, 0.5, 1.0, 2.0, 4.0]}


# ---------------------------------------------------------------- a weight with one meaning


@pytest.mark.parametrize("pairing", ["sequential", "all"])
def test_mean_reduction_is_sum_over_number_of_pairs(pairing):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(60, 3, generator=gen)
    groups = torch.arange(60) % 5
    total = grouped_mmd(z, groups, 5, partners=pairing, reduction="sum")
    mean = grouped_mmd(z, groups, 5, partners=pairing, reduction="mean")
    n_pairs = 4 if pairing == "sequential" else 10
    torch.testing.assert_close(mean, total / n_pairs)


def test_mean_reduction_does_not_grow_with_the_number_of_batches():
    """Many batches of identically distributed cells: the sum grows with the pairs, the mean
    stays the size of one pair (the 200-batch blow-up of the original sum)."""
    gen = torch.Generator().manual_seed(1)
    sizes = {}
    for n_groups in (2, 50):
        z = torch.randn(n_groups * 6, 4, generator=gen)
        groups = torch.arange(n_groups * 6) % n_groups
        for reduction in ("sum", "mean"):
            sizes[n_groups, reduction] = float(
                grouped_mmd(z, groups, n_groups, partners="all", reduction=reduction))
    assert sizes[50, "sum"] > 100 * sizes[2, "sum"]
    assert 0.5 < sizes[50, "mean"] / sizes[2, "mean"] < 2.0


def test_module_sum_reduction_keeps_the_original_term():
    z = torch.randn(40, 10)
    batch = (torch.arange(40) % 4)[:, None]
    # the original design: the sum over pairs of the plain MMD (no guard)
    original = MMDVAE(n_input=5, n_batch=4, **ORIGINAL_DESIGN).mmd_loss(z, batch)
    mean = MMDVAE(n_input=5, n_batch=4, **{**ORIGINAL_DESIGN, "mmd_pair_reduction": "mean"}
                  ).mmd_loss(z, batch)
    reference = grouped_mmd(z, batch, 4, gamma=1.0)  # the sum over sequential pairs
    torch.testing.assert_close(original, reference)
    torch.testing.assert_close(mean, reference / 3)
    assert int((all_pairs(group_counts(batch.reshape(-1), 4, torch.long)) >= 0).sum()) == 6


def test_mmd_on_means_is_the_default_and_samples_remain_reachable(synthetic):
    SCVIMMD.setup_anndata(synthetic, batch_key="batch")
    model = SCVIMMD(synthetic)
    assert model.module.mmd_latent == "mean"
    outputs = {"qz": torch.distributions.Normal(torch.zeros(3, 2), torch.ones(3, 2)),
               "z": torch.ones(3, 2)}
    assert torch.equal(model.module.mmd_codes(outputs), torch.zeros(3, 2))
    sampled = SCVIMMD(synthetic, mmd_latent="sample")
    assert torch.equal(sampled.module.mmd_codes(outputs), torch.ones(3, 2))


# ---------------------------------------------------------------- loss-conditional model


@pytest.mark.parametrize(
    "bad", [(10.0, 1.0), (1.0, 1.0), (0.0, 1.0), (-1.0, 1.0), (1.0, float("nan")),
            (1.0, float("inf")), ("1", 10.0), (1.0,), (1.0, 2.0, 3.0), "1:10", (True, 2.0)],
)
def test_bad_weight_ranges_raise(synthetic, bad):
    SCVIMMD.setup_anndata(synthetic, batch_key="batch")
    with pytest.raises(ValueError, match="mmd_weight|range"):
        SCVIMMD(synthetic, mmd_weight=bad)


@pytest.fixture(scope="module")
def strong_batches():
    """3 batches far apart (SCVI does not mix them) and 4 well-separated cell types."""
    return simulate_batches(n_cells=900, n_genes=150, n_batches=3, n_cell_types=4,
                            batch_effect=3.0, seed=0)


@pytest.fixture(scope="module")
def conditional(strong_batches, scvi_module):
    scvi_module.settings.seed = 0
    adata = strong_batches.copy()
    SCVIMMD.setup_anndata(adata, batch_key="batch")
    model = SCVIMMD(adata, mmd_weight=(0.1, 1000.0), **KERNEL)
    model.train(max_epochs=60, enable_progress_bar=False)
    return model


def test_conditional_model_higher_weight_mixes_more(conditional, strong_batches):
    batches = strong_batches.obs["batch"].to_numpy()
    low = conditional.get_latent_representation(mmd_weight=0.1)
    high = conditional.get_latent_representation(mmd_weight=1000.0)
    assert not np.allclose(low, high)
    mixing_low, mixing_high = batch_mixing(low, batches), batch_mixing(high, batches)
    assert mixing_high > mixing_low + 0.15, (mixing_low, mixing_high)
    assert conditional.get_mmd_loss(mmd_weight=1000.0) < conditional.get_mmd_loss(mmd_weight=0.1)


def test_curve_from_one_model(conditional):
    curve = conditional.get_mmd_curve(n_weights=4, labels_key="cell_type")
    assert list(curve.columns) == ["mmd_weight", "batch_mixing", "within_batch_preservation",
                                   "mmd_loss", "label_purity"]
    np.testing.assert_allclose(curve["mmd_weight"], np.geomspace(0.1, 1000.0, 4))
    assert curve["within_batch_preservation"].iloc[0] == 1.0
    assert curve["batch_mixing"].iloc[-1] > curve["batch_mixing"].iloc[0]
    assert np.isfinite(curve.to_numpy()).all()


def test_weight_outside_the_trained_range_raises(conditional):
    for weight in (0.01, 2000.0, float("nan"), "10"):
        with pytest.raises(ValueError, match="outside the range|finite number"):
            conditional.get_latent_representation(mmd_weight=weight)
    # the model is left at its default weight after an error
    assert conditional.module.weight_conditioning.current_weight == pytest.approx(10.0)


def test_conditional_save_load_reproduces_every_weight(conditional, tmp_path):
    conditional.save(tmp_path / "m", overwrite=True)
    loaded = SCVIMMD.load(tmp_path / "m", adata=conditional.adata)
    for weight in (0.1, 3.0, 1000.0):
        np.testing.assert_allclose(loaded.get_latent_representation(mmd_weight=weight),
                                   conditional.get_latent_representation(mmd_weight=weight),
                                   rtol=1e-5, atol=1e-6)
    assert loaded.mmd_weight_range == (0.1, 1000.0)


def test_conditional_normalized_expression_depends_on_weight(conditional):
    low = conditional.get_normalized_expression(mmd_weight=0.1, n_samples=1)
    high = conditional.get_normalized_expression(mmd_weight=1000.0, n_samples=1)
    assert low.shape == high.shape and not np.allclose(low.to_numpy(), high.to_numpy())


def test_conditional_reference_mapping(conditional, strong_batches):
    query = strong_batches[:90].copy()
    query.obs["batch"] = "query"
    model = SCVIMMD.load_query_data(query, conditional)
    assert model.mmd_weight_range == (0.1, 1000.0)
    model.train(max_epochs=1, enable_progress_bar=False)
    latent = model.get_latent_representation(mmd_weight=100.0)
    assert latent.shape == (90, 10) and np.isfinite(latent).all()


def test_fixed_weight_model_only_gives_its_own_weight(synthetic):
    SCVIMMD.setup_anndata(synthetic, batch_key="batch")
    model = SCVIMMD(synthetic, mmd_weight=5.0)
    model.train(**TRAIN_KWARGS)
    np.testing.assert_array_equal(model.get_latent_representation(mmd_weight=5.0),
                                  model.get_latent_representation())
    with pytest.raises(ValueError, match="fixed weight 5"):
        model.get_latent_representation(mmd_weight=10.0)
    assert model.mmd_weight_range == (5.0, 5.0) and not model.is_loss_conditional
    assert len(model.get_mmd_curve()) == 1


def test_conditional_training_draws_weights_in_range(synthetic):
    SCVIMMD.setup_anndata(synthetic, batch_key="batch")
    model = SCVIMMD(synthetic, mmd_weight=(1.0, 100.0))
    model.train(**TRAIN_KWARGS)
    drawn = model.history["mmd_weight_train"].to_numpy(dtype=float)
    assert ((drawn > 1.0) & (drawn < 100.0)).all()
