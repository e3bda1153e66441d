from ._conditioning import WeightConditioning
from ._guard import MutualNeighbourGuard
from ._mmdvae import MMDVAE
from ._penalty import MMDPenalty
from ._strength import StrengthController

__all__ = [
    "MMDPenalty",
    "MMDVAE",
    "MutualNeighbourGuard",
    "StrengthController",
    "WeightConditioning",
]
