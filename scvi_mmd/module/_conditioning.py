"""Loss-conditional training of the MMD weight: one model for a whole range of weights.

Dosovitskiy & Djolonga, "You Only Train Once: Loss-Conditional Training of Deep Networks"
(ICLR 2020): instead of one training per loss weight, each minibatch draws a weight ``w``
from a distribution over the range, the networks are conditioned on ``w``, and the loss uses
the drawn ``w``. After training, the model gives the solution for any ``w`` of the range.

Here ``w`` is drawn log-uniformly in ``[low, high]`` (the knob spans decades), each minibatch's
loss is scaled by :meth:`WeightConditioning.loss_scale` so that no part of the range dominates
the optimiser, and the encoder and decoder are conditioned by FiLM (Perez et al., AAAI 2018,
as in the YOTO paper): the output ``h`` of each one's hidden layers becomes
``h * (1 + a(t)) + b(t)`` with ``t = log(w / low) / log(high / low)`` in ``[0, 1]`` and
``a, b`` a small MLP of ``t``, whose last layer starts at zero so that training starts from
the unconditioned networks. FiLM is
applied with forward hooks on scvi-tools' ``Encoder.encoder`` and ``DecoderSCVI.px_decoder``,
so the networks and their parameter names are scvi-tools' own.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn


def validate_weight_range(value) -> tuple[float, float]:
    """Return ``(low, high)`` from a two-number range, or raise a :class:`ValueError`.

    ``0 < low < high``, both finite (a log-uniform range cannot reach 0).
    """
    if isinstance(value, str) or not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(
            f"A weight range must be a pair (low, high) of numbers, got {value!r}."
        )
    low, high = value
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"A weight range needs finite numbers, got {value!r}.")
    if not 0 < low < high:
        raise ValueError(f"A weight range needs 0 < low < high, got {value!r}.")
    return float(low), float(high)


class FiLM(nn.Module):
    """Feature-wise affine modulation ``h * (1 + a(t)) + b(t)`` by a scalar code ``t``."""

    def __init__(self, n_features: int, n_hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, n_hidden), nn.ReLU(),
                                 nn.Linear(n_hidden, 2 * n_features))
        nn.init.zeros_(self.net[-1].weight)  # identity at initialisation
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale, shift = self.net(t.reshape(1, 1).to(h.dtype)).chunk(2, dim=-1)
        return h * (1.0 + scale) + shift


class WeightConditioning(nn.Module):
    """Draws MMD weights and conditions an :class:`~scvi.module.VAE`'s networks on them.

    Parameters
    ----------
    low, high
        The weight range, ``0 < low < high``.
    n_hidden
        Width of the VAE's hidden layers (``n_hidden``).
    """

    def __init__(self, low: float, high: float, n_hidden: int):
        super().__init__()
        self.low, self.high = float(low), float(high)
        self.encoder_film = FiLM(n_hidden)
        self.decoder_film = FiLM(n_hidden)
        # saved with the model: the weight used when none is asked for
        self.register_buffer("default_mmd_weight",
                             torch.tensor(self.middle_weight, dtype=torch.float64))
        self.current_weight: float = self.default_weight  # the weight the networks see now

    @property
    def middle_weight(self) -> float:
        """Geometric middle of the range."""
        return math.sqrt(self.low * self.high)

    @property
    def default_weight(self) -> float:
        """The weight used when none is asked for: the middle of the range unless set."""
        return float(self.default_mmd_weight)

    def set_default_weight(self, weight: float) -> None:
        """Make ``weight`` (in the trained range) the default, and the current weight."""
        self.default_mmd_weight.fill_(self.check(weight))
        self.current_weight = self.default_weight

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # models saved before the default was stored keep the middle of the range
        state_dict.setdefault(prefix + "default_mmd_weight", self.default_mmd_weight.clone())
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self.current_weight = self.default_weight

    def attach(self, vae: nn.Module) -> None:
        """Modulate the hidden layers of ``vae.z_encoder`` and ``vae.decoder`` (forward hooks)."""
        vae.z_encoder.encoder.register_forward_hook(
            lambda module, args, out: self.encoder_film(out, self.code(out))
        )
        vae.decoder.px_decoder.register_forward_hook(
            lambda module, args, out: self.decoder_film(out, self.code(out))
        )

    def loss_scale(self, weight) -> float:
        """Factor ``1 / (1 + w / w_mid)`` of a minibatch's loss, ``w_mid`` the range's middle.

        Drawn weights span decades, so an unscaled loss ``ELBO + w L_mmd`` would give the steps
        at the top of the range gradients ``10^4`` times those at the bottom: Adam's moment
        estimates would follow the top and the bottom would barely train (measured: a flat
        curve). Dividing by ``1 + w / w_mid`` leaves the bottom of the range as it is, makes
        the top ``w_mid (ELBO / w + L_mmd)``, and changes no weight's optimum (a positive
        factor per weight).
        """
        return 1.0 / (1.0 + float(weight) / self.middle_weight)

    def code(self, like: torch.Tensor) -> torch.Tensor:
        """``t = log(w / low) / log(high / low)`` of the current weight, on ``like``'s device."""
        t = math.log(self.current_weight / self.low) / math.log(self.high / self.low)
        return torch.tensor(t, dtype=like.dtype, device=like.device)

    def sample(self) -> float:
        """Draw a weight log-uniformly in ``[low, high]`` (torch's global generator)."""
        u = float(torch.rand(()))
        return math.exp(math.log(self.low) + u * math.log(self.high / self.low))

    def check(self, weight: float) -> float:
        """Return ``weight`` as a float if it lies in the trained range, else raise."""
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(
            weight
        ):
            raise ValueError(f"`mmd_weight` must be a finite number, got {weight!r}.")
        tolerance = 1e-9 * self.high
        if not self.low - tolerance <= weight <= self.high + tolerance:
            raise ValueError(
                f"`mmd_weight={weight!r}` is outside the range the model was trained on "
                f"[{self.low:g}, {self.high:g}]: a loss-conditional model cannot extrapolate."
            )
        return min(max(float(weight), self.low), self.high)

    @contextlib.contextmanager
    def at(self, weight: float):
        """Context in which the networks see ``weight`` (checked against the range)."""
        previous, self.current_weight = self.current_weight, self.check(weight)
        try:
            yield
        finally:
            self.current_weight = previous
