"""The correction strength: the controller's rule, its validation and its behaviour end to end."""

import math
import warnings

import numpy as np
import pytest

from scvi_mmd import DEFAULT_STRENGTH, ORIGINAL_DESIGN, SCVIMMD
from scvi_mmd.data import simulate_batches
from scvi_mmd.metrics import batch_mixing
from scvi_mmd.module import StrengthController
from scvi_mmd.train import MMDTrainingPlan


def run(controller, values, nulls=None):
    nulls = [0.0] * len(values) if nulls is None else nulls
    weights = []
    for value, null in zip(values, nulls, strict=True):
        controller.observe(value + null, null)
        weights.append(controller.current_weight)
    return weights


def test_baseline_target_and_a_weight_that_rises_then_falls():
    rng = np.random.default_rng(0)
    controller = StrengthController(0.5, min_warmup_steps=20)
    controller.start(200)  # warm-up: 20 steps
    assert controller.warmup_steps == 20
    nulls = rng.normal(0.0, 0.01, 200)
    warm = run(controller, 0.4 + rng.normal(0, 0.01, 20), nulls[:20])
    assert warm == [0.0] * 20 and controller.phase_name == "control"
    d0, nu = float(controller.baseline), float(controller.null_noise)
    # nu: the null noise of the controller's moving average (ema 0.05)
    assert d0 == pytest.approx(0.4, abs=0.02)
    assert nu == pytest.approx(np.std(nulls[10:20], ddof=1) * math.sqrt(0.05 / 1.95))
    # log-scale interpolation between the baseline (s = 0) and the null noise (s = 1)
    assert float(controller.target) == pytest.approx(nu * (d0 / nu) ** 0.5)
    above = run(controller, [0.4] * 60)  # the discrepancy stays above target: the weight rises
    assert above[0] == pytest.approx(controller.min_weight * math.exp(controller.rate))
    assert all(b >= a for a, b in zip(above, above[1:])) and above[-1] > above[0]
    below = run(controller, [0.0] * 400)  # below target: it falls back to 0
    assert below[-1] == 0.0 and float(controller.weight) == 0.0


def test_late_rise_tells_a_weight_still_rising_at_the_end():
    def controller_after(values, **settings):
        controller = StrengthController(0.5, min_warmup_steps=20, **settings)
        controller.start(200)
        run(controller, [0.4] * 20, [0.01, -0.01] * 10)  # D0 0.4, nu > 0: control
        run(controller, values)
        return controller

    assert math.isnan(StrengthController(0.5).late_rise())  # no control step seen
    rising = controller_after([0.4] * 180)  # above target to the end: one push up per step
    quarter = math.ceil(0.25 * 200)  # the weight `quarter` steps before the end, then the end
    assert rising.late_rise() == pytest.approx(math.exp(rising.rate * quarter))
    assert rising.late_rise() >= math.e
    settled = controller_after([0.4] * 80 + [0.0] * 100)  # the target reached: it falls
    assert settled.late_rise() < 1.0
    late = controller_after([0.0] * 140 + [0.4] * 40)  # pushed up from 0 in the last quarter
    assert late.late_rise() == pytest.approx(late.current_weight / late.min_weight)  # (floor)
    # at its cap of 1.0 halfway (it crosses its range in half the steps) and still pushing:
    # the raises the cap held back count
    capped = controller_after([0.4] * 180, max_weight=1.0, ramp_share=0.5)
    assert capped.current_weight == pytest.approx(1.0)
    assert capped.late_rise() == pytest.approx(math.exp(capped.rate * quarter))
    assert capped.reached_cap and not settled.reached_cap  # (the other warning's reading)


