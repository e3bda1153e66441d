"""The automatic weight: the rule on known curves, and mmd_weight='auto' end to end."""

import numpy as np
import pandas as pd
import pytest

from scvi_mmd import SCVIMMD
from scvi_mmd.model import AUTO_WEIGHT_RANGE, choose_mmd_weight


def curve(losses, weights=(1.0, 10.0, 100.0, 1000.0)):
    return pd.DataFrame({"mmd_weight": weights, "mmd_loss": losses})


def test_default_choice_is_where_l_mmd_is_lowest():
    choice = choose_mmd_weight(curve([1.0, 0.5, 0.2, 0.1]))
    assert choice.weight == 1000.0 and choice.target == pytest.approx(0.1)
    assert "lowest" in choice.rule and "lowest, 0.1, at weight 1e+03" in choice.reason


def test_choice_interpolates_where_the_fall_reaches_its_share():
    # fall 1.0 -> 0.1; 90 % of it is reached at 0.19, a tenth of the way from 100 to 1000
    choice = choose_mmd_weight(curve([1.0, 0.5, 0.2, 0.1]), share=0.9)
    assert choice.weight == pytest.approx(100.0 * 10.0 ** 0.1)
    assert choice.target == pytest.approx(0.19)
    assert "90%" in choice.rule and "0.19" in choice.reason


def test_choice_stops_where_the_knob_turns_back():
    # L_mmd rises again above weight 100: the choice stays at or below the turn
    assert choose_mmd_weight(curve([1.0, 0.2, 0.1, 0.3])).weight == 100.0
    choice = choose_mmd_weight(curve([1.0, 0.2, 0.1, 0.3]), share=0.9)
    assert choice.weight == pytest.approx(10.0 * 10.0 ** 0.1)


def test_choice_is_the_lowest_weight_when_nothing_falls():
    choice = choose_mmd_weight(curve([0.5, 0.49, 0.495, 0.49]))
    assert choice.weight == 1.0 and choice.target is None
    assert "every weight aligns the batches about as much" in choice.reason
    assert choose_mmd_weight(curve([0.5], weights=(3.0,))).weight == 3.0


def test_choice_ignores_row_order():
    shuffled = curve([0.1, 1.0, 0.2, 0.5], weights=(1000.0, 1.0, 100.0, 10.0))
    assert choose_mmd_weight(shuffled, 0.9).weight == pytest.approx(100.0 * 10.0 ** 0.1)


@pytest.mark.parametrize(
    ("table", "share", "message"),
    [(curve([1.0, 0.5, 0.2, 0.1]), 0.0, "share"),
     (curve([1.0, 0.5, 0.2, 0.1]), 1.5, "share"),
     (curve([1.0, 0.5, 0.2, 0.1]), True, "share"),
     (pd.DataFrame({"mmd_weight": [1.0]}), 0.9, "mmd_loss"),
     (curve([1.0, np.nan, 0.2, 0.1]), 0.9, "finite"),
     (curve([], weights=()), 0.9, "at least one row")],
)
def test_bad_curves_and_shares_raise(table, share, message):
    with pytest.raises(ValueError, match=message):
        choose_mmd_weight(table, share)


def test_auto_model_records_its_weight_and_keeps_it_on_save_load(synthetic, tmp_path):
    SCVIMMD.setup_anndata(synthetic, batch_key="batch")
    model = SCVIMMD(synthetic, mmd_weight="auto", mmd_kernel_gamma="median")
    assert model.is_loss_conditional and model.mmd_weight_range == AUTO_WEIGHT_RANGE
    model.train(max_epochs=2, enable_progress_bar=False)
    choice = model.mmd_weight_choice
    assert choice is not None and AUTO_WEIGHT_RANGE[0] <= choice.weight <= AUTO_WEIGHT_RANGE[1]
    assert model.mmd_weight_default == pytest.approx(choice.weight)
    assert list(model.mmd_curve_.columns)[:4] == ["mmd_weight", "batch_mixing",
                                                 "within_batch_preservation", "mmd_loss"]
    np.testing.assert_allclose(model.get_latent_representation(),
                               model.get_latent_representation(mmd_weight=choice.weight))
    model.save(tmp_path / "auto", overwrite=True)
    loaded = SCVIMMD.load(tmp_path / "auto", adata=synthetic)
    assert loaded.mmd_weight_default == pytest.approx(choice.weight)
    np.testing.assert_allclose(loaded.get_latent_representation(),
                               model.get_latent_representation(), rtol=1e-5, atol=1e-6)


def test_choosing_needs_a_conditional_model_and_a_valid_weight_string(synthetic):
    SCVIMMD.setup_anndata(synthetic, batch_key="batch")
    with pytest.raises(ValueError, match="loss-conditional"):
        SCVIMMD(synthetic, mmd_weight=10.0).choose_mmd_weight(curve([1.0, 0.5, 0.2, 0.1]))
    with pytest.raises(ValueError, match="mmd_weight"):
        SCVIMMD(synthetic, mmd_weight="automatic")


def test_setting_a_chosen_weight_on_a_range_model(synthetic):
    SCVIMMD.setup_anndata(synthetic, batch_key="batch")
    model = SCVIMMD(synthetic, mmd_weight=(1.0, 1000.0))
    choice = model.choose_mmd_weight(curve([1.0, 0.5, 0.2, 0.1]))
    assert model.mmd_weight_default == pytest.approx(choice.weight)
    with pytest.raises(ValueError, match="outside the range"):
        model.module.weight_conditioning.set_default_weight(5000.0)
