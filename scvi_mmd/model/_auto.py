"""Choosing the weight of the knob without labels, from the one-training curve.

A loss-conditional model (``mmd_weight=(low, high)``) gives the latent space at every weight of
its range, and :func:`~scvi_mmd.model.mmd_curve` measures, at each weight, ``L_mmd``: the
discrepancy between the batches' latent codes that the MMD term penalises (with the guard, only
between cells that have a counterpart in the other batch). Raising the weight lowers it until
the networks cannot align the batches further; past that point more weight no longer aligns,
and what it still changes is the rest of the latent space (on the simulations of
``benchmarks/guard.py`` ``L_mmd`` turned back up there while kNN batch mixing stopped rising and
within-batch structure kept falling). The automatic weight is that point: by default the
weight at which ``L_mmd`` is lowest (``share=1``); a smaller ``share`` takes the smallest weight
at which ``L_mmd`` has made that share of its largest fall, interpolated in log weight between
the points of the curve (a more conservative choice). Types that only some batches have are
the guard's job (:class:`~scvi_mmd.module.MutualNeighbourGuard`), not the weight's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

AUTO_WEIGHT_RANGE = (0.1, 1000.0)
"""The range ``mmd_weight="auto"`` trains over (the documented range of the knob)."""
AUTO_CURVE_POINTS = 9
"""Points of the curve ``mmd_weight="auto"`` evaluates (two per decade of the range)."""


@dataclass(frozen=True)
class WeightChoice:
    """An automatically chosen weight and why.

    Attributes
    ----------
    weight
        The chosen ``mmd_weight``.
    rule
        The rule's name and setting.
    reason
        One sentence with the numbers behind the choice.
    target
        The ``L_mmd`` level the chosen weight reaches (``None`` if the lowest weight was
        chosen because ``L_mmd`` does not fall).
    """

    weight: float
    rule: str
    reason: str
    target: float | None = None

    def as_dict(self) -> dict:
        """``{"weight", "rule", "reason"[, "target"]}`` (for ``AnnData.uns``)."""
        result = {"weight": self.weight, "rule": self.rule, "reason": self.reason}
        if self.target is not None:
            result["target_mmd_loss"] = self.target
        return result


def choose_mmd_weight(
    curve: pd.DataFrame, share: float = 1.0, min_fall: float = 0.05
) -> WeightChoice:
    """The smallest weight of a curve at which ``L_mmd`` has made ``share`` of its largest fall
    (by default: where ``L_mmd`` is lowest).

    Parameters
    ----------
    curve
        A table with columns ``mmd_weight`` and ``mmd_loss`` (as from
        :meth:`~scvi_mmd.SCVIMMD.get_mmd_curve`), at least one row.
    share
        In ``(0, 1]``: the part of the largest fall of ``L_mmd`` over the curve (from its
        lowest weight to its minimum) that the chosen weight must reach; ``1`` (default) picks
        the minimum of ``L_mmd``.
    min_fall
        If ``L_mmd`` falls by less than this fraction of its value at the lowest weight, every
        weight aligns the batches about as much and the lowest weight is chosen. That happens
        when there is nothing to align (no batch effect, a single batch), and also when the
        model aligns the batches at every weight of its range (seen after long trainings:
        the ELBO does not ask for batch differences in the latent space, so nothing keeps
        them at the bottom of the range).

    Returns
    -------
    :class:`WeightChoice`.
    """
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise ValueError(f"`share` must be a number in (0, 1], got {share!r}.")
    missing = {"mmd_weight", "mmd_loss"} - set(curve.columns)
    if missing:
        raise ValueError(f"The curve lacks the column(s) {sorted(missing)}.")
    curve = curve.sort_values("mmd_weight")
    weights = curve["mmd_weight"].to_numpy(dtype=float)
    loss = curve["mmd_loss"].to_numpy(dtype=float)
    if len(weights) == 0 or not (np.isfinite(weights).all() and np.isfinite(loss).all()):
        raise ValueError("The curve must have at least one row and finite values.")
    rule = ("the weight where L_mmd is lowest" if share == 1 else
            f"smallest weight reaching {share:.0%} of the largest fall of L_mmd")
    start, lowest = loss[0], loss.min()
    if not start - lowest > min_fall * abs(start):
        return WeightChoice(float(weights[0]), rule,
                            f"L_mmd falls by less than {min_fall:.0%} over the range ({start:.4g}"
                            f" at weight {weights[0]:g}, {lowest:.4g} at least): every weight "
                            "aligns the batches about as much (nothing to align, or aligned "
                            "already at the lowest weight), so the lowest weight.")
    target = max(start - share * (start - lowest), lowest)  # (rounding, share = 1)
    after = int(np.flatnonzero(loss <= target)[0])
    weight = float(weights[after])
    if share < 1 and after > 0 and loss[after] < loss[after - 1]:  # interpolate in log w
        fraction = (loss[after - 1] - target) / (loss[after - 1] - loss[after])
        log_w = math.log(weights[after - 1]) + fraction * (
            math.log(weights[after]) - math.log(weights[after - 1]))
        weight = float(math.exp(log_w))
    if share == 1:
        reason = (f"L_mmd falls from {start:.4g} (weight {weights[0]:g}) to its lowest, "
                  f"{lowest:.4g}, at weight {weight:.3g}; more weight does not align the "
                  "batches further.")
    else:
        reason = (f"L_mmd falls from {start:.4g} (weight {weights[0]:g}) to at least "
                  f"{lowest:.4g} (weight {weights[int(loss.argmin())]:g}); weight {weight:.3g} "
                  f"reaches {share:.0%} of that fall ({target:.4g}).")
    return WeightChoice(weight, rule, reason, float(target))