def test_weight_is_capped():
    controller = StrengthController(1.0, max_weight=50.0)
    controller.start(1000)
    run(controller, [1.0] * controller.warmup_steps,
        [0.05, -0.05] * (controller.warmup_steps // 2))
    assert max(run(controller, [1.0] * 900)) == pytest.approx(50.0)


def test_nothing_to_correct_keeps_weight_zero():
    rng = np.random.default_rng(1)
    controller = StrengthController(1.0)
    controller.start(500)
    weights = run(controller, rng.normal(0.0, 0.01, 500), rng.normal(0.0, 0.01, 500))
    assert controller.phase_name == "nothing_to_correct" and max(weights) == 0.0


def test_non_finite_steps_are_ignored():
    controller = StrengthController(1.0)
    controller.start(100)
    controller.observe(float("nan"), 0.0)
    assert controller.step == 0


def test_the_control_reads_the_null_on_one_step_in_null_every():
    rng = np.random.default_rng(2)
    controller = StrengthController(0.5, min_warmup_steps=20)
    controller.start(200)
    assert all(controller.null_due(step) for step in range(5))  # warm-up: every step
    nulls = rng.normal(0.01, 0.01, 20)
    run(controller, list(0.4 + rng.normal(0, 0.01, 20)), list(nulls))
    assert controller.phase_name == "control"
    due = [controller.null_due(step) for step in range(8)]
    assert due == [step % controller.null_every == 0 for step in range(8)] and sum(due) == 2
    # without a null, the discrepancy is the term minus the moving average of the nulls,
    # started at the mean of the warm-up's second half
    null_mean = float(np.mean(nulls[10:]))
    assert controller.observe(0.3) == pytest.approx(0.3 - null_mean)
    assert controller.observe(0.3, math.nan) == pytest.approx(0.3 - null_mean)
    moved = null_mean + controller.ema * (0.5 - null_mean)
    assert controller.observe(0.3, 0.5) == pytest.approx(0.3 - moved)
    assert controller.observe(0.3) == pytest.approx(0.3 - moved)
    assert controller.step == 24


def train_recording(adata, record, epochs, **kwargs):
    """A trained ``SCVIMMD(adata, **kwargs)`` and ``record(model, loss_kwargs, output)`` of
    each training step's loss.
    """
    import scvi

    scvi.settings.seed = 0
    adata = adata.copy()
    SCVIMMD.setup_anndata(adata, batch_key="batch")
    model = SCVIMMD(adata, n_hidden=64, **kwargs)
    seen, loss = [], model.module.loss

    def recording_loss(*args, **loss_kwargs):
        output = loss(*args, **loss_kwargs)
        if model.module.training:
            seen.append(record(model, loss_kwargs, output))
        return output

    model.module.loss = recording_loss
    model.train(max_epochs=epochs, batch_size=128, enable_progress_bar=False, train_size=1.0)
    return model, seen


def test_training_computes_the_null_on_the_steps_the_controller_asks(shifted):
    model, seen = train_recording(
        shifted, lambda m, kw, _: (m.module.strength.phase_name, kw["compute_null"]), 40,
        mmd_strength=1.0)
    assert model.mmd_strength_state["phase"] == "control"
    warm = [null for phase, null in seen if phase == "warmup"]
    control = [null for phase, null in seen if phase == "control"]
    assert warm and all(warm)
    assert len(control) > 40 and sum(control) == pytest.approx(len(control) / 4, abs=2)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True, "0.5"])
def test_bad_strength_is_a_value_error(synthetic, bad):
    SCVIMMD.setup_anndata(synthetic, batch_key="batch")
    with pytest.raises(ValueError, match="mmd_strength"):
        SCVIMMD(synthetic, mmd_strength=bad)


def test_strength_excludes_a_weight(synthetic):
    SCVIMMD.setup_anndata(synthetic, batch_key="batch")
    with pytest.raises(ValueError, match="not both"):
        SCVIMMD(synthetic, mmd_strength=0.5, mmd_weight=10.0)
    # the retired ways to set the weight (a range, "auto") are plain errors now
    for retired in ((1.0, 10.0), "auto"):
        with pytest.raises(ValueError, match="finite number >= 0"):
            SCVIMMD(synthetic, mmd_weight=retired)


def test_default_is_the_strength_with_the_recommended_kernel(synthetic):
    SCVIMMD.setup_anndata(synthetic, batch_key="batch")
    module = SCVIMMD(synthetic).module
    assert module.strength is not None and module.strength.strength == DEFAULT_STRENGTH
    assert module.mmd_mode == "unbiased" and module.mmd_kernel_gamma == "median"
    assert module.mmd_kernel_scales == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert module.mmd_pairs == "pooled" and module.penalty.clusters.n_clusters == 16
    assert module.mmd_guard_scope == "unshared clusters"  # where types some batches lack go
    assert SCVIMMD(synthetic, mmd_clusters=0).module.mmd_guard is not None
    original = SCVIMMD(synthetic, mmd_weight=10.0, **ORIGINAL_DESIGN).module
    assert original.strength is None and original.mmd_weight == 10.0
    assert (original.mmd_mode, original.mmd_kernel_gamma, original.mmd_kernel_scales,
            original.mmd_pair_reduction, original.mmd_latent, original.mmd_guard) == (
        "normal", 1.0, None, "sum", "sample", None)
    assert original.penalty.clusters is None


