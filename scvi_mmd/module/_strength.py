"""A correction strength with a unit: the MMD weight set during training by a controller.

``mmd_strength = s`` in ``[0, 1]`` places the batches' latent discrepancy at the end of training
between two levels measured on the data: ``D0``, the discrepancy of scVI's own latent space
(``s = 0``), and ``nu``, the noise of the controller's measurement when the batches do not
differ (``s = 1``), on a log scale (the discrepancy spans decades between the two):
``target = nu * (D0 / nu) ** (1 - s)``.

1. **Warm-up.** The first steps train at weight 0 (scVI). Each step measures the discrepancy
   ``D = L_mmd - L_null`` of the minibatch: the MMD term as trained, minus the same statistic
   with the batch labels permuted within the minibatch (the permutation null, whose
   expectation is that of ``L_mmd`` when the batches do not differ, for every estimator, kernel
   and cell selector). Over the second half of the warm-up, ``D0`` is the mean of ``D`` and
   ``nu`` the standard deviation of ``L_null`` across minibatches times
   ``sqrt(ema / (2 - ema))``: the noise of the moving average of ``D`` that the controller
   reads when the batches do not differ.
2. **Nothing to correct.** If ``D0`` is within ``null_z`` standard errors of 0, or below
   ``nu``, the batches are indistinguishable by the minibatch statistic already: the weight
   stays 0 and the model trains as scVI to the end. When the measurement cannot yet tell
   (``D0`` not significant, but ``D0 + null_z`` standard errors above ``nu``: with many batches
   a minibatch holds few cells of each and ``D`` is noisy), the warm-up goes on, doubling,
   up to ``max_warmup_share`` of the training, and decides then.
3. **Control.** Otherwise the weight follows dual ascent on the constraint
   ``E[D] <= target`` in log space (as GECO, Rezende & Viola 2018):
   ``log w += rate * clip(log(D_ema / target), -1, 1)``, with ``D_ema`` an exponential moving
   average of ``D`` (floored at ``nu / 10``); no update while ``|D_ema - target|`` is within the
   moving average's own noise (``band_z`` standard deviations). The weight starts at 0,
   becomes ``min_weight`` on the first push, is capped at ``max_weight``, and returns to 0 if
   it falls back to ``min_weight``. ``rate`` lets the weight cross
   ``[min_weight, max_weight]`` in ``ramp_share`` of the training steps after the warm-up.
   Here the null is known: it is computed on one step in ``null_every`` only, and ``D`` is
   ``L_mmd`` minus a moving average of the null (same smoothing, started at the warm-up's
   mean), so the control costs about one evaluation of the term per step.

Once the batches are aligned, nothing in the ELBO pulls them apart again (scVI's decoder gets
the batch), so the weight mostly falls back once the target is reached.
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

    The state that describes the result (baseline, target, phase, weight) is kept in buffers,
    so it is saved and loaded with the model.

    Parameters
    ----------
    strength
        Share ``s`` in ``[0, 1]`` of the warm-up discrepancy that training removes.
    warmup_share
        Share of the training steps trained at weight 0 to measure the baseline.
    max_warmup_share
        Longest warm-up, as a share of the training steps, while the baseline is undecided.
    min_warmup_steps
        Fewest warm-up steps (a shorter training stays at weight 0).
    ramp_share
        Share of the steps after the warm-up in which the weight can cross its range: the
        whole training by default, slow enough for the latent space to follow the weight (in
        a quarter of it, the weight overshot to 3,000 and merged a batch-exclusive type).
    min_weight, max_weight
        The weight's range once it is on (it is 0 until the first push); ``max_weight`` is the
        top of the range the fixed weight was documented for.
    ema
        Smoothing factor of the moving average of ``D``.
    null_z
        Standard errors of ``D0`` above 0 needed to correct at all.
    band_z
        Dead band around the target, in standard deviations of the moving average.
    null_every
        After the warm-up, the permutation null is computed on one step in this many.
    """

    def __init__(
        self,
        strength: float,
        warmup_share: float = 0.1,
        max_warmup_share: float = 0.3,
        min_warmup_steps: int = 20,
        ramp_share: float = 1.0,
        min_weight: float = 0.1,
        max_weight: float = 1e3,
        ema: float = 0.05,
        null_z: float = 3.0,
        band_z: float = 1.0,
        null_every: int = 4,
    ):
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

    # -- training -------------------------------------------------------------------------
    def start(self, total_steps: int | float) -> None:
        """Reset for a training of ``total_steps`` steps (the warm-up starts again)."""
        total = int(total_steps) if math.isfinite(total_steps) else 0
        self.warmup_steps = max(self.min_warmup_steps, math.ceil(self.warmup_share * total))
        self.max_warmup_steps = max(self.warmup_steps, math.ceil(self.max_warmup_share * total))
        self._decide_at = self.warmup_steps
        self.total_steps = total
        self._set_rate()
        self.step, self._warm = 0, []
        self._mean = self._var = self._null_mean = 0.0
        self._log_weight = None  # None: weight 0
        self._set(weight=0.0, baseline=0.0, baseline_se=0.0, null_noise=0.0, target=0.0, phase=0)

    @property
    def current_weight(self) -> float:
        """The weight to train the next step with."""
        return 0.0 if self._log_weight is None else math.exp(self._log_weight)

    @property
    def phase_name(self) -> str:
        """``"warmup"``, ``"control"`` or ``"nothing_to_correct"`` (from the host copy: the
        plan asks every step, and reading the buffer would synchronise a GPU).
        """
        return PHASES[self._phase]

    @property
    def listening(self) -> bool:
        """Whether :meth:`observe` still uses what it is given (not once there is nothing to
        correct).
        """
        return self.phase_name != "nothing_to_correct"

    def null_due(self, step: int) -> bool:
        """Whether training step ``step`` computes the permutation null: every step of the
        warm-up, one in :attr:`null_every` in the control, none when nothing is corrected.
        """
        phase = self.phase_name
        return phase == "warmup" or (phase == "control" and step % self.null_every == 0)

    def observe(self, mmd: float, null: float | None = None) -> float | None:
        """Take one training step's MMD term and its permutation null (``None`` or NaN on a
        step without one, in the control); update the weight. Returns the discrepancy read.
        """
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
        return discrepancy

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
        self._log_weight = min(high, self._log_weight + self.rate * push)
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
