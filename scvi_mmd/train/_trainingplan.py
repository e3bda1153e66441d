"""Training plan that owns the MMD weight (asks the weight rule each step) and logs the MMD
term per epoch.
"""

from __future__ import annotations

import math
import warnings

import torch
from scvi import settings
from scvi.train import TrainingPlan

from scvi_mmd.module._mmdvae import MMD_LOSS_KEY, MMD_NULL_KEY

MMD_WEIGHT_KEY = "mmd_weight"


class MMDTrainingPlan(TrainingPlan):
    """:class:`~scvi.train.TrainingPlan` for :class:`~scvi_mmd.module.MMDVAE`.

    The module returns the MMD term in ``LossOutput.extra_metrics["mmd_loss"]``. This plan records
    it in :attr:`~scvi.model.base.BaseModelClass.history` as ``mmd_loss_train`` and
    ``mmd_loss_validation``: per epoch, the mean over cells (each minibatch weighted by its number
    of cells, as scvi-tools does for its extra metrics; at weight 0 with no rule listening, over
    the steps that computed it: one in :attr:`record_every` and the epoch's first). The sums are
    kept on the device and logged once per epoch, so the MMD adds no per-step logging cost.

    The plan owns the weight: before each training step it asks the module's weight rule
    (:class:`~scvi_mmd.module.FixedWeight` or :class:`~scvi_mmd.module.StrengthController`) for
    :attr:`mmd_weight` and passes it to the loss; it starts the rule when training starts and,
    while the rule listens, gives it each training step's MMD term and, on the steps the rule asks
    for, the permutation null (averaged over processes under DDP). The weight in effect is logged
    as ``mmd_weight_train`` (mean over the epoch's steps) and the controller's discrepancy
    ``mmd_loss - mmd_null`` as ``mmd_discrepancy_train``. An optional linear ramp of a fixed weight
    (``n_epochs_mmd_warmup``) scales the weight from 0, in the style of the KL warm-up.

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
        self._pending: list[torch.Tensor] = []  # (mmd, null) of steps not yet read to the host
        self._reset_mmd_sums()

    def _reset_mmd_sums(self, mode: str | None = None) -> None:
        """Zero the epoch sums of ``mode`` ("train" or "validation"), or of both."""
        if mode is None:
            self._mmd_sums = {}
        for m in ("train", "validation") if mode is None else (mode,):
            self._mmd_sums[m] = [None, 0]  # sum of mmd * n_cells (a device tensor), n_cells
        if mode != "validation":
            self._weight_sum, self._weight_steps = 0.0, 0
            self._discrepancy_sum, self._discrepancy_steps = 0.0, 0

    @property
    def mmd_warmup_scale(self) -> float:
        """Factor in ``[0, 1]`` of the linear MMD ramp at the current epoch or step."""
        if self.n_epochs_mmd_warmup:
            return min(1.0, self.current_epoch / self.n_epochs_mmd_warmup)
        if self.n_steps_mmd_warmup:
            return min(1.0, self.global_step / self.n_steps_mmd_warmup)
        return 1.0

    @property
    def mmd_weight(self) -> float:
        """MMD weight in effect at the current epoch or step: the weight rule's, ramped."""
        return self.mmd_warmup_scale * self.module.weight_rule.current_weight

    def on_train_start(self):
        """Start the strength controller (if any) for this training's number of steps."""
        super().on_train_start()
        rule = self.module.weight_rule
        rule.start(self.trainer.estimated_stepping_batches)
        clusters = self.module.penalty.clusters
        if clusters is not None:  # decide on the clusters before the controller measures
            clusters.start(max(getattr(rule, "warmup_steps", 100) // 2, 1))

    #: At weight 0 with no rule listening (a fixed weight 0, nothing to correct) the term is
    #: computed, for the record (``mmd_loss_train``), on one training step in this many.
    record_every = 4

    #: Training steps whose MMD terms are read to the host at once (one synchronisation of a
    #: GPU per this many steps, not one per step); the weight follows with that delay.
    observe_every = 8

    def _observe_discrepancy(self, mmd: torch.Tensor, null: torch.Tensor | None) -> None:
        """Queue this step's MMD term and null (NaN where not computed) for the weight rule."""
        mmd = mmd.detach().float()
        # (a NaN made on the device: no host-to-device copy per step)
        values = torch.stack([mmd, torch.full_like(mmd, math.nan) if null is None
                              else null.detach().float()])
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(values)
            values = values / dist.get_world_size()
        self._pending.append(values)
        if len(self._pending) >= self.observe_every:
            self._flush_observations()

    def _flush_observations(self) -> None:
        """Give the queued steps to the weight rule, in order (one host synchronisation)."""
        if not self._pending:
            return
        rows, self._pending = torch.stack(self._pending).tolist(), []
        for mmd_value, null_value in rows:
            discrepancy = self.module.weight_rule.observe(mmd_value, null_value)
            if discrepancy is not None and math.isfinite(discrepancy):
                self._discrepancy_sum += discrepancy
                self._discrepancy_steps += 1

    def training_step(self, batch, batch_idx):
        """Training step with the weight rule's weight (ramped, if a ramp is set); the
        permutation null is computed on the steps the rule asks for.
        """
        weight = self.mmd_weight
        self.loss_kwargs["compute_null"] = self.module.weight_rule.null_due(self.global_step)
        # at weight 0, with no rule listening, the term is only a record: computed on one step
        # in record_every, and on the epoch's first step (so that every epoch has one)
        first = self._mmd_sums["train"][1] == 0
        self.loss_kwargs["compute_term"] = (
            weight != 0 or self.module.weight_rule.listening or first
            or self.global_step % self.record_every == 0)
        self.loss_kwargs[MMD_WEIGHT_KEY] = weight
        self._weight_sum += weight
        self._weight_steps += 1
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        """Validation step with the weight of the current step."""
        self.loss_kwargs["compute_null"] = False
        self.loss_kwargs["compute_term"] = True
        self.loss_kwargs[MMD_WEIGHT_KEY] = self.mmd_weight
        return super().validation_step(batch, batch_idx)

    def on_train_end(self):
        """Warn when a strength controller never left its warm-up."""
        self._flush_observations()
        super().on_train_end()
        strength = self.module.strength
        if strength is not None and strength.phase_name == "warmup":
            warnings.warn(
                f"The training was too short for `mmd_strength`: {strength.step} steps, and its "
                f"warm-up alone takes {strength.warmup_steps}. The model trained at weight 0, "
                "as scVI; train for more epochs or pass `mmd_weight`.",
                UserWarning,
                stacklevel=settings.warnings_stacklevel,
            )

    @torch.inference_mode()
    def compute_and_log_metrics(self, loss_output, metrics, mode):
        """Accumulate the MMD term on the device; log the other metrics as scvi-tools does."""
        extra = dict(loss_output.extra_metrics)
        mmd = extra.pop(MMD_LOSS_KEY, None)
        null = extra.pop(MMD_NULL_KEY, None)
        if mode == "train" and mmd is not None and self.module.weight_rule.listening:
            self._observe_discrepancy(mmd, null)
        if mmd is not None:
            n_obs = loss_output.n_obs_minibatch
            sums = self._mmd_sums[mode]
            term = mmd.detach() * n_obs
            sums[0] = term if sums[0] is None else sums[0] + term
            sums[1] += n_obs
            loss_output.extra_metrics = extra
        super().compute_and_log_metrics(loss_output, metrics, mode)

    def _log_mmd(self, mode: str) -> None:
        total, n_obs = self._mmd_sums[mode]
        if n_obs > 0:
            self.log(
                f"{MMD_LOSS_KEY}_{mode}",
                total / n_obs,
                on_step=False,
                on_epoch=True,
                sync_dist=self.use_sync_dist,
            )
        if mode == "train" and self._weight_steps > 0:
            self.log(
                f"{MMD_WEIGHT_KEY}_train",
                self._weight_sum / self._weight_steps,
                on_step=False,
                on_epoch=True,
                sync_dist=self.use_sync_dist,
            )
        if mode == "train" and self._discrepancy_steps > 0:
            self.log(
                "mmd_discrepancy_train",
                self._discrepancy_sum / self._discrepancy_steps,
                on_step=False,
                on_epoch=True,
                sync_dist=self.use_sync_dist,
            )
        self._reset_mmd_sums(mode)

    def on_train_epoch_end(self):
        """Log ``mmd_loss_train`` and ``mmd_weight_train`` for the epoch."""
        self._flush_observations()
        super().on_train_epoch_end()
        self._log_mmd("train")

    def on_validation_epoch_end(self):
        """Log ``mmd_loss_validation`` for the epoch."""
        super().on_validation_epoch_end()
        self._log_mmd("validation")
