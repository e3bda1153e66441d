"""A correction strength with a unit: the MMD weight set during training by a controller.

``s`` in ``[0, 1]`` places the batches' latent discrepancy at the end of training between
``D0``, scVI's own (``s = 0``), and ``nu``, the noise of the measurement when batches do not
differ (``s = 1``), on a log scale: ``target = nu * (D0 / nu) ** (1 - s)``.

1. **Warm-up** at weight 0: each step reads ``D = L_mmd - L_null``, ``L_null`` the term with
   the batch labels permuted (its expectation is ``L_mmd``'s when batches do not differ, for
   any estimator, kernel or cell selector). Over the warm-up's second half, ``D0`` is the
   mean of ``D`` and ``nu`` the standard deviation of ``L_null`` times ``sqrt(ema / (2 -
   ema))``, the noise of the moving average the controller reads.
2. **Nothing to correct** if ``D0`` is within ``null_z`` standard errors of 0 or below ``nu``:
   the weight stays 0 (scVI). If undecided (``D0 + null_z`` s.e. above ``nu``: few cells per
   batch), the warm-up doubles, up to ``max_warmup_share`` of the training.
3. **Control**: dual ascent on ``E[D] <= target`` in log space (as GECO, Rezende & Viola
   2018), ``log w += rate * clip(log(D_ema / target), -1, 1)``, idle within ``band_z``
   standard deviations of the moving average; the weight starts at ``min_weight`` on the
   first push, is capped at ``max_weight``, returns to 0 below ``min_weight``. The null is
   then read on one step in ``null_every``, ``D`` using its moving average; after the
   training plan's restart (the warm-up split the batches), at :meth:`restart`'s weight.
4. **Wound up** (:meth:`late_rise` >= e, or ``reached_cap``: at ``max_weight`` once): ``D``
   stayed above target, as where only merging cell types removes it; the plan warns.
"""

from __future__ import annotations

import math

import torch

from scvi_mmd.module._weight_rules import WeightRule

PHASES = ("warmup", "control", "nothing_to_correct")


