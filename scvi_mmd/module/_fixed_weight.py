"""The simplest weight rule: one fixed weight.

A weight rule is what :class:`~scvi_mmd.module.MMDVAE` asks for the weight of the MMD term:
any object with a ``current_weight`` (a float). Three exist: :class:`FixedWeight`,
:class:`~scvi_mmd.module.WeightConditioning` (a weight drawn in a range at each step, the
networks conditioned on it) and :class:`~scvi_mmd.module.StrengthController` (a weight set
during training from a strength). :class:`~scvi_mmd.train.MMDTrainingPlan` calls a rule's
``start(total_steps)`` when training starts and, while the rule's ``listening`` is true,
``observe(mmd, null)`` after each training step, with the permutation null the module then
computes (the strength controller does both).
"""

from __future__ import annotations


class FixedWeight:
    """The weight ``weight``, whatever the step."""

    def __init__(self, weight: float):
        self.weight = float(weight)

    @property
    def current_weight(self) -> float:
        """The weight of every step."""
        return self.weight

    def __repr__(self) -> str:
        return f"FixedWeight({self.weight:g})"
