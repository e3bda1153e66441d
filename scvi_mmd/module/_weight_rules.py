"""What sets the weight of the MMD term during training: a weight rule.

:class:`~scvi_mmd.train.MMDTrainingPlan` calls the rule's :meth:`~WeightRule.start` when training
starts, asks :attr:`~WeightRule.current_weight` before every step and passes it to the loss, and,
while :attr:`~WeightRule.listening`, gives :meth:`~WeightRule.observe` each step's MMD term and, on
the steps :meth:`~WeightRule.null_due` asks for, its permutation null. Two rules exist:
:class:`FixedWeight` and :class:`~scvi_mmd.module.StrengthController`; :func:`make_weight_rule`
picks one from the user's ``mmd_weight`` / ``mmd_strength``.
"""

from __future__ import annotations

import math

from torch import nn


class WeightRule(nn.Module):
    """Base of the weight rules (a module, so that a rule's state is saved with the model)."""

    #: Whether :meth:`observe` uses what it is given.
    listening: bool = False

    @property
    def current_weight(self) -> float:
        """The weight of the next training step."""
        raise NotImplementedError

    def start(self, total_steps: int | float) -> None:
        """Called when a training of ``total_steps`` steps starts."""

    def null_due(self, step: int) -> bool:
        """Whether training step ``step`` computes the permutation null for :meth:`observe`."""
        return False

    def observe(self, mmd: float, null: float | None = None) -> float | None:
        """One training step's MMD term and its permutation null (``None`` or NaN where not
        computed), while :attr:`listening`; returns the discrepancy read, if any.
        """
        return None


def validate_weight(value) -> float:
    """Return ``value`` as a float if it is a finite number ``>= 0``; else :class:`ValueError`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < 0:
        raise ValueError(f"`mmd_weight` must be a finite number >= 0, got {value!r}.")
    return float(value)


class FixedWeight(WeightRule):
    """The weight ``weight`` at every step (``0``: scVI exactly)."""

    def __init__(self, weight: float):
        super().__init__()
        self.weight = validate_weight(weight)

    @property
    def current_weight(self) -> float:
        return self.weight

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}"


def make_weight_rule(mmd_weight: float | None, mmd_strength: float | None,
                     default_strength: float) -> WeightRule:
    """The rule for the user's settings: a fixed weight, or a strength (the default).

    Raises
    ------
    ValueError
        If both are given, or either is out of range.
    """
    from scvi_mmd.module._strength import StrengthController

    if mmd_weight is not None and mmd_strength is not None:
        raise ValueError("Pass `mmd_strength` (the weight set during training) or "
                         "`mmd_weight` (a fixed weight), not both.")
    if mmd_weight is not None:
        return FixedWeight(mmd_weight)
    return StrengthController(default_strength if mmd_strength is None else mmd_strength)
