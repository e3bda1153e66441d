"""What sets the MMD weight during training: a weight rule.

The training plan calls :meth:`~WeightRule.start`, reads :attr:`~WeightRule.current_weight`
before each step and passes it to the loss, and, while :attr:`~WeightRule.listening`, gives
:meth:`~WeightRule.observe` each step's term (and its permutation null on the steps
:meth:`~WeightRule.null_due` names). Rules: :class:`FixedWeight` and
:class:`~scvi_mmd.module.StrengthController`.
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
        """One step's MMD term and null (``None``/NaN if not computed); returns ``D`` if read."""
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
    """A fixed weight or a strength (default); a :class:`ValueError` if both or out of range."""
    from scvi_mmd.module._strength import StrengthController

    if mmd_weight is not None and mmd_strength is not None:
        raise ValueError("Pass `mmd_strength` (the weight set during training) or "
                         "`mmd_weight` (a fixed weight), not both.")
    if mmd_weight is not None:
        return FixedWeight(mmd_weight)
    return StrengthController(default_strength if mmd_strength is None else mmd_strength)