def validate_strength(value) -> float:
    """Return ``value`` as a float in ``[0, 1]``, or raise a :class:`ValueError`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 <= value <= 1:
        raise ValueError(f"`mmd_strength` must be a number in [0, 1], got {value!r}.")
    return float(value)


class StrengthController(WeightRule):
    """Sets the MMD weight during training so that a share ``strength`` of the discrepancy goes.

    The result (baseline, target, phase, weight) lives in buffers, saved with the model. The
    warm-up takes ``warmup_share`` of the steps (at least ``min_warmup_steps``, at most
    ``max_warmup_share`` while undecided); the weight can cross ``[min_weight, max_weight]``
    in ``ramp_share`` of the steps after it (in a quarter, it overshot to 3,000 and merged a
    batch-exclusive type). ``ema``, ``null_z``, ``band_z`` and ``null_every`` are as in the
    module docstring.
    """

    def __init__(self, strength: float, warmup_share: float = 0.1, max_warmup_share: float = 0.3,
                 min_warmup_steps: int = 20, ramp_share: float = 1.0, min_weight: float = 0.1,
                 max_weight: float = 1e3, ema: float = 0.05, null_z: float = 3.0,
                 band_z: float = 1.0, null_every: int = 4):
        super().__init__()
        self.strength = validate_strength(strength)
        self.warmup_share, self.max_warmup_share = warmup_share, max_warmup_share
        self.min_warmup_steps = min_warmup_steps
        self.ramp_share = ramp_share
        self.min_weight, self.max_weight = min_weight, max_weight
        self.ema = ema
        self.null_z, self.band_z = null_z, band_z
        self.null_every = null_every
        for name in ("weight", "baseline", "baseline_se", "null_noise", "target", "phase"):
            self.register_buffer(name, torch.zeros(()))
        self.start(0)

    def start(self, total_steps: int | float) -> None:
        """Reset for a training of ``total_steps`` steps (the warm-up starts again)."""
        total = int(total_steps) if math.isfinite(total_steps) else 0
        self.warmup_steps = max(self.min_warmup_steps, math.ceil(self.warmup_share * total))
        self.max_warmup_steps = max(self.warmup_steps, math.ceil(self.max_warmup_share * total))
        self._decide_at = self.warmup_steps
        self.total_steps = total
        self._set_rate()
        self.step, self._warm = 0, []
        self._log_raise, self._log_raises, self.reached_cap = 0.0, [], False  # (late_rise)
        self._mean = self._var = self._null_mean = 0.0
        self._log_weight = None  # None: weight 0
        self._set(weight=0.0, baseline=0.0, baseline_se=0.0, null_noise=0.0, target=0.0, phase=0)

    @property
    def current_weight(self) -> float:
        """The weight to train the next step with."""
        return 0.0 if self._log_weight is None else math.exp(self._log_weight)

    @property
    def phase_name(self) -> str:
        """``"warmup"``, ``"control"`` or ``"nothing_to_correct"`` (a host copy: no GPU sync)."""
        return PHASES[self._phase]

    @property
    def listening(self) -> bool:
        """Whether :meth:`observe` uses what it is given (not once nothing is to correct)."""
        return self.phase_name != "nothing_to_correct"

    def null_due(self, step: int) -> bool:
        """Every warm-up step, one in :attr:`null_every` in the control, else never."""
        phase = self.phase_name
        return phase == "warmup" or (phase == "control" and step % self.null_every == 0)

    def observe(self, mmd: float, null: float | None = None) -> float | None:
        """Take one step's term and null (``None``/NaN if none); returns the ``D`` read."""
        phase = self.phase_name
        has_null = null is not None and math.isfinite(null)
        if (phase == "warmup" and not has_null) or not math.isfinite(mmd):
            return None  # a non-finite step is not evidence; the loss itself reports it
        self.step += 1
        if phase == "warmup":
            discrepancy = mmd - null
            if self.step > self.warmup_steps // 2:
                self._warm.append((discrepancy, null))
            if self.step >= self._decide_at:
                self._end_warmup(final=self.step >= self.max_warmup_steps)
            return discrepancy
        if phase == "nothing_to_correct":
            return None
        if has_null:
            self._null_mean += self.ema * (null - self._null_mean)
        discrepancy = mmd - self._null_mean
        self._update_weight(discrepancy)
        self._log_raises.append(self._log_raise)  # (so far, after each control step)
        return discrepancy

    def late_rise(self, share: float = 0.25) -> float:
        """The factor the controller raised the weight by over the last ``share`` of the steps,
        raises its cap held back included; NaN without a control step in this process.
        """
        if not self._log_raises:
            return math.nan
        back = math.ceil(share * self.step)  # (the control's first step starts from 0)
        then = self._log_raises[-back - 1] if back < len(self._log_raises) else 0.0
        return math.exp(self._log_raises[-1] - then)

    def restart(self) -> None:
        """The weight ``sqrt(min_weight * max_weight)`` (baseline, target kept) for a training
        that starts again from its initial parameters: from ``min_weight`` it grows too slowly
        to stop scVI's split of the batches forming again (docs/atlas.md).
        """
        self._log_weight = (math.log(self.min_weight) + math.log(self.max_weight)) / 2
        self._set(weight=self.current_weight)

    def _update_weight(self, discrepancy: float) -> None:
        """One step of the dual ascent on ``E[D] <= target``."""
        delta = discrepancy - self._mean
        self._mean += self.ema * delta
        self._var = (1 - self.ema) * (self._var + self.ema * delta * delta)
        error = self._mean - float(self.target)
        band = self.band_z * math.sqrt(self._var * self.ema / (2 - self.ema))
        if abs(error) <= band:
            return
        floor = float(self.null_noise) / 10
        push = max(-1.0, min(1.0, math.log(max(self._mean, floor) / float(self.target))))
        low, high = math.log(self.min_weight), math.log(self.max_weight)
        if self._log_weight is None:
            if push <= 0:
                return
            self._log_weight = low
        self._log_raise += self.rate * push  # (also what the cap holds back: see late_rise)
        self._log_weight = min(high, self._log_weight + self.rate * push)
        self.reached_cap |= self._log_weight >= high
        if self._log_weight <= low and push < 0:
            self._log_weight = None
        self._set(weight=self.current_weight)

    def _end_warmup(self, final: bool = True) -> None:
        values = torch.tensor(self._warm or [(0.0, 0.0)], dtype=torch.float64)
        d, null = values[:, 0], values[:, 1]
        d0 = float(d.mean())
        enough = len(values) > 1
        se = float(d.std()) / math.sqrt(len(values)) if enough else math.inf
        # the null noise of the moving average the controller reads (not of one minibatch)
        nu = float(null.std()) * math.sqrt(self.ema / (2 - self.ema)) if enough else 0.0
        corrects = d0 > self.null_z * se and d0 > nu > 0
        if not corrects and not final and d0 + self.null_z * se > nu:
            # undecided: a longer warm-up (few looks: the next at twice the steps)
            self._decide_at = min(2 * self._decide_at, self.max_warmup_steps)
            return
        self.warmup_steps = self.step  # the warm-up it took
        self._set_rate()
        self._mean, self._null_mean = d0, float(null.mean())
        self._var = float(d.var()) if enough else 0.0
        target = nu * (d0 / nu) ** (1 - self.strength) if corrects else d0
        self._set(baseline=d0, baseline_se=se, null_noise=nu, target=target,
                  phase=PHASES.index("control" if corrects else "nothing_to_correct"))

    def _set_rate(self) -> None:
        """The rate that lets the weight cross its range in ``ramp_share`` of the steps left."""
        after = max(self.total_steps - self.warmup_steps, 1)
        self.rate = math.log(self.max_weight / self.min_weight) / max(self.ramp_share * after, 1)

    def _set(self, **values: float) -> None:
        for name, value in values.items():
            getattr(self, name).fill_(value)
        if "phase" in values:
            self._phase = int(values["phase"])

    def _load_from_state_dict(self, *args, **kwargs):
        """Load the buffers, then the host copies of the phase and the weight (once)."""
        super()._load_from_state_dict(*args, **kwargs)
        self._phase = int(self.phase)
        weight = float(self.weight)
        self._log_weight = math.log(weight) if weight > 0 else None

    def extra_repr(self) -> str:
        return f"strength={self.strength:g}"
