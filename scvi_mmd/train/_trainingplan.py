"""The training plan: owns the MMD weight (asks the weight rule each step), logs the term."""

from __future__ import annotations

import math
import warnings
from copy import deepcopy

import torch
from lightning.pytorch.callbacks import EarlyStopping
from scvi import settings
from scvi.train import TrainingPlan

from scvi_mmd.module._mmdvae import MMD_LOSS_KEY, MMD_NULL_KEY
from scvi_mmd.module._penalty import _world_size

MMD_WEIGHT_KEY = "mmd_weight"


class MMDTrainingPlan(TrainingPlan):
    """:class:`~scvi.train.TrainingPlan` for :class:`~scvi_mmd.module.MMDVAE`.

    The plan owns the weight: it starts the module's weight rule when training starts, asks
    it for :attr:`mmd_weight` before each step and passes it to the loss, and, while the rule
    listens, gives it each step's MMD term and, on the steps it asks for, the permutation null
    (averaged over processes under DDP). :attr:`~scvi.model.base.BaseModelClass.history` gets
    per epoch ``mmd_loss_train`` / ``mmd_loss_validation`` (mean over cells; summed on the
    device, logged once per epoch), ``mmd_weight_train`` and ``mmd_discrepancy_train``.
    If the controller's warm-up ends with clusters that split the batches, the plan trains
    again from the initial parameters (:meth:`_restart_if_split`).

    Parameters
    ----------
    module
        An :class:`~scvi_mmd.module.MMDVAE`.
    n_epochs_mmd_warmup, n_steps_mmd_warmup
        Epochs (or, if ``None``, steps) of a linear ramp of the weight from 0, in the style
        of the KL warm-up; ``None``: none.
    **kwargs
        Keyword arguments for :class:`~scvi.train.TrainingPlan`.
    """

    def __init__(self, module, *, n_epochs_mmd_warmup: int | None = None,
                 n_steps_mmd_warmup: int | None = None, **kwargs):
        for name, value in (("n_epochs_mmd_warmup", n_epochs_mmd_warmup),
                            ("n_steps_mmd_warmup", n_steps_mmd_warmup)):
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 0):
                raise ValueError(f"`{name}` must be None or an integer >= 0, got {value!r}.")
        super().__init__(module, **kwargs)
        self.n_epochs_mmd_warmup = n_epochs_mmd_warmup
        self.n_steps_mmd_warmup = n_steps_mmd_warmup
        self._pending: list[torch.Tensor] = []  # (mmd, null) of steps not yet read to the host
        self._initial_state = None  # what a training the warm-up split restarts from
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
        """Start the weight rule and the clusters; keep what a restart would load."""
        super().on_train_start()
        rule = self.module.weight_rule
        rule.start(self.trainer.estimated_stepping_batches)
        clusters = self.module.penalty.clusters
        if clusters is not None:  # decide on the clusters before the controller measures
            clusters.start(max(getattr(rule, "warmup_steps", 100) // 2, 1))
        # what a restart loads: the parameters (not the rule's or the penalty's state: what it
        # measured is kept), and the optimisers, lr schedulers and early stopping as they start
        trainer, restartable = self.trainer, clusters is not None and rule is self.module.strength
        self._initial_state = ({
            name: value.detach().clone() for name, value in self.module.state_dict().items()
            if not name.startswith(("weight_rule.", "penalty.", "mmd_reference"))
        }, [(x, deepcopy(x.state_dict())) for x in [
            *trainer.optimizers, *(c.scheduler for c in trainer.lr_scheduler_configs),
            *(c for c in trainer.callbacks if isinstance(c, EarlyStopping))]]
        ) if restartable else None

    def _restart_if_split(self) -> None:
        """After a warm-up whose clusters split the batches (a split of scVI's is not undone
        later: docs/atlas.md), train again from the initial parameters, optimisers, lr
        schedulers and early stopping (their own ``load_state_dict``) at
        :meth:`~scvi_mmd.module.StrengthController.restart`'s weight.
        """
        if self._initial_state is None or self.module.weight_rule.phase_name == "warmup":
            return  # (every step after the one decision: one attribute read)
        rule = self.module.weight_rule
        initial, self._initial_state = self._initial_state, None  # (decided once)
        split = rule.phase_name == "control" and not self.module.penalty.clusters.is_shared
        if _world_size() > 1:  # every process restarts, or none
            flag = torch.tensor(float(split), device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            split = bool(flag)
        if split:  # (early stopping's and the lr plateau's best so far were the split scVI's)
            self.module.load_state_dict(initial[0], strict=False)  # the parameters, then the
            for other, state in initial[1]:  # optimisers, lr schedulers and early stopping
                other.load_state_dict(state)
            rule.restart()
            share, weight = float(self.module.penalty.clusters.pure_share), rule.current_weight
            warnings.warn(f"scVI's latent space put the batches apart (`pure_share` {share:.2f}): "
                          f"training restarts at MMD weight {weight:.3g}, without clusters; where "
                          "mixes differ, check types' purity; lower `mmd_strength` if one falls "
                          "(docs: atlas).", UserWarning, stacklevel=settings.warnings_stacklevel)

    #: At weight 0 with no rule listening, the term is recorded on one step in this many.
    record_every = 4
    #: Steps whose terms are read to the host at once (one GPU synchronisation each).
    observe_every = 8

    def _observe_discrepancy(self, mmd: torch.Tensor, null: torch.Tensor | None) -> None:
        """Queue this step's MMD term and null (NaN where not computed) for the weight rule."""
        mmd = mmd.detach().float()
        # (a NaN made on the device: no host-to-device copy per step)
        values = torch.stack([mmd, torch.full_like(mmd, math.nan) if null is None
                              else null.detach().float()])
        if _world_size() > 1:
            torch.distributed.all_reduce(values)
            values = values / torch.distributed.get_world_size()
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
        """Training step with the rule's weight (ramped), the null on the steps it asks for."""
        self._restart_if_split()
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
        """Warn when a strength controller never left its warm-up, or wound up."""
        self._flush_observations()
        super().on_train_end()
        strength = self.module.strength
        if strength is not None and strength.phase_name == "warmup":
            warnings.warn(f"The training was too short for `mmd_strength`: {strength.step} steps, "
                          f"and its warm-up alone takes {strength.warmup_steps}. The model "
                          "trained at weight 0, as scVI; train for more epochs or pass "
                          "`mmd_weight`.", UserWarning, stacklevel=settings.warnings_stacklevel)
        elif strength is not None and (strength.late_rise() >= math.e or strength.reached_cap):
            cap = f", its cap {strength.max_weight:g} reached" if strength.reached_cap else ""
            warnings.warn(f"The MMD weight wound up (x{strength.late_rise():.3g} over the last "
                          f"quarter of the steps{cap}; now {strength.current_weight:.3g}): the "
                          "discrepancy stayed above its target. Where cell-type mixes differ "
                          "between batches, it may be composition only merging types removes: "
                          "check each type's purity; lower `mmd_strength` if one falls (docs: "
                          "atlas).", UserWarning, stacklevel=settings.warnings_stacklevel)

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
        sums = {f"{MMD_LOSS_KEY}_{mode}": self._mmd_sums[mode]}
        if mode == "train":
            sums[f"{MMD_WEIGHT_KEY}_train"] = (self._weight_sum, self._weight_steps)
            sums["mmd_discrepancy_train"] = (self._discrepancy_sum, self._discrepancy_steps)
        for name, (total, count) in sums.items():
            if count > 0:
                self.log(name, total / count, on_step=False, on_epoch=True,
                         sync_dist=self.use_sync_dist)
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
