"""Beyond the happy path: property-based MMD checks and edge cases of training.

Each case is listed with its outcome in docs/robustness.md.
"""

import math

import numpy as np
import pytest
import torch
from conftest import TRAIN_KWARGS
from hypothesis import given, settings
from hypothesis import strategies as st
from test_mmd import ref_grouped

from scvi_mmd import SCVIMMD
from scvi_mmd.data import simulate_batches
from scvi_mmd.mmd import grouped_mmd, grouped_mmd_conditional

# ---------------------------------------------------------------- property-based maths


@st.composite
def layouts(draw):
    n = draw(st.integers(1, 24))
    d = draw(st.integers(1, 4))
    n_groups = draw(st.integers(1, 5))
    groups = draw(st.lists(st.integers(0, n_groups - 1), min_size=n, max_size=n))
    scale = draw(st.sampled_from([1e-30, 1e-3, 1.0, 1e3, 1e6]))
    seed = draw(st.integers(0, 2**16))
    duplicate = draw(st.booleans())
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=gen, dtype=torch.float64) * scale
    if duplicate and n > 1:
        z[n // 2 :] = z[: n - n // 2].clone()  # duplicated points
    return z, torch.tensor(groups), n_groups


def gram_tolerance(z, gamma):
    """Exact mode's Gram-form distances err by ~eps * gamma * ||z||^2 (see mmd.py)."""
    norm = (z - z.mean(0)).square().sum(-1).max().item() if z.shape[0] else 0.0
    return 1e-9 + 16 * torch.finfo(z.dtype).eps * gamma * norm


@settings(max_examples=80, deadline=None)
@given(layouts(), st.sampled_from(["normal", "fast"]), st.sampled_from([0.1, 1.0]))
def test_grouped_mmd_is_finite_and_matches_reference(layout, mode, gamma):
    z, groups, n_groups = layout
    value = grouped_mmd(z, groups, n_groups, mode=mode, gamma=gamma)
    assert torch.isfinite(value)
    expected = ref_grouped(z, groups, mode, gamma)
    tolerance = gram_tolerance(z, gamma) * 4 * n_groups if mode == "normal" else 1e-9
    assert value.item() == pytest.approx(expected, abs=tolerance, rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(layouts(), st.sampled_from(["normal", "fast"]))
def test_gradients_finite_for_any_layout(layout, mode):
    z, groups, n_groups = layout
    z = z.float().requires_grad_()
    value = grouped_mmd(z, groups, n_groups, mode=mode, gamma=[0.5, 1.0, 2.0])
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()


@settings(max_examples=40, deadline=None)
@given(layouts(), st.integers(1, 4), st.sampled_from(["normal", "fast"]))
def test_conditional_mmd_finite_for_any_layout(layout, n_labels, mode):
    z, groups, n_groups = layout
    labels = torch.arange(z.shape[0]) % n_labels
    value = grouped_mmd_conditional(z, groups, n_groups, labels, n_labels, unlabeled=0,
                                    mode=mode)
    assert torch.isfinite(value)


# ---------------------------------------------------------------- training edge cases


@pytest.fixture
def small():
    return simulate_batches(n_cells=200, n_genes=50, n_batches=3, n_cell_types=3, seed=3)


def history_is_finite(model):
    return all(np.isfinite(v.to_numpy(dtype=float)).all() for v in model.history.values())


@pytest.mark.parametrize("gamma", [1.0, "median"])
def test_huge_weight_for_100_epochs_stays_finite(small, gamma):
    SCVIMMD.setup_anndata(small, batch_key="batch")
    model = SCVIMMD(small, mmd_weight=1e4, mmd_kernel_gamma=gamma, n_hidden=32)
    model.train(**{**TRAIN_KWARGS, "max_epochs": 100, "check_val_every_n_epoch": 10})
    assert len(model.history["mmd_loss_train"]) == 100
    assert history_is_finite(model)
    assert np.isfinite(model.get_latent_representation()).all()


@pytest.mark.parametrize("precision", ["bf16-mixed", "64-true"])
def test_precision_settings(small, precision):
    SCVIMMD.setup_anndata(small, batch_key="batch")
    model = SCVIMMD(small, mmd_weight=10.0, mmd_kernel_gamma="median")
    model.train(**TRAIN_KWARGS, precision=precision)
    assert history_is_finite(model)


def test_minified_adata(small):
    SCVIMMD.setup_anndata(small, batch_key="batch")
    model = SCVIMMD(small, mmd_weight=10.0)
    model.train(**TRAIN_KWARGS)
    qzm, qzv = model.get_latent_representation(return_dist=True)
    small.obsm["X_latent_qzm"], small.obsm["X_latent_qzv"] = qzm, qzv
    model.minify_adata()
    assert model.minified_data_type is not None
    np.testing.assert_allclose(model.get_latent_representation(), qzm, rtol=1e-5, atol=1e-6)
    assert math.isfinite(model.get_mmd_loss())


def test_batch_only_in_validation(small):
    order = np.argsort(small.obs["batch"].to_numpy() == "batch_2", kind="stable")
    adata = small[order].copy()  # batch_2 last: with no shuffling it is the validation set
    SCVIMMD.setup_anndata(adata, batch_key="batch")
    model = SCVIMMD(adata, mmd_weight=10.0)
    model.train(**{**TRAIN_KWARGS, "train_size": 0.6}, shuffle_set_split=False)
    assert history_is_finite(model)


def test_rare_batch_in_few_minibatches(small):
    keep = np.ones(small.n_obs, dtype=bool)
    keep[np.flatnonzero(small.obs["batch"].to_numpy() == "batch_2")[3:]] = False
    adata = small[keep].copy()  # batch_2 has 3 cells: most minibatches lack it
    SCVIMMD.setup_anndata(adata, batch_key="batch")
    for mode in ("normal", "fast"):
        model = SCVIMMD(adata, mmd_mode=mode, mmd_weight=10.0)
        model.train(**{**TRAIN_KWARGS, "batch_size": 32})
        assert history_is_finite(model)


def test_covariates_alongside_batch(small):
    rng = np.random.default_rng(0)
    small.obs["donor"] = rng.choice(["d1", "d2", "d3"], small.n_obs)
    small.obs["percent_mito"] = rng.random(small.n_obs)
    SCVIMMD.setup_anndata(small, batch_key="batch", categorical_covariate_keys=["donor"],
                          continuous_covariate_keys=["percent_mito"])
    model = SCVIMMD(small, mmd_weight=10.0)
    model.train(**TRAIN_KWARGS)
    assert history_is_finite(model)


def test_same_seed_same_latents(small, scvi_module):
    latents = []
    for _ in range(2):
        scvi_module.settings.seed = 7
        adata = small.copy()
        SCVIMMD.setup_anndata(adata, batch_key="batch")
        model = SCVIMMD(adata, mmd_weight=10.0, mmd_pairs="random")
        model.train(**TRAIN_KWARGS)
        latents.append(model.get_latent_representation())
    np.testing.assert_array_equal(*latents)
