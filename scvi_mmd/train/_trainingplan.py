"""Training plan that ramps and logs the MMD weight."""

from __future__ import annotations

from scvi.train import TrainingPlan
from scvi.train._trainingplans import _compute_kl_weight

MMD_WEIGHT_KEY = "mmd_weight"


class MMDTrainingPlan(TrainingPlan):
    """:class:`~scvi.train.TrainingPlan` for :class:`~scvi_mmd.module.MMDVAE`.

    The MMD term is logged by the module as the extra metric ``mmd_loss``, which the parent plan
    records per epoch as ``mmd_loss_train`` and ``mmd_loss_validation`` (means over cells). This
    plan adds an optional linear warm-up of the MMD weight, from 0 to the module's
    ``mmd_weight``, in the style of the KL warm-up, and logs the weight in effect as
    ``mmd_weight_train``.

    Parameters
    ----------
    module
        An :class:`~scvi_mmd.module.MMDVAE`.
    n_epochs_mmd_warmup
        Number of epochs over which the MMD weight grows linearly from 0 to ``mmd_weight``.
        Overrides ``n_steps_mmd_warmup`` when both are given. ``None``: no warm-up.
    n_steps_mmd_warmup
        Number of training steps (minibatches) for the same warm-up, used when
        ``n_epochs_mmd_warmup`` is ``None``. ``None``: no warm-up.
    **kwargs
        Keyword arguments for :class:`~scvi.train.TrainingPlan`.
    """

    def __init__(
        self,
        module,
        *,
        n_epochs_mmd_warmup: int | None = None,
        n_steps_mmd_warmup: int | None = None,
        **kwargs,
    ):
        for name, value in (
            ("n_epochs_mmd_warmup", n_epochs_mmd_warmup),
            ("n_steps_mmd_warmup", n_steps_mmd_warmup),
        ):
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 0):
                raise ValueError(f"`{name}` must be None or an integer >= 0, got {value!r}.")
        super().__init__(module, **kwargs)
        self.n_epochs_mmd_warmup = n_epochs_mmd_warmup
        self.n_steps_mmd_warmup = n_steps_mmd_warmup

    @property
    def mmd_weight(self) -> float:
        """MMD weight in effect at the current epoch or step."""
        scale = _compute_kl_weight(
            self.current_epoch,
            self.global_step,
            self.n_epochs_mmd_warmup,
            self.n_steps_mmd_warmup,
        )
        return float(scale) * self.module.mmd_weight

    def training_step(self, batch, batch_idx):
        """Training step with the MMD weight of the current epoch or step."""
        mmd_weight = self.mmd_weight
        self.loss_kwargs[MMD_WEIGHT_KEY] = mmd_weight
        self.log(f"{MMD_WEIGHT_KEY}_train", mmd_weight, on_step=False, on_epoch=True)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        """Validation step with the MMD weight of the current epoch or step."""
        self.loss_kwargs[MMD_WEIGHT_KEY] = self.mmd_weight
        return super().validation_step(batch, batch_idx)