def test_too_short_a_training_warns(synthetic):
    SCVIMMD.setup_anndata(synthetic, batch_key="batch")
    model = SCVIMMD(synthetic, mmd_strength=0.5)
    with pytest.warns(UserWarning, match="too short for `mmd_strength`"):
        model.train(max_epochs=1, enable_progress_bar=False)
    assert model.mmd_strength_state["phase"] == "warmup" and model.mmd_weight == 0.0


def fit(adata, seed=0, epochs=40, **kwargs):
    import scvi

    scvi.settings.seed = seed
    adata = adata.copy()
    SCVIMMD.setup_anndata(adata, batch_key="batch")
    model = SCVIMMD(adata, n_hidden=64, **kwargs)
    model.train(max_epochs=epochs, batch_size=128, enable_progress_bar=False,
                check_val_every_n_epoch=epochs)
    return model


@pytest.fixture(scope="module")
def shifted():
    return simulate_batches(n_cells=768, n_genes=200, n_batches=2, n_cell_types=3,
                            batch_effect=0.6, type_effect=1.5, seed=3)


def test_higher_strength_mixes_more(shifted, tmp_path):
    mixing, weights = {}, {}
    for s in (0.25, 1.0):
        model = fit(shifted, mmd_strength=s)
        state = model.mmd_strength_state
        assert state["phase"] == "control" and state["baseline"] > state["null_noise"] > 0
        mixing[s] = batch_mixing(model.get_latent_representation(), shifted.obs["batch"])
        weights[s] = np.asarray(model.history["mmd_weight_train"], float).max()
    assert weights[1.0] > weights[0.25]
    assert mixing[1.0] > mixing[0.25] + 0.1, mixing
    # save / load keeps the strength and what its controller measured
    model.save(str(tmp_path / "m"), overwrite=True)
    loaded = SCVIMMD.load(str(tmp_path / "m"), adata=model.adata)
    assert loaded.mmd_strength_state == model.mmd_strength_state
    assert loaded.mmd_weight == pytest.approx(model.mmd_weight, rel=1e-6) and model.mmd_weight > 0
    np.testing.assert_allclose(loaded.get_latent_representation(),
                               model.get_latent_representation(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_effect, splits", [(1.5, True), (0.2, False)])
def test_a_warmup_that_splits_the_batches_restarts_from_the_initial_parameters(
        monkeypatch, batch_effect, splits):
    # scVI's latent space puts strongly different batches apart at weight 0, and a split is
    # not undone later: the training starts again from its first parameters (never otherwise)
    import scvi
    import torch
    from lightning.pytorch.callbacks import EarlyStopping

    scvi.settings.seed = 0
    adata = simulate_batches(n_cells=600, n_genes=200, n_batches=2, n_cell_types=3,
                             batch_effect=batch_effect, type_effect=1.5, seed=0)
    SCVIMMD.setup_anndata(adata, batch_key="batch")
    model = SCVIMMD(adata, n_hidden=64, mmd_strength=0.9)
    initial = {k: v.clone() for k, v in model.module.state_dict().items()
               if not k.startswith(("weight_rule.", "penalty."))}
    restarts, original = [], StrengthController.restart

    def restart(self):
        state = model.module.state_dict()
        restarts.append((self.step, all(torch.equal(state[k], v) for k, v in initial.items())))
        # early stopping starts again too: the warm-up's best validation loss was scVI's
        stops = [c for c in plans[0].trainer.callbacks if isinstance(c, EarlyStopping)]
        assert [(float(c.best_score), c.wait_count) for c in stops] == [(math.inf, 0)]
        plateau = plans[0].trainer.lr_scheduler_configs[0].scheduler  # and the lr plateau,
        assert (plateau.best, plateau.num_bad_epochs, plateau.cooldown_counter) == (math.inf, 0, 0)
        lrs = [g["lr"] for g in plans[0].trainer.optimizers[0].param_groups]  # with the first lr
        assert lrs == [1e-3] * len(lrs), lrs
        original(self)
        assert self.current_weight == pytest.approx(math.sqrt(self.min_weight * self.max_weight))

    monkeypatch.setattr(StrengthController, "restart", restart)
    plans, on_train_start = [], MMDTrainingPlan.on_train_start
    monkeypatch.setattr(MMDTrainingPlan, "on_train_start",
                        lambda self: (plans.append(self), on_train_start(self))[-1])
    training_step = MMDTrainingPlan.training_step

    def step(self, batch, batch_idx):  # the lr lowered late in the warm-up, as a plateau would
        if self.global_step == self.module.strength.warmup_steps // 2 + 1:
            for group in self.trainer.optimizers[0].param_groups:
                group["lr"] = 1e-4
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(MMDTrainingPlan, "training_step", step)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=40, batch_size=128, enable_progress_bar=False, early_stopping=True,
                    early_stopping_patience=100, check_val_every_n_epoch=1,
                    plan_kwargs={"reduce_lr_on_plateau": True, "lr_patience": 100})
    # the user is told, once, and pointed at the regime's known limit
    told = [w for w in caught if "put the batches apart" in str(w.message)]
    assert len(told) == int(splits), [str(w.message) for w in caught]
    assert all("restarts at MMD weight 10" in str(w.message) for w in told)
    clusters, strength = model.module.penalty.clusters, model.module.strength
    assert strength.phase_name == "control"
    assert (float(clusters.pure_share) >= 0.5) is splits and clusters.is_shared is not splits
    assert model.module.mmd_guard_scope == ("all" if splits else "unshared clusters")
    assert len(restarts) == int(splits) and all(from_initial for _, from_initial in restarts)
    # once, on the first step after the warm-up ends (its steps are read 8 at a time)
    assert all(0 <= step - strength.warmup_steps < MMDTrainingPlan.observe_every
               for step, _ in restarts)
    if splits:  # corrected from the first parameters on: the batches mix
        assert batch_mixing(model.get_latent_representation(), adata.obs["batch"]) > 0.5


def test_null_batches_train_as_scvi(shifted):
    # one batch split at random: nothing to correct, so the model is scVI's, bit for bit
    one = shifted[shifted.obs["batch"] == shifted.obs["batch"].cat.categories[0]].copy()
    one.obs["batch"] = np.random.default_rng(0).integers(0, 3, one.n_obs).astype(str)
    strength = fit(one, mmd_strength=1.0)
    assert strength.mmd_strength_state["phase"] == "nothing_to_correct"
    assert strength.mmd_weight == 0.0
    assert not strength.module.strength.listening  # the null is no longer computed
    scvi_fit = fit(one, mmd_weight=0.0)
    np.testing.assert_array_equal(strength.get_latent_representation(),
                                  scvi_fit.get_latent_representation())


def test_an_undecided_warmup_goes_on_and_then_corrects():
    # a small discrepancy in noisy steps (many batches): not significant after 10 % of the
    # training, significant with more steps; the warm-up doubles until it can tell
    rng = np.random.default_rng(0)
    controller = StrengthController(0.9)
    controller.start(2000)  # warm-up 200 steps, at most 600
    d = 0.04 + rng.normal(0, 0.2, 2000)
    nulls = rng.normal(0, 0.1, 2000)
    weights = run(controller, list(d[:200]), list(nulls[:200]))
    assert controller.phase_name == "warmup" and max(weights) == 0.0
    run(controller, list(d[200:600]), list(nulls[200:600]))
    assert controller.phase_name == "control"
    assert 200 < controller.warmup_steps <= 600
    assert float(controller.baseline) == pytest.approx(0.04, abs=0.02)


def test_an_undecided_warmup_ends_by_its_longest_share():
    rng = np.random.default_rng(4)
    controller = StrengthController(0.9)
    controller.start(2000)
    run(controller, list(rng.normal(0, 0.1, 600)), list(rng.normal(0, 0.1, 600)))
    assert controller.phase_name == "nothing_to_correct" and controller.warmup_steps <= 600


def test_at_weight_zero_the_term_is_computed_on_some_steps_only(shifted):
    model, computed = train_recording(
        shifted, lambda m, kw, output: "mmd_loss" in output.extra_metrics, 10, mmd_weight=0.0)
    # one step in four and each epoch's first: a record, not a cost on every step
    assert 10 <= sum(computed) < len(computed) / 2
    history = np.asarray(model.history["mmd_loss_train"], float).ravel()
    assert len(history) == 10 and np.isfinite(history).all()
